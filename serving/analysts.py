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
SQL over the copy's tables. A file the manifest stops listing is deleted an hour later (a query
that began before the switch finishes on it).

``crm sql`` (:func:`shell`) opens a DuckDB database in memory whose views read the files the
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
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pandas as pd
import sqlalchemy as sa
import yaml

from crm.settings import DBT_PROJECT_DIR, Settings
from crm.warehouse import Session, analysts_warehouse, warehouse

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


def _quoted(key: str) -> str:
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
        return {"file": path, "rows": session.write_parquet(f"select * from {_quoted(key)}", root / path)}
    counts = {
        day.isoformat(): rows
        for day, rows in session.rows(
            f'select "{column}", count(*) from {_quoted(key)} where "{column}" is not null group by 1'
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
        statement = f'select * from {_quoted(key)} where "{column}" = :day'
        parts[day] = {
            "file": path,
            "rows": session.write_parquet(statement, root / path, {"day": dt.date.fromisoformat(day)}),
        }
    entry: dict[str, Any] = {"date_column": column, "parts": parts}
    if not parts:  # no rows yet: a file of its columns, so the table is there to query
        path = f"{key}/{token}.empty.parquet"
        session.write_parquet(f"select * from {_quoted(key)} where false", root / path)
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


# ---- crm sql --------------------------------------------------------------------------------


class _Copy:
    """The analysts' DuckDB session's views over the copy, kept at the manifest's version."""

    def __init__(self, root: Path, warn: IO[str]):
        self.root, self.warn, self.version, self.relations = root, warn, None, set()

    def refresh(self, session: Session) -> None:
        manifest = read_manifest(self.root)
        if manifest is None:
            raise AnalystsError(f"no analysts' copy in {self.root} yet: crm_daily publishes one after each run "
                                "(make demo)")  # fmt: skip
        if manifest.get("id", manifest["version"]) == self.version:
            return
        connection = session.connection
        if self.version is None and manifest.get("catalog"):
            # the views' SQL names the warehouse's catalog ("warehouse"."snapshots"....): the same here
            connection.exec_driver_sql(f"attach if not exists ':memory:' as \"{manifest['catalog']}\"")
            connection.exec_driver_sql(f'use "{manifest["catalog"]}"')
        for schema in SCHEMAS:
            connection.exec_driver_sql(f'create schema if not exists "{schema}"')
        listed = set(manifest["tables"]) | set(manifest["views"])
        for key in self.relations - listed:
            connection.exec_driver_sql(f"drop view if exists {_quoted(key)}")
        for key, entry in manifest["tables"].items():
            files = [p["file"] for _, p in sorted(entry.get("parts", {}).items())] or [
                entry.get("file") or entry["empty"]
            ]
            paths = ", ".join("'" + str(self.root / f).replace("'", "''") + "'" for f in files)
            connection.exec_driver_sql(f"create or replace view {_quoted(key)} as select * from "
                                       f"read_parquet([{paths}], union_by_name = true, hive_partitioning = false)")  # fmt: skip
        pending = dict(manifest["views"])
        while pending:  # a view over another view waits for it
            failed = {}
            for key, statement in pending.items():
                try:
                    connection.exec_driver_sql(statement.replace("CREATE VIEW", "CREATE OR REPLACE VIEW", 1))
                except sa.exc.DBAPIError as error:
                    failed[key] = (statement, error)
            if len(failed) == len(pending):
                for key, (_, error) in failed.items():
                    print(f"note: view {key} is not in the analysts' copy: {_first_line(error)}", file=self.warn)
                break
            pending = {key: statement for key, (statement, _) in failed.items()}
        connection.commit()
        self.version, self.relations = manifest.get("id", manifest["version"]), listed


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error)
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__


def _complete(buffer: str) -> tuple[list[str], str]:
    """(the complete statements of ``buffer``, what is left of it)."""
    import sqlparse

    done, rest = [], ""
    for statement in sqlparse.parse(buffer):
        text = str(statement)
        tokens = [t for t in statement.flatten() if not t.is_whitespace and t.ttype not in sqlparse.tokens.Comment]
        if tokens and tokens[-1].match(sqlparse.tokens.Punctuation, ";"):
            done.append(text.strip().rstrip(";").strip())
        else:
            rest += text
    return [s for s in done if s], rest if rest.strip() else ""


LIST_RELATIONS = (
    "select table_schema, table_name, table_type from information_schema.tables "
    "where table_schema in ('marts', 'snapshots', 'campaigns') order by 1, 2"
)


def shell(
    settings: Settings,
    command: str | None = None,
    as_csv: bool = False,
    max_rows: int = 1000,
    stdin: IO[str] | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    """``crm sql``: one statement (``command``), or statements read from ``stdin`` as they come,
    each ended by ``;`` (``\\d`` lists the tables, ``\\q`` quits). Rows as a table (at most
    ``max_rows`` shown), or as CSV with an empty line after each result. Exit 1 when a statement
    failed."""
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    wh = analysts_warehouse(settings)
    copy = _Copy(settings.analysts_dir, stderr) if wh.name == "duckdb" else None
    failed = False
    with wh.connect() as session:

        def run(statement: str) -> None:
            nonlocal failed
            try:
                if copy is not None:
                    copy.refresh(session)
                # as typed: no parameters, so a '%' is the statement's own (psycopg2 would read it as
                # one); a server streams the rows (a server-side cursor) rather than hand them all over
                options = {"no_parameters": True} | ({} if copy is not None else {"stream_results": True})
                connection = session.connection.execution_options(**options)
                _print(connection.exec_driver_sql(statement), as_csv, max_rows, stdout)
                session.connection.commit()  # no transaction held open between statements
            except sa.exc.StatementError as error:
                failed = True
                session.connection.rollback()
                print(f"error: {_first_line(error)}", file=stderr, flush=True)

        if command is not None:
            if command.strip() == "\\d":
                command = LIST_RELATIONS
            statements, rest = _complete(command + "\n;")  # the line break ends a trailing -- comment
            for statement in statements:
                run(statement)
            if rest:
                print(f"error: an unfinished statement: {rest.strip()[:200]}", file=stderr, flush=True)
            return 1 if failed or rest else 0
        interactive = stdin.isatty()
        if interactive:
            with contextlib.suppress(ImportError):
                import readline  # noqa: F401 - line editing and history for input()
            where = "the analysts' copy (DuckDB)" if copy else f"the {wh.name} warehouse as {settings.analyst.role}"
            print(f"crm sql: {where}. End a statement with ';'. \\d lists the tables, \\q quits.", file=stdout)
        buffer = ""
        while True:
            try:
                line = input("crm=> " if not buffer else "crm-> ") + "\n" if interactive else stdin.readline()
            except EOFError:
                break
            if not line:
                break
            if not buffer and line.strip() in ("\\q", "quit", "exit"):
                break
            if not buffer and line.strip() == "\\d":
                run(LIST_RELATIONS)
                continue
            statements, buffer = _complete(buffer + line)
            for statement in statements:
                run(statement)
        if buffer.strip():  # the input ended with no ";" after its last statement: it runs all the same
            for statement in _complete(buffer + "\n;")[0]:
                run(statement)
    return 1 if failed and not interactive else 0


def _print(result: sa.CursorResult, as_csv: bool, max_rows: int, out: IO[str]) -> None:
    if not result.returns_rows:
        print(f"OK ({result.rowcount} rows)" if result.rowcount >= 0 else "OK", file=out, flush=True)
        return
    columns = list(result.keys())
    if as_csv:
        header = True
        while rows := result.fetchmany(10_000):
            pd.DataFrame(rows, columns=columns).to_csv(out, index=False, header=header)
            header = False
        if header:
            pd.DataFrame([], columns=columns).to_csv(out, index=False)
        print("", file=out, flush=True)
        return
    rows = result.fetchmany(max_rows + 1)
    frame = pd.DataFrame(rows[:max_rows], columns=columns)
    print(frame.to_string(index=False) if len(frame) else "  ".join(columns), file=out)
    more = f" (the first {max_rows}: add a LIMIT, or --csv for all)" if len(rows) > max_rows else ""
    print(f"({len(frame)} row{'s' if len(frame) != 1 else ''}{more})", file=out, flush=True)
