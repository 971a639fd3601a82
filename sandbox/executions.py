"""The sandbox bank's campaign execution: the lists the platform hands it, one per business date.

A list handed for business date B is what the bank works on B + 1: it contacts the members marked
``contact`` (within each channel's daily capacity, in the list's order), tracks the others (the
experiment's control) without contacting them, and reports both in its campaign-response feed
(:mod:`sandbox.responses`). A list is stored as a Parquet file per date and replaced whole when the
same date is handed again (a rerun), so what the bank does stays a function of what it was handed.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from functools import lru_cache
from pathlib import Path

import pandas as pd

from sandbox.catalogue import SEEDS_DIR

COLUMNS = ["customer_id", "campaign_id", "channel", "contact"]


def channel_capacities(seeds_dir: Path = SEEDS_DIR) -> dict[str, int]:
    """How many customers each channel can contact a day (the contact policies the bank publishes)."""
    policies = pd.read_csv(seeds_dir / "contact_policies.csv")
    return dict(zip(policies["channel"], policies["daily_capacity"].astype(int), strict=True))


@lru_cache(maxsize=64)
def _read(path: str, mtime_ns: int, size: int) -> pd.DataFrame:
    return pd.read_parquet(path)


class Executions:
    """The lists handed to the bank, in ``directory``."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def _path(self, business_date: dt.date) -> Path:
        return self.directory / f"{business_date.isoformat()}.parquet"

    def save(self, business_date: dt.date, members: pd.DataFrame) -> None:
        """Store ``members`` as the list of ``business_date``, replacing one handed before, at once."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)  # it names customers
        frame = members[COLUMNS].astype({"customer_id": "int64", "contact": "bool"}).reset_index(drop=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        os.close(fd)
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, self._path(business_date))

    def worked_on(self, day: dt.date, capacities: dict[str, int]) -> pd.DataFrame | None:
        """The members the bank works on ``day`` (the list of the day before): the control (``contact``
        false), and those to contact that their channel's capacity reaches (the rest are dropped);
        None when no list was handed."""
        path = self._path(day - dt.timedelta(days=1))
        try:
            stat = path.stat()
            members = _read(str(path), stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            return None
        contacted = members["contact"].to_numpy()
        # each contacted member's place in its channel's queue, in the list's order
        position = members[contacted].groupby("channel").cumcount().reindex(members.index).to_numpy()
        capacity = members["channel"].map(capacities).fillna(len(members)).to_numpy()
        return members[~contacted | (position < capacity)].reset_index(drop=True)
