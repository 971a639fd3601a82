"""The read API's audit log: who (the person or the integration) looked up which customer, when."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path

import orjson

from serving.auth import Principal


class AuditLog:
    """Who looked up which customer, when: one JSON line per look-up, and no other personal data.

    Lines are buffered and appended to the file every ``interval`` seconds (and at shutdown), so a
    look-up never waits on the disk.
    """

    def __init__(self, path: Path, interval: float = 0.2):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.interval = interval
        self.entries: list[tuple[int, Principal, int]] = []

    def record(self, who: Principal, customer_id: int) -> None:
        self.entries.append((int(time.time()), who, customer_id))  # formatted at flush

    def flush(self) -> None:
        if not self.entries:
            return
        entries, self.entries = self.entries, []
        stamps: dict[int, str] = {}
        lines = []
        for at, who, customer_id in entries:
            if at not in stamps:
                stamps[at] = dt.datetime.fromtimestamp(at, dt.UTC).isoformat()
            entry = {"at": stamps[at], "kind": who.kind, "who": who.subject, "role": who.role,
                     "credential": who.credential, "customer_id": customer_id}  # fmt: skip
            lines.append(orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE))
        with open(self.path, "ab") as fh:
            fh.write(b"".join(lines))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.flush()
