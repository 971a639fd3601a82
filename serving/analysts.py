"""What analysts query, and ``crm sql``: whole dates only, and never in the run's way.

On DuckDB the run's tasks hold the warehouse file while they write, and DuckDB lets no other
process open a file that one holds (read-only included). So, once a date's marts are built, scored
and reported, :func:`publish` copies what analysts read (the schemas ``marts``, ``snapshots`` and
``campaigns``; never ``raw`` or ``staging``, which hold clear personal data) into Parquet files under
``<CRM_HOME>/analysts/`` and lists them in ``manifest.json``, which it replaces in one rename: a
date appears in every table at once with all its rows, or not at all, and a rerun's rows replace
the old ones the same way. A table with a date column (:data:`DATE_COLUMNS`) is kept as one file
per date, and a run writes only the dates it changed: its own, the window a mart rewrites each run
(the contacts' ``contact_refresh_days``), and any date whose rows the warehouse counts differently
from the manifest (a backfill's older days); other tables are written whole, views kept as their
SQL over the copy's tables. A file the manifest stops listing is deleted six hours later (a query
that began before the switch finishes on it).

``crm sql`` (``serving.analysts_shell``) opens a DuckDB database in memory whose views read the files the
manifest lists, looked at again before each statement: the analyst sees each new date as soon as
it is whole, and holds no lock. On a server engine (PostgreSQL, Azure SQL) there is nothing to
copy: each mart's date is written in one transaction, so a reader sees it whole, and ``crm sql``
connects as the analysts' role, to which dbt grants reads of those three schemas only (the
project's ``grant_to_analysts``). A reader's locks can still make dbt's swap of a whole table wait
there: ``crm sql`` commits after each statement, and the role's statements and idle transactions
are bounded by timeouts (the embedded server's; the deployment's to set on a bank's server).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from crm.settings import DBT_PROJECT_DIR, Settings
from crm.warehouse import Session, warehouse

SCHEMAS = ("marts", "snapshots", "campaigns")  # what analysts read; raw and staging hold clear personal data

# marts keyed by a run's business date: a run writes its own date there (and only a run does), at
# several stages, so the copy takes a date from its own run's publish and never from another's (a
# backfill's date half-built beside it) unless told to take everything (`crm publish-analysts --all`)
BUSINESS_DATED = {
    "marts.customer_features": "as_of_date",
    "marts.customer_360": "as_of_date",
    "marts.campaign_eligibility": "as_of_date",
    "marts.campaign_exclusions": "as_of_date",
    "marts.customer_campaign_assignments": "business_date",
}
# facts dated by their own day, each day written whole by one dbt model: a run replaces its date
# (and a refresh window) and adds the days before the mart's first; the copy takes those, up to the
# run's date, and any day whose rows the warehouse counts differently from the manifest
EVENT_DATED = {"marts.fct_transactions": "booking_date", "marts.fct_campaign_contacts": "contact_date"}
DATE_COLUMNS = {**BUSINESS_DATED, **EVENT_DATED}
# marts that rewrite more than the run's own date: how many days back (a dbt var of the project)
REFRESH_VARS = {"marts.fct_campaign_contacts": "contact_refresh_days"}
# a file the manifest stopped listing outlives the statements already reading it (a long export)
RETIRED_FILES_KEPT_S = 6 * 3600
MANIFEST = "manifest.json"


class AnalystsError(RuntimeError):
    """The analysts' copy is missing or unreadable: the message says what to do."""


def quoted(key: str) -> str:
    schema, name = key.split(".", 1)
    return f'"{schema}"."{name}"'


def _refresh_days(key: str) -> int:
    var = REFRESH_VARS.get(key)
    if var is None:
        return 1
    project = yaml.safe_load((DBT_PROJECT_DIR / "dbt_project.yml").read_text())
    return int(project["vars"][var])


def read_manifest(root: Path) -> dict | None:
    path = root / MANIFEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise AnalystsError(f"the analysts' copy's manifest {path} is unreadable ({error}): rerun the day's "
                            "publish_analysts task, or crm publish-analysts") from None  # fmt: skip


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One publisher at a time (runs of several dates may finish together on a server's pool)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "manifest.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _copy_table(
    session: Session, root: Path, key: str, token: str, before: dict, business_date: dt.date, everything: bool
) -> dict:
    """One table's entry of the new manifest, writing the files it needs."""
    column = DATE_COLUMNS.get(key)
    if column is None:
        path = f"{key}/{token}.parquet"
        return {"file": path, "rows": session.write_parquet(f"select * from {quoted(key)}", root / path)}
    counts = {
        day.isoformat(): rows
        for day, rows in session.rows(
            f'select "{column}", count(*) from {quoted(key)} where "{column}" is not null group by 1'
        )
    }
    own = {(business_date - dt.timedelta(days=n)).isoformat() for n in range(_refresh_days(key))}
    held = before.get("parts", {}) if before.get("date_column") == column else {}
    parts = {}
    for day, rows in sorted(counts.items()):
        old = held.get(day)
        if everything or day in own:
            write = True
        elif key in BUSINESS_DATED or day > business_date.isoformat():
            write = False  # another run's date: its own publish brings it whole
        else:  # an event-dated day before the run's: new, or changed since the copy took it
            write = old is None or old["rows"] != rows
        if not write:
            if old is not None and (root / old["file"]).exists():
                parts[day] = old
            continue
        path = f"{key}/{column}={day}/{token}.parquet"
        statement = f'select * from {quoted(key)} where "{column}" = :day'
        parts[day] = {
            "file": path,
            "rows": session.write_parquet(statement, root / path, {"day": dt.date.fromisoformat(day)}),
        }
    entry: dict[str, Any] = {"date_column": column, "parts": parts}
    if not parts:  # no rows yet: a file of its columns, so the table is there to query
        path = f"{key}/{token}.empty.parquet"
        session.write_parquet(f"select * from {quoted(key)} where false", root / path)
        entry["empty"] = path
    return entry


def _listed(manifest: dict) -> dict[str, int]:
    """Every file a manifest lists, with its rows."""
    out = {}
    for entry in manifest.get("tables", {}).values():
        out.update({p["file"]: p["rows"] for p in entry.get("parts", {}).values()})
        if "file" in entry:
            out[entry["file"]] = entry["rows"]
        if "empty" in entry:
            out[entry["empty"]] = 0
    return out


def _files(manifest: dict) -> set[str]:
    return set(_listed(manifest))


def _write_manifest(root: Path, manifest: dict) -> None:
    staged = root / f".{MANIFEST}.{uuid.uuid4().hex}"
    staged.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(staged, root / MANIFEST)  # atomic: a reader sees the old manifest or the new


def _sweep(root: Path, manifest: dict, now: float) -> int:
    """Delete the files no manifest lists any more once they have been retired long enough (and
    the leftovers of a publish that died); returns how many."""
    listed, retired, removed = _files(manifest), manifest.setdefault("retired", {}), 0
    for path in root.glob("*/**/*.parquet"):
        name = str(path.relative_to(root))
        if name in listed:
            continue
        since = retired.setdefault(name, now)
        if now - since >= RETIRED_FILES_KEPT_S:
            path.unlink(missing_ok=True)
            retired.pop(name, None)
            removed += 1
    for name in [n for n in retired if not (root / n).exists()]:
        retired.pop(name)
    return removed


def publish(settings: Settings, business_date: dt.date, everything: bool = False) -> dict:
    """Copy the warehouse's ``marts``, ``snapshots`` and ``campaigns`` for the analysts (DuckDB
    only: see the module's docstring), as the run of ``business_date`` completes them; with
    ``everything``, every date the warehouse holds (after a hand-run dbt build or a full refresh,
    when no run is writing); what was written."""
    wh = warehouse(settings)
    if wh.name != "duckdb":
        return {"copied": False, "engine": wh.name,
                "analysts": f"read the warehouse as the role {settings.analyst.role} (crm sql)"}  # fmt: skip
    root = settings.analysts_dir
    token = f"{business_date.isoformat()}-{uuid.uuid4().hex[:10]}"
    with _locked(root):
        old = read_manifest(root) or {}
        tables, views = {}, {}
        with wh.connect() as session:
            catalog = session.scalar("select current_database()")
            relations = session.rows(
                "select table_schema, table_name, table_type from information_schema.tables "
                "where table_catalog = current_database() and table_schema in ('marts', 'snapshots', 'campaigns') "
                "order by 1, 2"
            )
            for schema, name, kind in relations:
                key = f"{schema}.{name}"
                if kind == "VIEW":
                    views[key] = session.scalar(
                        "select sql from duckdb_views() where database_name = current_database() "
                        "and schema_name = :schema and view_name = :name",
                        {"schema": schema, "name": name},
                    )
                    continue
                before = old.get("tables", {}).get(key, {})
                tables[key] = _copy_table(session, root, key, token, before, business_date, everything)
        before_files = _files(old)
        manifest = {
            "id": uuid.uuid4().hex,
            "version": int(old.get("version", 0)) + 1,
            "published_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "business_date": business_date.isoformat(),
            "catalog": catalog,
            "tables": tables,
            "views": views,
            "retired": dict(old.get("retired", {})),
        }
        written = {f: rows for f, rows in _listed(manifest).items() if f not in before_files}
        _write_manifest(root, manifest)
        if _sweep(root, manifest, time.time()):
            _write_manifest(root, manifest)
    return {
        "copied": True,
        "version": manifest["version"],
        "tables": len(tables),
        "views": len(views),
        "files_written": len(written),
        "rows_written": sum(written.values()),
    }
