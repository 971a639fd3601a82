"""The analysts' copy of the DuckDB warehouse and ``crm sql``, on a real DuckDB file.

What an analyst notices: ``make sql`` works while a run holds the warehouse file; it shows what
analysts may read (marts, snapshots, campaigns) and nothing of raw or staging; a new date appears
whole or not at all; a date the warehouse rewrote shows its new rows; a file nobody lists any more
is cleaned up; and one command or a session on standard input answers as DuckDB's shell would.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
import subprocess
import sys

import pytest

from crm.settings import REPO_ROOT, Settings
from crm.warehouse import warehouse
from serving import analysts, analysts_shell

D = dt.date(2026, 11, 26)


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    monkeypatch.setenv("CRM_HOME", str(tmp_path))
    monkeypatch.delenv("CRM_DBT_TARGET", raising=False)
    s = Settings(home=tmp_path)
    with warehouse(s).begin() as session:
        for schema in ("raw", "marts", "snapshots", "campaigns"):
            session.execute(f"create schema {schema}")
        session.execute("create table raw.customers (customer_id integer, full_name varchar)")
        session.execute("insert into raw.customers values (1, 'Ana Torres')")
        session.execute("create table marts.customer_features (customer_id integer, as_of_date date, balance double)")
        session.execute("create table marts.customer_campaign_assignments (customer_id integer, business_date date, "
                        "campaign_id varchar)")  # fmt: skip
        session.execute(
            "create table marts.fct_campaign_contacts (contact_id integer, contact_date date, accepted boolean)"
        )
        session.execute("create table snapshots.snp_core_banking__customers (customer_id integer, updated_on date, "
                        "segment varchar)")  # fmt: skip
        session.execute("create table campaigns.campaigns (campaign_id varchar, name varchar)")
        session.execute("insert into campaigns.campaigns values ('CMP-A', 'Upgrade')")
        session.execute("create view marts.dim_customers as select customer_id, segment, updated_on as valid_from "
                        "from snapshots.snp_core_banking__customers")  # fmt: skip
    _day(s, D, customers=3)
    return s


def _day(s: Settings, day: dt.date, customers: int) -> None:
    """What a run of ``day`` writes: its features, its assignment, a contact and the history."""
    with warehouse(s).begin() as session:
        for table, column in (("customer_features", "as_of_date"), ("customer_campaign_assignments", "business_date")):
            session.execute(f"delete from marts.{table} where {column} = :d", {"d": day})
        session.execute("delete from marts.fct_campaign_contacts where contact_date = :d", {"d": day})
        for c in range(customers):
            session.execute(
                "insert into marts.customer_features values (:c, :d, :b)", {"c": c, "d": day, "b": 10.0 * c}
            )
            session.execute(
                "insert into marts.customer_campaign_assignments values (:c, :d, 'CMP-A')", {"c": c, "d": day}
            )
            session.execute("insert into snapshots.snp_core_banking__customers values (:c, :d, 'MASS')",
                            {"c": c, "d": day})  # fmt: skip
        session.execute("insert into marts.fct_campaign_contacts values (:d_id, :d, false)",
                        {"d_id": day.toordinal(), "d": day})  # fmt: skip


def _sql(s: Settings, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "CRM_HOME": str(s.home)}
    return subprocess.run([sys.executable, "-m", "entrypoints.cli", "sql", *args], input=stdin, env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


def test_an_analyst_queries_while_a_run_holds_the_warehouse_and_sees_no_personal_data(settings):
    done = analysts.publish(settings, D)
    assert done["copied"] and done["files_written"] > 0
    # a run's task holds the DuckDB file for writing, as the run's tasks do one after another
    with warehouse(settings).begin() as writing:
        writing.execute("insert into marts.customer_features values (99, :d, 1.0)", {"d": D + dt.timedelta(days=1)})
        counted = _sql(
            settings, "--csv", "-c", "select as_of_date, count(*) as n from marts.customer_features group by 1"
        )
        listed = _sql(settings, "-c", "select table_schema, table_name from information_schema.tables order by 1, 2")
        raw = _sql(settings, "-c", "select * from raw.customers")
        view = _sql(settings, "--csv", "-c", "select count(*) as n from marts.dim_customers")
    assert counted.returncode == 0, counted.stderr
    assert counted.stdout == f"as_of_date,n\n{D},3\n\n"  # the copy: the date the run has not published is not there
    assert {line.split()[0] for line in listed.stdout.splitlines()[1:-1]} == {"campaigns", "marts", "snapshots"}
    assert "raw" not in listed.stdout and "Ana" not in listed.stdout
    assert raw.returncode == 1 and 'Table with name "raw.customers" does not exist' in raw.stderr
    assert view.stdout == "n\n3\n\n"  # a view of the warehouse reads the copy's tables


def test_a_date_arrives_whole_from_its_own_run_and_a_rerun_replaces_it(settings, monkeypatch):
    monkeypatch.setattr(analysts, "RETIRED_FILES_KEPT_S", 0)
    analysts.publish(settings, D)
    first = json.loads((settings.analysts_dir / "manifest.json").read_text())
    # D+1's run is half-way (its features written, not yet its assignment) when a rerun of D, with
    # fewer rows, publishes: the copy takes D's new rows and nothing of D+1
    nxt = D + dt.timedelta(days=1)
    _day(settings, D, customers=2)
    with warehouse(settings).begin() as session:
        session.execute("insert into marts.customer_features values (7, :d, 1.0)", {"d": nxt})
        session.execute(
            "insert into marts.fct_campaign_contacts values (1, :d, true)", {"d": D - dt.timedelta(days=400)}
        )
    analysts.publish(settings, D)
    manifest = json.loads((settings.analysts_dir / "manifest.json").read_text())
    features = manifest["tables"]["marts.customer_features"]["parts"]
    assert {day: p["rows"] for day, p in features.items()} == {str(D): 2}
    assert features[str(D)]["file"] != first["tables"]["marts.customer_features"]["parts"][str(D)]["file"]
    # a contact day older than the copy's (a backfill reaching further back) is taken: facts of its own day
    assert str(D - dt.timedelta(days=400)) in manifest["tables"]["marts.fct_campaign_contacts"]["parts"]
    # what the first manifest listed and the second does not is gone (kept 0 s here, six hours in a run)
    gone = analysts._files(first) - analysts._files(manifest)
    assert gone and not any((settings.analysts_dir / f).exists() for f in gone)

    # D+1's run completes and publishes: D+1 arrives in every mart at once, D stays as it was
    _day(settings, nxt, customers=4)
    analysts.publish(settings, nxt)
    manifest = json.loads((settings.analysts_dir / "manifest.json").read_text())
    assert manifest["tables"]["marts.customer_features"]["parts"][str(D)] == features[str(D)]
    answer = _sql(settings, "--csv", "-c", "select business_date, count(*) as n from marts.customer_campaign_assignments "
                  "group by 1 order by 1")  # fmt: skip
    assert answer.stdout == f"business_date,n\n{D},2\n{nxt},4\n\n"
    # a date changed by hand (no run of it) reaches the copy with --all, as the README says
    with warehouse(settings).begin() as session:
        session.execute("update marts.customer_features set balance = 99 where as_of_date = :d", {"d": D})
    analysts.publish(settings, nxt)
    assert "99.0" not in _sql(settings, "--csv", "-c", "select balance from marts.customer_features").stdout
    analysts.publish(settings, nxt, everything=True)
    assert "99.0" in _sql(settings, "--csv", "-c", "select balance from marts.customer_features").stdout


def test_a_session_reads_statements_as_they_come_and_goes_on_after_an_error(settings):
    analysts.publish(settings, D)
    out, err = io.StringIO(), io.StringIO()
    statements = (
        "select count(*) as n\n  from marts.customer_features;\nselect nope;\n\\d\nselect 1 as a; select 2 as b"
    )
    code = analysts_shell.shell(settings, stdin=io.StringIO(statements), stdout=out, stderr=err)
    assert code == 1  # a statement failed
    text = out.getvalue()
    assert text.startswith(" n\n 3\n(1 row)\n")
    assert re.search(r"marts +customer_features +VIEW", text) and re.search(r"campaigns +campaigns +VIEW", text)  # \d
    assert text.endswith(" a\n 1\n(1 row)\n b\n 2\n(1 row)\n")
    assert err.getvalue().startswith('error: Binder Error: Referenced column "nope" was not found')
    # one statement with -c: a trailing comment does not swallow it
    commented = _sql(settings, "--csv", "-c", "select count(*) as n from marts.customer_features -- D's rows")
    assert (commented.returncode, commented.stdout) == (0, "n\n3\n\n")


def test_without_a_copy_crm_sql_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.delenv("CRM_DBT_TARGET", raising=False)
    done = _sql(Settings(home=tmp_path), "-c", "select 1")
    assert done.returncode == 1
    assert "no analysts' copy in" in done.stderr and "make demo" in done.stderr
