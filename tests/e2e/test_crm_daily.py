"""crm_daily end to end through Airflow on a small sandbox bank, then read through the API.

Real parts only: the sandbox over HTTP, DuckDB and dbt, the MLflow store, a Redis server, Airflow
running the DAG (``airflow dags test``, the same command as ``make demo``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import redis
from fastapi.testclient import TestClient

from crm.settings import REPO_ROOT

D = dt.date(2026, 11, 26)
CUSTOMERS = 400

pytestmark = pytest.mark.e2e


def _demo(home, date: dt.date, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "CRM_HOME": str(home), **(extra_env or {})}
    cmd = [
        sys.executable,
        "-m",
        "entrypoints.cli",
        "demo",
        "--date",
        date.isoformat(),
        "--customers",
        str(CUSTOMERS),
        "--seed",
        "11",
    ]
    return subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900, check=False)


# what the analyst asks every half second: each date's rows of the marts a run writes at different stages
ANALYST_MARTS = (("customer_features", "as_of_date"), ("campaign_eligibility", "as_of_date"),
                 ("customer_campaign_assignments", "business_date"), ("customer_360", "as_of_date"))  # fmt: skip
ANALYST_QUERY = (
    " union all ".join(
        f"select '{mart}' as mart, {col} as day, count(*) as n from marts.{mart} group by {col}"
        for mart, col in ANALYST_MARTS
    )
    + ";\n"
)


class AnalystSession:
    """``make sql`` as an analyst keeps it open (``crm sql --csv`` reading standard input), asking
    each date's rows of :data:`ANALYST_MARTS` every half second until stopped: what it saw each time
    (``{(mart, day): rows}``) and what it printed as errors."""

    def __init__(self, home, extra_env: dict | None = None):
        import threading

        env = {**os.environ, "CRM_HOME": str(home), **(extra_env or {})}
        self.proc = subprocess.Popen([sys.executable, "-m", "entrypoints.cli", "sql", "--csv"], env=env, cwd=REPO_ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     bufsize=1)  # fmt: skip
        self.seen: list[dict[tuple[str, str], int]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._ask, daemon=True)

    def ask(self) -> dict[tuple[str, str], int]:
        self.proc.stdin.write(ANALYST_QUERY)
        self.proc.stdin.flush()
        header, seen = self.proc.stdout.readline(), {}
        assert header.strip() == "mart,day,n", header
        while line := self.proc.stdout.readline().strip():
            mart, day, n = line.split(",")
            seen[(mart, day)] = int(n)
        return seen

    def _ask(self) -> None:
        while not self.stop.is_set():
            self.seen.append(self.ask())
            self.stop.wait(0.5)

    def __enter__(self) -> AnalystSession:
        self.seen.append(self.ask())
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        self.seen.append(self.ask())
        self.proc.stdin.write("\\q\n")
        self.proc.stdin.close()
        self.errors = self.proc.stderr.read()
        self.proc.wait(timeout=60)

    def assert_saw_whole_dates_only(self, new_day: dt.date) -> None:
        """Every date the analyst saw had, each time, the rows it has at the end (never a partial
        date), the session never failed, and the new date arrived while it watched."""
        final = self.seen[-1]
        assert self.errors == "" and self.proc.returncode == 0, self.errors[-2000:]
        assert len(self.seen) >= 10, len(self.seen)
        for seen in self.seen:
            assert {key: final.get(key) for key in seen} == seen, (seen, final)
        assert all((mart, new_day.isoformat()) in final for mart, _ in ANALYST_MARTS), final
        assert not any(day == new_day.isoformat() for _, day in self.seen[0]), self.seen[0]

    def assert_the_date_arrived_in_every_mart_at_once(self, new_day: dt.date) -> None:
        """The published copy (DuckDB): each time, the new date was in all the marts asked about, or in none."""
        for seen in self.seen:
            held = [(mart, new_day.isoformat()) in seen for mart, _ in ANALYST_MARTS]
            assert all(held) or not any(held), seen


@pytest.fixture(scope="module")
def e2e_home(crm_home):
    home = crm_home / "e2e"
    home.mkdir()
    yield home
    from crm.services import stop_redis, stop_sandbox
    from crm.settings import Settings

    stop_sandbox(Settings(home=home))
    stop_redis(Settings(home=home))


@pytest.fixture(scope="module")
def first_run(e2e_home):
    done = _demo(e2e_home, D)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _settings(home, monkeypatch):
    monkeypatch.setenv("CRM_HOME", str(home))
    from crm.settings import get_settings

    return get_settings()


def _assignments(settings):
    from crm.warehouse import warehouse

    return warehouse(settings).frame(
        "select * from marts.customer_campaign_assignments where business_date = :d order by customer_id, rank",
        {"d": D},
    )


def _served(settings, customer_ids, role="sales"):
    from crm.services import ensure_redis
    from serving.api import create_app

    keys = json.loads(settings.demo_api_keys_path.read_text())
    with TestClient(create_app(ensure_redis(settings), settings)) as client:
        return {
            c: client.get(f"/v1/customers/{c}/offers", headers={"X-API-Key": keys[role]}).json() for c in customer_ids
        }, client.get("/v1/snapshot", headers={"X-API-Key": keys["marketing"]}).json()


def test_the_run_reports_every_stage_and_leaves_nothing_running(first_run, e2e_home, monkeypatch):
    out = first_run.stdout
    assert f"crm_daily succeeded for business date {D}" in out
    assert "model: crm-campaign-propensity version 1 (alias champion)" in out
    assert "cache snapshot: 20261126-" in out
    settings = _settings(e2e_home, monkeypatch)
    keys = json.loads(settings.demo_api_keys_path.read_text())
    assert set(keys) == {"marketing", "sales"}  # integration keys; people sign in with bearer tokens
    from crm.services import running_services

    assert running_services(settings) == set()


ASSET_EVENTS = """
import json
from sqlalchemy import select
from airflow.models.asset import AssetEvent
from airflow.utils.session import create_session
with create_session() as session:
    print(json.dumps([[e.asset.name, e.extra] for e in session.scalars(select(AssetEvent).order_by(AssetEvent.id))]))
"""


def test_the_run_tells_airflow_what_it_produced_for_its_date(first_run, e2e_home, monkeypatch):
    """The assets retention and training are scheduled on: each task that makes one emitted its
    event, with the business date (the snapshot's with whether it went live and its id)."""
    import subprocess
    import sys

    from crm.airflow_env import airflow_env

    settings = _settings(e2e_home, monkeypatch)
    done = subprocess.run([sys.executable, "-c", ASSET_EVENTS], env=airflow_env(settings), capture_output=True,
                          text=True, check=True)  # fmt: skip
    events = json.loads(done.stdout.strip().splitlines()[-1])
    first = {name: extra for name, extra in reversed(events)}  # the first run's, as later tests run more
    assert first["crm_marts"] == {"business_date": str(D)} and first["crm_assignment"] == {"business_date": str(D)}
    snapshot = first["crm_offers_snapshot"]
    assert snapshot["business_date"] == str(D) and snapshot["published"] is True
    assert snapshot["snapshot_id"].startswith("20261126-")


def _lineage(home, day: dt.date) -> list[dict]:
    """The COMPLETE OpenLineage events of the latest run for ``day``: its tasks' (the Airflow facet
    names the run) and the dbt models' (their parent, a dbt task's run)."""
    events = [json.loads(p.read_text()) for p in sorted((home / "lineage").glob("event-*.json"))]
    complete = [e for e in events if e["eventType"] == "COMPLETE"]
    runs = {e["run"]["facets"]["airflow"]["dagRun"]["run_id"]: e["eventTime"] for e in complete
            if e["job"]["name"].startswith("crm_daily.")
            and e["run"]["facets"]["airflow"]["dagRun"]["logical_date"].startswith(str(day))}  # fmt: skip
    latest = max(runs, key=runs.get)
    tasks = [e for e in complete if e["job"]["name"].startswith("crm_daily.")
             and e["run"]["facets"]["airflow"]["dagRun"]["run_id"] == latest]  # fmt: skip
    # a dbt task's OpenLineage run id is the same in every run of its date (Airflow's try and date
    # make it): the models' events of this run are those since its first task's
    task_runs = {e["run"]["runId"] for e in tasks}
    start = min(dt.datetime.fromisoformat(e["eventTime"]) for e in tasks)
    models = [e for e in complete if e["run"]["facets"].get("parent", {}).get("run", {}).get("runId") in task_runs
              and dt.datetime.fromisoformat(e["eventTime"]) >= start]  # fmt: skip
    return tasks + models


def _assert_the_lineage_joins_up(home, day: dt.date, warehouse: str, database: str) -> None:
    """The run's datasets join up: from each endpoint of the bank's API, through landing, raw, dbt's
    models and the assignment, to the Redis snapshot; each dbt model has its own event."""
    events = _lineage(home, day)
    by_job: dict[str, list[dict]] = {}
    for e in events:
        by_job.setdefault(e["job"]["name"], []).append(e)
    edges: dict[tuple, set[tuple]] = {}
    for e in events:
        for i in e["inputs"]:
            edges.setdefault((i["namespace"], i["name"]), set()).update(
                (o["namespace"], o["name"]) for o in e["outputs"]
            )

    def reachable(start: tuple) -> set[tuple]:
        seen, todo = {start}, [start]
        while todo:
            for nxt in edges.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    api = {(d["namespace"], d["name"]) for e in by_job["crm_daily.extract"] for d in e["inputs"]}
    assert {name for _, name in api} == {"/v1/customers", "/v1/accounts", "/v1/transactions", "/v1/campaign-responses"}
    (snapshot,) = {(d["namespace"], d["name"]) for d in by_job["crm_daily.publish_cache"][0]["outputs"]}
    assert snapshot[0].startswith("redis://") and snapshot[1] == "crm"
    (assignment,) = {(d["namespace"], d["name"]) for d in by_job["crm_daily.score_and_assign"][0]["outputs"]}
    assert assignment == (assignment[0], f"{database}.marts.customer_campaign_assignments")
    assert assignment[0].startswith(f"{warehouse}://")
    for endpoint in sorted(api):
        downstream = reachable(endpoint)
        assert ("file", str(home / "landing" / endpoint[1].split("/")[-1].replace("-", "_"))) in downstream
        assert assignment in downstream and snapshot in downstream, f"the lineage from {endpoint} stops short"
    # one event per model dbt ran, under the dbt task's run: what the model read, what it wrote
    (features,) = [e for name, es in by_job.items() for e in es if name.endswith(".customer_features.build.run")]
    assert [(d["namespace"], d["name"]) for d in features["outputs"]] == [
        (assignment[0], f"{database}.marts.customer_features")
    ]
    models = {n.split(".")[-3] for n in by_job if n.endswith(".build.run")}
    assert {"customer_features", "campaign_eligibility", "campaign_performance", "customer_360"} <= models


def test_the_lineage_goes_from_the_bank_s_api_to_the_snapshot(first_run, e2e_home):
    """Every task's OpenLineage events (the provider's file transport) name what it read and wrote
    (``AIRFLOW__OPENLINEAGE__TRANSPORT``; here a file per event), each dbt model has its own, and
    the datasets join up from the bank's API to the snapshot."""
    _assert_the_lineage_joins_up(e2e_home, D, "duckdb", "warehouse")


def test_everything_the_run_wrote_is_its_users_alone(first_run, e2e_home):
    """The warehouse, landing and quarantine files, the model store, the cache's data, the logs:
    files 0600 and directories 0700 (they hold customers' personal data)."""
    shared = [str(p.relative_to(e2e_home)) for p in e2e_home.rglob("*")
              if not p.is_symlink() and p.stat().st_mode & 0o077]  # fmt: skip
    assert shared == [], shared[:20]


def test_every_customer_gets_at_most_three_consented_offers(first_run, e2e_home, monkeypatch):
    settings = _settings(e2e_home, monkeypatch)
    df = _assignments(settings)
    assert df["customer_id"].nunique() > CUSTOMERS // 4
    assert df.groupby("customer_id")["rank"].max().max() <= 3
    assert not df.duplicated(["customer_id", "campaign_id"]).any()
    # every row says which arm of the day's experiment chose it, and with what probability
    by_arm = df.groupby("arm")
    assert set(by_arm.groups) == {"model", "exploration", "control"}
    assert by_arm["customer_id"].nunique()["model"] > 5 * by_arm["customer_id"].nunique()["control"]
    assert (df.loc[df["arm"] != "exploration", "selection_probability"] == 1).all()
    explored = df[df["arm"] == "exploration"]
    assert explored["customer_id"].is_unique and explored["selection_probability"].between(0.01, 1).all()
    from crm.warehouse import warehouse

    consents = (
        warehouse(settings)
        .frame(
            "select customer_id, consent_sms, consent_email, consent_phone, consent_push, consent_social "
            "from marts.customer_features where as_of_date = :d",
            {"d": D},
        )
        .set_index("customer_id")
    )
    for row in df.itertuples():
        assert consents.loc[row.customer_id, f"consent_{row.channel.lower()}"] == 1
        reasons = json.loads(row.reasons)  # readable by a sales agent: why this offer, why this channel
        assert reasons[-1].startswith(f"{row.channel}: ") and all(isinstance(r, str) and r for r in reasons)


def test_the_api_serves_what_the_warehouse_assigned(first_run, e2e_home, monkeypatch):
    settings = _settings(e2e_home, monkeypatch)
    from crm.warehouse import warehouse

    everyone = _assignments(settings)
    df = everyone[everyone["arm"] != "control"]  # what is served
    sample = sorted(df["customer_id"].unique())[:20]
    held_out = sorted(everyone.loc[everyone["arm"] == "control", "customer_id"].unique())[:5]
    assert held_out, "no customer in the control arm"
    known = {c for (c,) in warehouse(settings).rows("select customer_id from marts.customer_360 where as_of_date = :d",
                                                    {"d": D})}  # fmt: skip
    without_offers = sorted(known - set(df["customer_id"]))[:3]
    unknown = max(known) + 1000
    assert without_offers, "every customer of the bank got an offer: nobody to look up without one"
    try:
        served, snapshot = _served(settings, [*sample, *without_offers, *held_out, unknown])
        to_marketing, _ = _served(settings, [*without_offers, unknown], role="marketing")
    finally:
        from crm.services import stop_services_started_since

        stop_services_started_since(set(), settings)
    assert snapshot["snapshot"]["business_date"] == D.isoformat()
    for c in sample:
        expected = df[df["customer_id"] == c].sort_values("rank")["campaign_id"].tolist()
        assert [o["campaign_id"] for o in served[c]["offers"]] == expected
    # a customer the bank knows with no offers today gets an empty list (as /v1/me/offers does);
    # only a customer the snapshot does not know is a 404
    for c in without_offers:
        assert served[c] == {"snapshot_id": snapshot["snapshot"]["snapshot_id"], "customer_id": c, "offers": []}
    # the control arm's offers are logged in the warehouse and never served: the same empty list
    for c in held_out:
        assert served[c] == {"snapshot_id": snapshot["snapshot"]["snapshot_id"], "customer_id": c, "offers": []}
    assert served[unknown] == {"detail": f"customer {unknown} is not in the live snapshot"}
    # marketing is not told whether an id without offers is a customer: 404 either way
    assert all(to_marketing[c] == {"detail": f"customer {c} is not in the live snapshot"} for c in to_marketing)


class TestConsole:
    """The staff console and /docs in a real browser (Debian's Chromium, playwright) on the run's
    snapshot, served by ``make serve``; nothing but 127.0.0.1 is reachable, and nothing else is asked."""

    @pytest.fixture(scope="class")
    def console(self, first_run, e2e_home):
        from browser import chromium
        from conftest import running_read_api

        from crm.settings import Settings

        settings = Settings(home=e2e_home)
        keys = json.loads(settings.demo_api_keys_path.read_text())
        with running_read_api(e2e_home) as url, chromium() as browser:
            yield url, browser, settings, keys
        assert browser.outside == [], browser.outside  # no page asked for anything beyond this machine

    @staticmethod
    def open(browser, url):
        context = browser.context(base_url=url)
        return context, context.new_page()

    def sign_in(self, browser, url, settings, who: str, role: str):
        from browser import axe_violations, screenshot

        from serving.auth import sign_dev_token

        context, page = self.open(browser, url)
        page.goto("/console")
        assert page.url.endswith("/console/sign-in")  # not signed in: the sign-in page
        assert axe_violations(page) == []
        screenshot(page, "sign-in")
        page.get_by_label("Access token").fill(sign_dev_token(settings, who, role))
        page.get_by_role("button", name="Sign in").click()
        return context, page

    def test_marketing_pages_a_segment_and_downloads_the_api_s_csv(self, console):
        import httpx
        from browser import axe_violations, screenshot

        url, browser, settings, keys = console
        api = httpx.Client(base_url=url, headers={"X-API-Key": keys["marketing"]})
        live = api.get("/v1/snapshot").json()["snapshot"]
        context, page = self.sign_in(browser, url, settings, "ana.torres", "marketing")
        assert page.url.endswith("/console/campaigns")
        assert page.get_by_test_id("snapshot-id").inner_text() == live["snapshot_id"]
        assert axe_violations(page) == []
        screenshot(page, "campaigns")

        campaigns = api.get("/v1/campaigns").json()["campaigns"]
        busiest = max(campaigns, key=lambda c: c["assigned"])
        channel = max(busiest["channels"], key=busiest["channels"].get)
        page.get_by_role("link", name=busiest["campaign_id"], exact=True).click()
        page.get_by_label("Channel").select_option(channel)
        page.get_by_role("button", name="Show").click()

        def shown() -> list[list[str]]:
            rows = page.locator("table").first.locator("tbody tr")
            return [[c.strip() for c in rows.nth(i).locator("td").all_inner_texts()] for i in range(rows.count())]

        def from_api(cursor: int) -> list[list[str]]:
            body = api.get(
                f"/v1/campaigns/{busiest['campaign_id']}/customers",
                params={"channel": channel, "limit": 50, "cursor": cursor},
            ).json()
            return [[str(e["position"]), str(e["customer_id"]), e["offer_id"], e["channel"], f"{e['priority']:.2f}"]
                    for e in body["customers"]]  # fmt: skip

        assert shown() == from_api(0)
        # the last 30 days' results, published with the snapshot, drawn and listed
        assert page.get_by_role("img", name=f"{busiest['campaign_id']}: customers contacted and accepted").count() == 1
        assert axe_violations(page) == []
        screenshot(page, "campaign")
        if busiest["channels"][channel] > 50:
            page.get_by_role("link", name="Next 50").click()
            assert shown() == from_api(50)
        with page.expect_download() as download:
            page.get_by_role("link", name="Download the whole segment as CSV").click()
        csv = download.value.path().read_text()
        expected = api.get(
            f"/v1/campaigns/{busiest['campaign_id']}/customers",
            params={"channel": channel},
            headers={"Accept": "text/csv"},
        ).text
        assert csv == expected and csv.count("\n") == busiest["channels"][channel] + 1
        # marketing has no customer look-up page in the console
        page.goto("/console/customers")
        assert page.get_by_role("heading", name="Not for your role").count() == 1
        context.close()

    def test_sales_looks_a_customer_up_and_sees_the_api_s_offers(self, console):
        import httpx
        from browser import axe_violations, screenshot

        from serving.audit import read_records

        url, browser, settings, keys = console
        api = httpx.Client(base_url=url, headers={"X-API-Key": keys["sales"]})
        customer = _assignments(settings)["customer_id"].value_counts().index[0]  # one with the most offers
        expected = api.get(f"/v1/customers/{customer}/offers").json()
        context, page = self.sign_in(browser, url, settings, "luis.quispe", "sales")
        assert page.url.endswith("/console/customers")
        page.get_by_label("Customer id").fill(str(customer))
        page.get_by_role("button", name="Look up").click()
        rows = page.locator("table tbody tr")
        cells = [rows.nth(i).locator("td").all_inner_texts() for i in range(rows.count())]
        assert [(c[1], c[2], c[3], c[4]) for c in cells] == [
            (o["campaign_id"], o["offer_id"], o["channel"], o["valid_until"]) for o in expected["offers"]
        ]
        assert [c[5].splitlines() for c in cells] == [o["reasons"] for o in expected["offers"]]
        assert page.get_by_text("Products held").count() == 1  # the masked profile, from customer_360
        assert page.get_by_test_id("snapshot-id").inner_text() == expected["snapshot_id"]
        assert axe_violations(page) == []
        screenshot(page, "customer")
        # the view is in the audit trail like an API look-up: who, role, which customer, snapshot
        seen = [r for r in read_records(settings.audit_dir) if r["what"].startswith("GET /console/customers?")]
        assert any(r["who"] == "luis.quispe" and r["role"] == "sales" and r["customer_id"] == int(customer)
                   and r["snapshot_id"] == expected["snapshot_id"] for r in seen)  # fmt: skip
        context.close()

    def test_the_console_works_from_the_keyboard(self, console):
        from serving.auth import sign_dev_token

        url, browser, settings, _ = console
        context, page = self.open(browser, url)
        page.goto("/console/sign-in")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
        for _ in range(4):  # to the token's field
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.id") == "token":
                break
        page.keyboard.type(sign_dev_token(settings, "ana.torres", "marketing"))
        page.keyboard.press("Tab")
        page.keyboard.press("Enter")
        page.wait_for_url("**/console/campaigns")
        page.keyboard.press("Tab")  # skip link, then the menu
        page.keyboard.press("Tab")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.getAttribute('href')") == "/console/campaigns"
        context.close()

    def test_docs_render_every_operation_offline(self, console):
        import httpx
        from browser import screenshot

        url, browser, _, _ = console
        context, page = self.open(browser, url)
        page.goto("/docs")
        page.locator(".opblock").first.wait_for(timeout=20_000)
        operations = [op for path in httpx.get(f"{url}/openapi.json").json()["paths"].values() for op in path]
        assert page.locator(".opblock").count() == len(operations)
        screenshot(page, "docs")
        context.close()


def test_evaluate_compares_the_assignment_with_the_oracles_and_a_random_one(first_run, e2e_home):
    from crm.settings import Settings

    cmd = [sys.executable, "-m", "entrypoints.cli", "evaluate", "--date", D.isoformat(), "--customers", str(CUSTOMERS),
           "--seed", "11"]  # fmt: skip
    env = {**os.environ, "CRM_HOME": str(e2e_home)}
    done = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["business_date"] == D.isoformat()
    assert 0 < figures["random"] < figures["oracle"] and figures["ours"] > 0  # the truth beats chance
    assert 0 < figures["random_value"] < figures["oracle_value"] and figures["ours_value"] > figures["random_value"]
    # the capture is of the arbitration's objective (expected value), against an oracle that pursues it too
    assert figures["oracle_capture"] == pytest.approx(figures["ours_value"] / figures["oracle_value"], abs=1e-3)
    # the model's choice is measured: its arm and the control's (the control's row is what it chose)
    arms = _assignments(Settings(home=e2e_home))["arm"]
    assert figures["assigned_pairs"] == (arms != "exploration").sum() < len(arms)
    assert "oracle_capture" in done.stdout and "random_capture" in done.stdout


def test_a_running_api_serves_each_new_run_without_a_restart(first_run, e2e_home, monkeypatch):
    """make serve runs, and an analyst's make sql is open; make demo for the same date again: same
    assignments, same offers, from a new snapshot; then make demo DATE=<next day>: the same API
    serves the next day's snapshot, and the analyst sees the next day whole."""
    import time

    import httpx
    from conftest import running_read_api

    from crm.services import running_services

    settings = _settings(e2e_home, monkeypatch)
    before = _assignments(settings)
    sample = [int(c) for c in sorted(before["customer_id"].unique())[:20]]
    keys = json.loads(settings.demo_api_keys_path.read_text())

    def served(url: str) -> tuple[set[str], dict, dict]:
        with httpx.Client(base_url=url, headers={"X-API-Key": keys["sales"]}) as client:
            bodies = {c: client.get(f"/v1/customers/{c}/offers").json() for c in sample}
            snapshot = client.get("/v1/snapshot").json()["snapshot"]
        return {b["snapshot_id"] for b in bodies.values()}, {c: b.get("offers") for c, b in bodies.items()}, snapshot

    with running_read_api(e2e_home) as url, AnalystSession(e2e_home) as analyst:
        snap_before, offers_before, _ = served(url)
        again = _demo(e2e_home, D)
        assert again.returncode == 0, again.stdout[-3000:]
        assert "redis" in running_services(settings)  # the demo left the API's Redis up
        time.sleep(0.5)
        snap_after, offers_after, _ = served(url)

        next_day = _demo(e2e_home, D + dt.timedelta(days=1))
        assert next_day.returncode == 0, next_day.stdout[-3000:]
        time.sleep(0.5)
        snap_next, _, snapshot_next = served(url)
    assert before.equals(_assignments(settings))
    assert offers_after == offers_before
    assert len(snap_before) == len(snap_after) == 1 and snap_after != snap_before
    assert len(snap_next) == 1 and snap_next != snap_after
    assert snapshot_next["business_date"] == (D + dt.timedelta(days=1)).isoformat()
    assert snapshot_next["snapshot_id"] in snap_next and snapshot_next["fresh"] is True
    assert running_services(settings) == set()  # serve stopped the Redis it had started
    # an analyst's make sql, open and querying through both runs: neither failed on the warehouse's
    # lock, and the analyst saw D's rows whole throughout and D+1's arrive whole, in every mart at once
    analyst.assert_saw_whole_dates_only(D + dt.timedelta(days=1))
    analyst.assert_the_date_arrived_in_every_mart_at_once(D + dt.timedelta(days=1))
    # each dbt call of the day parsed only what changed since the call before (the partial parse
    # kept in Cosmos's cache), never the whole project again
    log = (e2e_home / "runs" / f"crm_daily_{D + dt.timedelta(days=1)}.log").read_text()
    assert log.count("Trying to run dbtRunner with") == 2
    assert "Starting full parse" not in log and "Unable to do partial parsing" not in log
    # the loop is closed: D's list went to the bank when D's snapshot went live, and on D + 1 the
    # bank contacted its served offers and tracked its control, which D + 1's run extracted
    from crm.warehouse import warehouse

    worked = warehouse(settings).frame(
        "select customer_id, campaign_id, channel, is_contacted from staging.stg_core_banking__campaign_responses "
        "where contact_date = :d", {"d": D + dt.timedelta(days=1)})  # fmt: skip
    handed = before.assign(is_contacted=(before["arm"] != "control").astype(int))
    columns = ["customer_id", "campaign_id", "channel", "is_contacted"]
    assert sorted(map(tuple, worked[columns].astype(str).to_numpy())) == sorted(
        map(tuple, handed[columns].astype(str).to_numpy())
    )


def test_a_failing_stage_stops_the_run_names_it_and_publishes_nothing(first_run, e2e_home, monkeypatch):
    settings = _settings(e2e_home, monkeypatch)
    from crm.services import ensure_redis, stop_services_started_since
    from serving.keys import Keys

    with redis.Redis.from_url(ensure_redis(settings), decode_responses=True) as r:
        live = r.get(Keys(settings.serving.redis_prefix).current)
    stop_services_started_since(set(), settings)
    broken = _demo(
        e2e_home,
        D + dt.timedelta(days=2),
        {
            "CRM_CORE_API_URL": "http://127.0.0.1:9",
            "CRM_CORE_CLIENT_ID": "x",
            "CRM_CORE_CLIENT_SECRET": "y",
            "CRM_API_MAX_RETRIES": "1",
        },
    )
    assert broken.returncode != 0
    # the first stage that calls the bank's API: the plan asks its counts to size the extraction's slices
    assert "crm_daily FAILED for 2026-11-28 at stage plan_extraction" in broken.stdout
    assert "IntegrationApiError" in broken.stdout
    assert "nothing was published" in broken.stdout
    try:
        with redis.Redis.from_url(ensure_redis(settings), decode_responses=True) as r:
            assert r.get(Keys(settings.serving.redis_prefix).current) == live
    finally:
        stop_services_started_since(set(), settings)


def test_the_training_set_is_point_in_time(first_run, e2e_home, monkeypatch):
    """Each contact's features are from before it (at most a week), and only final outcomes count."""
    from crm.warehouse import warehouse
    from ml.training_set import TrainingWindow, training_frame

    settings = _settings(e2e_home, monkeypatch)
    with warehouse(settings).connect() as session:
        df = training_frame(session, TrainingWindow(D))
        windows = dict(session.rows("select campaign_id, response_window_days from staging.stg_campaigns__campaigns"))
    assert len(df) > 200 and 0 < df["accepted"].mean() < 1
    age = (df["contact_date"] - df["feature_date"]).dt.days
    assert age.min() >= 1 and age.max() <= 7
    # decision 0029: a label once the run that re-reads its day for the last time (3 days on) loaded
    # it, not once the campaign's response window (14-60 days) has closed
    final = df["contact_date"] + pd.Timedelta(days=settings.extraction.late_arrival_days)
    assert (final <= pd.Timestamp(D)).all()
    closes = df["contact_date"] + pd.to_timedelta(df["campaign_id"].map(windows), unit="D")
    assert (closes > pd.Timestamp(D)).any()  # contacts the response-window wait used to leave out


def test_model_training_dag_logs_candidates_and_promotes_only_by_the_margin(first_run, e2e_home, monkeypatch):
    """crm_model_training through Airflow on the same data as the champion: the new version does not
    beat it by the margin and becomes challenger; with a margin of 0 it takes the champion alias."""
    settings = _settings(e2e_home, monkeypatch)

    def train(*extra: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "entrypoints.cli", "train", "--date", D.isoformat(), "--customers", str(CUSTOMERS),
               "--seed", "11", *extra]  # fmt: skip
        env = {**os.environ, "CRM_HOME": str(e2e_home)}
        return subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900, check=False)

    done = train()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "is challenger" in done.stdout and "does not beat champion v1 by the margin 0.005" in done.stdout

    from ml.registry import mlflow_client

    client = mlflow_client(settings)
    name = settings.model.model_name
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    challenger = client.get_model_version_by_alias(name, "challenger")
    assert challenger.tags["promotion.decision"] == "challenger"
    parent = client.search_runs(
        [client.get_experiment_by_name("crm-campaign-propensity").experiment_id],
        filter_string="tags.`promotion.decision` = 'challenger'",
    )[0]
    assert "does not beat champion v1" in parent.data.tags["promotion.reason"]
    assert {"training_window_days", "candidates", "promotion_margin"} <= set(parent.data.params)
    assert {f.path for f in client.list_artifacts(parent.info.run_id, "data_profile")} >= {
        "data_profile/training_profile.json", "data_profile/training_features_summary.csv"}  # fmt: skip
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    measured = [r for r in children if "fitted_on" not in r.data.params]
    assert {r.data.params["candidate"] for r in measured} == {
        "logistic_regression",
        "gradient_boosting",
        "per_campaign_logistic",
    }
    # the version serves the best fitted again on every contact of the window; the gate measured the
    # champion by the fit that was measured, so the same data read the same for both (a champion
    # measured by its refit would have seen this holdout)
    (served,) = [r for r in children if "fitted_on" in r.data.params]
    whole = parent.data.metrics["training_rows"] + parent.data.metrics["holdout_rows"]
    assert served.data.metrics["training_rows"] == whole
    assert challenger.run_id == served.info.run_id and challenger.tags["measured_model"] != challenger.source
    for measure in ("capture_at_capacity", "calibration_error", "roc_auc"):
        assert parent.data.metrics[f"champion_holdout_{measure}"] == parent.data.metrics[f"best_{measure}"], measure
    for run in measured:
        assert {"roc_auc", "pr_auc", "brier", "lift_top_decile"} <= set(run.data.metrics)
        assert any(k.startswith("auc.CMP-") for k in run.data.metrics)
        assert {f.path for f in client.list_artifacts(run.info.run_id, "evaluation")} == {
            "evaluation/calibration.png", "evaluation/feature_importance.csv"}  # fmt: skip
    import mlflow

    info = mlflow.models.get_model_info(f"models:/{name}/{challenger.version}")
    assert "campaign_id" in info.signature.inputs.input_names() and info.saved_input_example_info is not None

    promoted = train("--margin", "0")
    assert promoted.returncode == 0, promoted.stdout[-3000:]
    assert "is champion" in promoted.stdout
    assert int(client.get_model_version_by_alias(name, "champion").version) == int(challenger.version) + 1


def test_the_run_log_is_not_buried_in_deprecation_warnings(first_run, e2e_home):
    """A person reads the task logs: no flood of Airflow deprecation warnings (skops' scan of every
    loaded module for scipy's functions made over a thousand per model saved or loaded), and no more
    than a couple of warning lines per task."""
    import re

    log = (e2e_home / "runs" / f"crm_daily_{D}.log").read_text()
    warnings = [line for line in log.splitlines() if "[warning" in line or "Warning:" in line]
    assert not [line for line in warnings if "DeprecatedImportWarning" in line], warnings[:3]
    tasks = set(re.findall(r"starting task_id=([\w.]+)", log))
    assert {"extract", "dbt_build", "score_and_assign", "publish_cache", "dbt_reporting"} <= tasks
    assert len(warnings) <= 2 * len(tasks), "\n".join(warnings[:20])


def _mart_hashes(stdout: str) -> dict[str, tuple[int, str]]:
    """The demo's lines ``<mart> <rows> rows <content hash>``."""
    import re

    found = re.findall(r"^  (\w+)\s+(\d+) rows  ([0-9a-f]{16})$", stdout, flags=re.M)
    return {mart: (int(rows), digest) for mart, rows, digest in found}


def test_the_same_day_on_postgresql_through_airflow_gives_the_same_marts(first_run, e2e_home, monkeypatch):
    """``make demo WAREHOUSE=postgres``: crm_daily through Airflow on an embedded PostgreSQL server
    the demo starts (and stops), the same sandbox bank and champion; every mart's rows of the date
    equal the DuckDB run's, by content hash. Then crm_model_training and crm_retention run there."""
    from entrypoints.runs import DAY_COLUMNS

    # the day again on DuckDB first: the tests above promoted another champion since the first run
    duckdb_run = _demo(e2e_home, D)
    assert duckdb_run.returncode == 0, duckdb_run.stdout[-3000:] + duckdb_run.stderr[-3000:]
    done = _demo(e2e_home, D, {"CRM_DBT_TARGET": "postgres"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "(warehouse: postgresql;" in done.stdout and "stopped the services this run started: " in done.stdout
    assert "postgres" in done.stdout.split("stopped the services this run started: ")[1].splitlines()[0]
    duckdb_marts, postgres_marts = _mart_hashes(duckdb_run.stdout), _mart_hashes(done.stdout)
    assert set(postgres_marts) == {table for table, _ in DAY_COLUMNS}
    assert all(rows > 0 for rows, _ in postgres_marts.values()), postgres_marts
    assert postgres_marts == duckdb_marts

    # the next day on PostgreSQL with an analyst's make sql open throughout, as the analysts' role:
    # the run never waits on it, and it sees D whole, then D+1 whole, never a date half-written
    with AnalystSession(e2e_home, {"CRM_DBT_TARGET": "postgres"}) as analyst:
        next_day = _demo(e2e_home, D + dt.timedelta(days=1), {"CRM_DBT_TARGET": "postgres"})
    assert next_day.returncode == 0, next_day.stdout[-3000:] + next_day.stderr[-3000:]
    analyst.assert_saw_whole_dates_only(D + dt.timedelta(days=1))
    _assert_the_lineage_joins_up(e2e_home, D + dt.timedelta(days=1), "postgres", "crm")  # dbt-postgres's names too
    denied = subprocess.run([sys.executable, "-m", "entrypoints.cli", "sql", "-c", "select count(*) from raw.customers"],
                            env={**os.environ, "CRM_HOME": str(e2e_home), "CRM_DBT_TARGET": "postgres"},
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert denied.returncode == 1 and "permission denied for schema raw" in denied.stderr, denied.stderr

    monkeypatch.setenv("CRM_DBT_TARGET", "postgres")
    settings = _settings(e2e_home, monkeypatch)
    cmd = [sys.executable, "-m", "entrypoints.cli", "train", "--date", D.isoformat(), "--customers", str(CUSTOMERS),
           "--seed", "11", "--margin", "0.5"]  # fmt: skip
    env = {**os.environ, "CRM_HOME": str(e2e_home), "CRM_DBT_TARGET": "postgres"}
    trained = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    assert "is challenger" in trained.stdout  # trained on PostgreSQL's training set; never promoted at margin 0.5

    from crm.airflow_env import run_dag_test
    from crm.embedded_postgres import stop_postgres
    from crm.warehouse import dispose_engines, warehouse

    later = D + dt.timedelta(days=40)  # the retention window (35 days) has passed D's personal data
    try:
        assert warehouse(settings).scalar("select count(*) from raw.customers where _business_date = :d", {"d": D}) > 0
        assert run_dag_test("crm_retention", later, {}, settings) == 0
        assert warehouse(settings).scalar("select count(*) from raw.customers") == 0
    finally:
        dispose_engines()
        stop_postgres(settings)
