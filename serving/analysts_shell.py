"""``crm sql`` (``make sql``): the analysts' interactive session, reading statements from standard
input as DuckDB's and psql's shells do, or one statement with ``-c``. On the embedded default it
reads the analysts' copy that ``serving.analysts`` publishes (views over its Parquet files, kept at
the manifest's version); on a server engine the warehouse itself, as the analysts' role."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import IO

import pandas as pd
import sqlalchemy as sa

from crm.settings import Settings
from crm.warehouse import Session, analysts_warehouse
from serving.analysts import SCHEMAS, AnalystsError, quoted, read_manifest


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
            connection.exec_driver_sql(f"drop view if exists {quoted(key)}")
        for key, entry in manifest["tables"].items():
            files = [p["file"] for _, p in sorted(entry.get("parts", {}).items())] or [
                entry.get("file") or entry["empty"]
            ]
            paths = ", ".join("'" + str(self.root / f).replace("'", "''") + "'" for f in files)
            connection.exec_driver_sql(f"create or replace view {quoted(key)} as select * from "
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
