"""Redis key layout of the served snapshots (shared by the loader and the read API).

``<prefix>:current`` names the live snapshot; every other key belongs to one snapshot
``<prefix>:snap:<id>:...``. Keys carry no hash tag, so a snapshot spreads over a Redis Cluster;
the switch is a single-key write, atomic on any deployment.
"""

from __future__ import annotations


class Keys:
    def __init__(self, prefix: str):
        self.prefix = prefix

    @property
    def current(self) -> str:
        return f"{self.prefix}:current"

    def snapshot_pattern(self, snapshot_id: str) -> str:
        return f"{self.prefix}:snap:{snapshot_id}:*"

    def meta(self, snapshot_id: str) -> str:
        return f"{self.prefix}:snap:{snapshot_id}:meta"

    def campaigns(self, snapshot_id: str) -> str:
        return f"{self.prefix}:snap:{snapshot_id}:campaigns"

    def customer_bucket(self, snapshot_id: str, bucket: int) -> str:
        """The hash holding the offers of customers ``bucket * BUCKET ..`` (see serving.codec)."""
        return f"{self.prefix}:snap:{snapshot_id}:cb:{bucket}"

    def segment(self, snapshot_id: str, campaign_id: str, channel: str) -> str:
        return f"{self.prefix}:snap:{snapshot_id}:seg:{campaign_id}:{channel}"

    def performance(self, snapshot_id: str) -> str:
        """Each campaign's results over the 30 days to the business date (the console's chart)."""
        return f"{self.prefix}:snap:{snapshot_id}:performance"

    def profile_bucket(self, snapshot_id: str, bucket: int) -> str:
        """The hash holding the masked profiles of customers ``bucket * BUCKET ..`` (serving.codec)."""
        return f"{self.prefix}:snap:{snapshot_id}:pb:{bucket}"
