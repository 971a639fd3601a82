"""The audit trail of the read API, on a real Redis: every call on record before its answer leaves,
a call that cannot be recorded refused with 503, and tampering found by ``crm audit verify``."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys

import pytest
from assignments import assignments
from fastapi.testclient import TestClient

from crm.services import ensure_redis, stop_redis
from crm.settings import REPO_ROOT
from ml.registry import ModelRef
from ml.score import write_assignments
from serving.api import create_app
from serving.audit import read_records
from serving.auth import issue_keys, sign_dev_token
from serving.load import publish_snapshot

D = dt.date(2026, 11, 5)


@pytest.fixture(scope="module")
def home_settings(settings):
    s = dataclasses.replace(settings, home=settings.home / "audit-home")
    s.ensure_dirs()
    write_assignments(D, assignments(20, [("CMP-A", "SMS")]), ModelRef("m", "1"), s)
    publish_snapshot(D, s)
    yield s
    stop_redis(s)


@pytest.fixture(scope="module")
def api(home_settings):
    keys = issue_keys(home_settings.api_keys_path)
    with TestClient(create_app(ensure_redis(home_settings), home_settings)) as client:
        yield client, keys


def test_every_call_is_on_record_with_who_what_outcome_source_and_snapshot(api, home_settings):
    client, keys = api
    marketing = {"X-API-Key": keys["marketing"]}
    page = client.get("/v1/campaigns/CMP-A/customers", params={"limit": 5}, headers=marketing)
    export = client.get("/v1/campaigns/CMP-A/customers", headers={**marketing, "Accept": "text/csv"})
    assert page.status_code == export.status_code == 200
    assert client.get("/v1/customers/3/offers").status_code == 401
    assert client.get("/v1/customers/3/offers", headers={"X-API-Key": "made-up"}).status_code == 401
    agent = sign_dev_token(home_settings, "maria.chavez", "sales")
    assert client.get("/v1/campaigns/CMP-A/customers", headers={"Authorization": f"Bearer {agent}"}).status_code == 403
    assert client.get("/healthz").status_code == 200  # the ops probes are not business reads

    records = list(read_records(home_settings.audit_dir))
    by_what = {(r["what"], r["accept"], r["status"]): r for r in records}
    read = by_what["GET /v1/campaigns/CMP-A/customers?limit=5", None, 200]
    assert read["who"] == "marketing-integration" and read["snapshot_id"] == page.headers["X-Snapshot-Id"]
    csv = by_what["GET /v1/campaigns/CMP-A/customers", "csv", 200]
    assert csv["snapshot_id"] == export.headers["X-Snapshot-Id"] and csv["role"] == "marketing"
    anonymous = [r for r in records if r["what"] == "GET /v1/customers/3/offers"]
    assert [r["status"] for r in anonymous] == [401, 401] and {r["who"] for r in anonymous} == {None}
    assert anonymous[0]["customer_id"] == 3 and anonymous[0]["source"] == "testclient"
    refused = by_what["GET /v1/campaigns/CMP-A/customers", None, 403]
    assert (refused["who"], refused["kind"], refused["role"]) == ("maria.chavez", "staff", "sales")
    assert not any("healthz" in r["what"] for r in records)
    at = dt.datetime.fromisoformat(records[-1]["at"])
    assert abs((dt.datetime.now(dt.UTC) - at).total_seconds()) < 60
    # the files are the API's alone
    assert oct(home_settings.audit_dir.stat().st_mode & 0o777) == "0o700"
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in home_settings.audit_dir.glob("api-*.jsonl"))


def test_a_call_that_cannot_be_recorded_is_refused_with_503(home_settings, tmp_path):
    """The disk under the audit trail is full (its file is /dev/full): look-ups, segment reads and
    exports answer 503 instead of answering unaudited; the API itself stays up."""
    s = dataclasses.replace(home_settings, home=tmp_path)
    s.audit_dir.mkdir(mode=0o700)
    keys = issue_keys(s.api_keys_path)
    app = create_app(ensure_redis(home_settings), s)
    today = dt.datetime.now(dt.UTC).date().isoformat()
    app.state.trail.path_for(today).symlink_to("/dev/full")
    with TestClient(app) as client:
        for path, role in (("/v1/customers/3/offers", "sales"), ("/v1/campaigns/CMP-A/customers", "marketing")):
            resp = client.get(path, headers={"X-API-Key": keys[role]})
            assert resp.status_code == 503, path
            assert "audit trail cannot be written" in resp.json()["detail"]
            assert "offers" not in resp.text and "customers" not in resp.json()
        assert client.get("/healthz").status_code == 200


def test_audit_verify_finds_an_edited_and_a_removed_record(api, home_settings):
    client, keys = api
    for customer in range(1, 6):
        client.get(f"/v1/customers/{customer}/offers", headers={"X-API-Key": keys["sales"]})

    def verify() -> subprocess.CompletedProcess:
        env = {**os.environ, "CRM_HOME": str(home_settings.home)}
        return subprocess.run([sys.executable, "-m", "entrypoints.cli", "audit", "verify"], env=env, cwd=REPO_ROOT,
                              capture_output=True, text=True)  # fmt: skip

    intact = verify()
    assert intact.returncode == 0 and "every hash chain is intact" in intact.stdout, intact.stderr
    path = next(home_settings.audit_dir.glob("api-*.jsonl"))
    original = path.read_text()
    lines = original.splitlines(keepends=True)
    record = json.loads(lines[2])
    record["status"] = 404  # someone hides that a look-up succeeded
    path.write_text("".join([*lines[:2], json.dumps(record) + "\n", *lines[3:]]))
    edited = verify()
    assert edited.returncode == 1 and f"{path.name} line 3: its content does not match its hash" in edited.stdout
    path.write_text("".join([*lines[:2], *lines[3:]]))  # a record removed
    removed = verify()
    assert removed.returncode == 1 and f"{path.name} line 3: does not follow the record before it" in removed.stdout
    path.write_text(original)
    assert verify().returncode == 0
