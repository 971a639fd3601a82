"""The sandbox bank's campaign execution: the lists the platform hands it, one per business date.

A list handed for business date B is what the bank works on B + 1: it contacts the members marked
``contact`` (within each channel's daily capacity, in the list's order), tracks the others (the
experiment's control) without contacting them, and reports both in its campaign-response feed
(:mod:`sandbox.responses`). A list is stored as a Parquet file per date and replaced whole when the
same date is handed again (a rerun), so what the bank does stays a function of what it was handed.

What the bank has worked is history: once the feed has served a day (``served_until``, kept beside
the lists), the list that day was worked on can no longer change. Handing it again is accepted when
it is the same list (a rerun) and refused otherwise, so two runs of neighbouring dates (a backfill
beside the daily run) can never see one day's contacts two ways.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import threading
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
def _worked(path: str, mtime_ns: int, size: int, capacities: tuple[tuple[str, int], ...]) -> pd.DataFrame:
    """The members of the list in ``path`` the bank works (``Executions.worked_on``): once per version
    of the file, not once per block of customers the feed serves."""
    members = pd.read_parquet(path)
    contacted = members["contact"].to_numpy()
    # each contacted member's place in its channel's queue, in the list's order
    position = members[contacted].groupby("channel").cumcount().reindex(members.index).to_numpy()
    capacity = members["channel"].map(dict(capacities)).fillna(len(members)).to_numpy()
    return members[~contacted | (position < capacity)].reset_index(drop=True)


class Executions:
    """The lists handed to the bank, in ``directory``."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._lock = threading.Lock()

    def _path(self, business_date: dt.date) -> Path:
        return self.directory / f"{business_date.isoformat()}.parquet"

    @property
    def _served_file(self) -> Path:
        return self.directory / "served_until"

    def served_until(self) -> dt.date | None:
        """The last day the feed has served (its lists are history), None before the first."""
        try:
            return dt.date.fromisoformat(self._served_file.read_text().strip())
        except FileNotFoundError:
            return None

    def _write(self, path: Path, write) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)  # it names customers
        fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        os.close(fd)
        write(tmp)
        os.replace(tmp, path)

    def save(self, business_date: dt.date, members: pd.DataFrame) -> bool:
        """Store ``members`` as the list of ``business_date``, replacing one handed before, at once;
        False (nothing changed) when the bank already worked its day on another list."""
        frame = members[COLUMNS].astype({"customer_id": "int64", "contact": "bool"}).reset_index(drop=True)
        with self._lock:
            served = self.served_until()
            if served is not None and business_date + dt.timedelta(days=1) <= served:
                path = self._path(business_date)
                held = pd.read_parquet(path) if path.exists() else None
                return held is not None and held.equals(frame)
            self._write(self._path(business_date), lambda tmp: frame.to_parquet(tmp, index=False))
            return True

    def _serve(self, day: dt.date) -> None:
        """Record that the feed served ``day``: from now on its list is history."""
        with self._lock:
            served = self.served_until()
            if served is None or day > served:
                self._write(self._served_file, lambda tmp: Path(tmp).write_text(day.isoformat()))

    def worked_on(self, day: dt.date, capacities: dict[str, int]) -> pd.DataFrame | None:
        """The members the bank works on ``day`` (the list of the day before): the control (``contact``
        false), and those to contact that their channel's capacity reaches (the rest are dropped);
        None when no list was handed."""
        self._serve(day)
        path = self._path(day - dt.timedelta(days=1))
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        return _worked(str(path), stat.st_mtime_ns, stat.st_size, tuple(sorted(capacities.items())))
