"""A DAG's backfills in Airflow's metadata database: the open ones, and discarding the remains of a
creation that failed half-way. Read and written through Airflow's own models, in a subprocess run
with the project's Airflow environment (the metadata database is Airflow's, not ours)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

from crm.airflow_env import airflow_env
from crm.settings import Settings

OPEN_BACKFILLS = """
import sys
from sqlalchemy import func, select
from airflow.models.backfill import Backfill
from airflow.utils.session import create_session
with create_session() as s:
    print(s.scalar(select(func.count()).select_from(Backfill).where(
        Backfill.dag_id == sys.argv[1], Backfill.completed_at.is_(None))))
"""

# Airflow's own clean-up of a partly created backfill. Airflow commits the backfill's row before
# its runs, and calls this after a lock error while creating them; but the clean-up swallows its
# own errors (under the same lock it can fail), and a lock on the session's final commit is outside
# that handler: the row stays open, and every later creation is refused as AlreadyRunningBackfill
# (seen in CI on SQLite). It deletes the backfill, its rows and its runs (a date's earlier run it had
# taken over included: the next creation runs that date again). What is left is counted.
DISCARD_BACKFILLS = """
import datetime as dt, sys
from sqlalchemy import func, select
from airflow.models.backfill import Backfill, _cleanup_partial_backfill
from airflow.utils.session import create_session
dag_id, since, first, last = sys.argv[1], *(dt.datetime.fromisoformat(a) for a in sys.argv[2:])
ours = (Backfill.dag_id == dag_id, Backfill.completed_at.is_(None), Backfill.created_at >= since,
        Backfill.from_date == first, Backfill.to_date == last)
with create_session() as s:
    found = s.scalars(select(Backfill).where(*ours)).all()
    for backfill in found:
        _cleanup_partial_backfill(backfill, s)
with create_session() as s:
    print(len(found), s.scalar(select(func.count()).select_from(Backfill).where(*ours)))
"""


def _run(script: str, *args: str, settings: Settings) -> list[int]:
    done = subprocess.run([sys.executable, "-c", script, *args], env=airflow_env(settings),
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"reading Airflow's backfills failed: {done.stderr[-1000:]}")
    return [int(n) for n in done.stdout.strip().splitlines()[-1].split()]


def open_backfills(dag_id: str, settings: Settings) -> int:
    """``dag_id``'s backfills the scheduler has not marked completed (it does so a loop after their
    last run ends; Airflow allows one open backfill per DAG), from Airflow's metadata database."""
    return _run(OPEN_BACKFILLS, dag_id, settings=settings)[0]


def discard_backfills(dag_id: str, since: dt.datetime, first: dt.datetime, last: dt.datetime,
                      settings: Settings, attempts: int = 5) -> int:  # fmt: skip
    """Discard ``dag_id``'s open backfills of exactly ``first``..``last`` created since ``since``
    (what a creation that failed half-way left: the caller's own, never a backfill made before it
    started), with their runs; tried again while the database keeps one. Returns how many were found."""
    import time

    args = [dag_id, *(t.isoformat() for t in (since, first, last))]
    found, left = 0, 1
    for _attempt in range(attempts):
        try:  # the database may still be locked: tried again
            counted, left = _run(DISCARD_BACKFILLS, *args, settings=settings)
        except RuntimeError:
            counted = 0
        found = max(found, counted)
        if not left:
            break
        time.sleep(2)
    return found
