"""The audit trail of the read API, on a real Redis: every call on record before its answer leaves,
a call that cannot be recorded refused with 503, and tampering found by ``crm audit verify``: edited,
inserted, removed and cut-off records, missing files, a chain recomputed without the key, and seals
removed (against the copy the API shipped off the host)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys

import orjson
import pytest
from assignments import published_home
from fastapi.testclient import TestClient

from crm.services import ensure_redis
from crm.settings import REPO_ROOT, Settings, SettingsError
from serving.api import create_app
from serving.audit import LEDGER, key_id, load_keys, read_file, read_records
from serving.audit_verify import seals_from_log, verify
from serving.auth import issue_keys, sign_dev_token

D = dt.date(2026, 11, 5)


@pytest.fixture(scope="module")
def home_settings(settings):
    with published_home(settings, "audit-home", D, [("CMP-A", "SMS")]) as home:
        yield home


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


def test_a_header_sent_twice_is_on_record_by_its_first_value_on_every_path(api, home_settings):
    """The offers look-ups (answered ahead of FastAPI) and every other call read a repeated header
    alike: the trail says the same of the same request, whichever layer answered it."""
    client, keys = api
    headers = [("X-API-Key", keys["sales"]), ("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-For", "10.0.0.1"),
               ("Accept", "text/csv"), ("Accept", "application/json")]  # fmt: skip
    assert client.get("/v1/customers/3/offers", headers=headers).status_code == 200  # the fast path
    client.get("/v1/campaigns", headers=headers)  # FastAPI, through the audit layer
    records = {r["what"]: r for r in read_records(home_settings.audit_dir) if r["forwarded_for"]}
    offers, campaigns = records["GET /v1/customers/3/offers"], records["GET /v1/campaigns"]
    assert offers["forwarded_for"] == campaigns["forwarded_for"] == "203.0.113.7"
    assert offers["accept"] == campaigns["accept"] == "csv"


def test_a_call_that_cannot_be_recorded_is_refused_with_503(home_settings, tmp_path):
    """The disk under the audit trail is full (its file is /dev/full): look-ups, segment reads and
    exports answer 503 instead of answering unaudited; the API itself stays up."""
    s = home_settings.replace(home=tmp_path)
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


def _crm(home, *args: str) -> subprocess.CompletedProcess:
    """``crm ARGS`` as an operator runs it, on ``home``."""
    env = {**os.environ, "CRM_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "entrypoints.cli", *args], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True)  # fmt: skip


@pytest.fixture(scope="module")
def sealed_trail(home_settings, tmp_path_factory):
    """A trail of two API processes one after the other, each stopped (its file sealed for good):
    the trail, and the seals its processes logged (the off-host copy)."""
    s = home_settings.replace(home=tmp_path_factory.mktemp("trail-home"))
    s.audit_dir.mkdir(mode=0o700)
    keys = issue_keys(s.api_keys_path)
    url = ensure_redis(home_settings)
    shipped: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: shipped.append(record.getMessage())
    logging.getLogger("crm.audit").addHandler(handler)
    try:
        for process in ("pod-a-1", "pod-b-7"):
            app = create_app(url, s)
            app.state.trail.process = process  # two pods, one file each
            with TestClient(app) as client:
                for customer in range(1, 7):
                    client.get(f"/v1/customers/{customer}/offers", headers={"X-API-Key": keys["sales"]})
    finally:
        logging.getLogger("crm.audit").removeHandler(handler)
    return s, shipped


def _tampered(sealed_trail, tmp_path, change) -> tuple[int, list[str], list[str]]:
    """``verify`` of a copy of the sealed trail after ``change(audit_dir)``."""
    s, shipped = sealed_trail
    copy = tmp_path / "audit"
    shutil.copytree(s.audit_dir, copy)
    change(copy)
    return verify(copy, load_keys(s.audit_key_path, create=False), seals_from_log(shipped))


def _lines(path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def _first(audit_dir):
    return next(audit_dir.glob("api-*-pod-a-1.jsonl"))


def _second(audit_dir):
    return next(audit_dir.glob("api-*-pod-b-7.jsonl"))


def test_an_intact_trail_verifies_with_crm_audit_verify_and_a_tampered_one_fails_naming_the_record(
    sealed_trail, tmp_path
):
    s, shipped = sealed_trail
    log = tmp_path / "api.log"  # the deployment's log sink, as exported
    log.write_text("".join(f"INFO crm.audit {line}\n" for line in shipped))
    intact = _crm(s.home, "audit", "verify", "--seals", str(log))
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "every MAC, chain and seal is intact" in intact.stdout and "4 seals shipped off the host" in intact.stdout
    path = _first(s.audit_dir)
    original = path.read_text()
    lines = _lines(path)
    record = json.loads(lines[2])
    record["status"] = 404  # someone hides that a look-up succeeded
    path.write_text("".join([*lines[:2], json.dumps(record) + "\n", *lines[3:]]))
    try:
        edited = _crm(s.home, "audit", "verify")
    finally:
        path.write_text(original)
    assert edited.returncode == 1
    assert f"{path.name} line 3: its content does not match its MAC" in edited.stdout
    assert _crm(s.home, "audit", "verify").returncode == 0


def test_removed_and_inserted_records_are_named(sealed_trail, tmp_path):
    def remove(audit_dir):
        path = _first(audit_dir)
        lines = _lines(path)
        path.write_text("".join([*lines[:2], *lines[3:]]))

    _, problems, _ = _tampered(sealed_trail, tmp_path / "removed", remove)
    assert problems == [f"{_first(tmp_path / 'removed' / 'audit').name} line 3: record 3 before it removed"]

    def insert(audit_dir):
        path = _first(audit_dir)
        lines = _lines(path)
        path.write_text("".join([*lines[:4], lines[1], *lines[4:]]))  # a genuine record, replayed

    _, problems, _ = _tampered(sealed_trail, tmp_path / "inserted", insert)
    assert problems == [f"{_first(tmp_path / 'inserted' / 'audit').name} line 5: inserted (a copy of record 2)"]


def test_records_cut_off_the_end_of_a_file_and_a_missing_file_are_named(sealed_trail, tmp_path):
    def cut(audit_dir):
        path = _first(audit_dir)
        path.write_text("".join(_lines(path)[:4]))

    _, problems, _ = _tampered(sealed_trail, tmp_path / "cut", cut)
    (problem,) = problems
    name = _first(sealed_trail[0].audit_dir).name
    assert problem.startswith(f"{name}: its last record is number 4") and "the last 2 were cut off" in problem

    _, problems, _ = _tampered(sealed_trail, tmp_path / "deleted", lambda d: _first(d).unlink())
    (problem,) = problems
    assert problem.startswith(f"{name} is missing: its seal of") and "says 6 records" in problem


def test_a_chain_recomputed_without_the_key_fails(sealed_trail, tmp_path):
    """Records edited, one removed, and every MAC and seal recomputed with a key of the tamperer's
    own (they do not have the mounted one): every record fails its MAC."""

    def recompute(audit_dir):
        wrong = hashlib.sha256(b"a guess").hexdigest().encode()
        path = _first(audit_dir)
        records = [json.loads(line) for line in _lines(path)]
        del records[2]
        prev = records[0]["prev"]
        out = []
        for seq, record in enumerate(records, start=1):
            record.update(seq=seq, prev=prev, status=200)
            record.pop("mac")
            record["mac"] = prev = hmac.new(wrong, orjson.dumps(record), "sha256").hexdigest()
            out.append(json.dumps(record, separators=(",", ":")) + "\n")
        path.write_text("".join(out))

    _, problems, _ = _tampered(sealed_trail, tmp_path, recompute)
    name = _first(tmp_path / "audit").name
    assert [p for p in problems if "does not match its MAC" in p] == [
        f"{name} line {n}: its content does not match its MAC (edited, or written or recomputed without the key)"
        for n in range(1, 6)
    ]


def test_seals_removed_from_the_ledger_are_caught_by_the_chain_or_the_copy_off_the_host(sealed_trail, tmp_path):
    def drop_a_middle_seal(audit_dir):
        ledger = audit_dir / LEDGER
        lines = _lines(ledger)
        ledger.write_text("".join([*lines[:1], *lines[2:]]))

    _, problems, _ = _tampered(sealed_trail, tmp_path / "middle", drop_a_middle_seal)
    assert f"{LEDGER} line 2: does not follow the seal before it (seals were removed or inserted)" in problems

    s, shipped = sealed_trail
    last = _second(s.audit_dir).name
    copy = tmp_path / "last"
    shutil.copytree(s.audit_dir, copy)
    # the last file and its seals, gone together: the ledger left is a whole chain
    (copy / last).unlink()
    (copy / LEDGER).write_text("".join(_lines(copy / LEDGER)[:2]))
    keys = load_keys(s.audit_key_path, create=False)
    assert verify(copy, keys)[1] == []  # undetectable on the host alone: the reason seals leave it
    _, problems, _ = verify(copy, keys, seals_from_log(shipped))
    assert any(f"the seal of {last} at" in p and "missing from seals.jsonl" in p for p in problems)
    assert any(p.startswith(f"{last} is missing") for p in problems)


def test_the_key_never_lies_beside_the_trail(home_settings, monkeypatch):
    monkeypatch.setenv("CRM_AUDIT_KEY_FILE", str(home_settings.audit_dir / "key"))
    with pytest.raises(SettingsError, match="inside the audit directory"):
        _ = Settings(home=home_settings.home).audit_key_path


def test_after_a_key_rotation_old_files_still_verify_and_new_ones_use_the_new_key(
    sealed_trail, home_settings, tmp_path
):
    """Decision 0015's rotation: the new key first in CRM_AUDIT_KEY_FILE, the old one kept below it."""
    s, _ = sealed_trail
    home = tmp_path / "rotated"
    shutil.copytree(s.home, home, ignore=shutil.ignore_patterns("redis", "run"))
    rotated = s.replace(home=home)
    old = rotated.audit_key_path.read_text().strip()
    new = secrets.token_hex(32)
    rotated.audit_key_path.write_text(f"{new}\n{old}\n")
    keys = issue_keys(rotated.api_keys_path)
    app = create_app(ensure_redis(home_settings), rotated)
    with TestClient(app) as client:
        client.get("/v1/customers/2/offers", headers={"X-API-Key": keys["sales"]})
    written = list(read_file(app.state.trail.path_for(dt.datetime.now(dt.UTC).date().isoformat())))
    assert {r["kid"] for r in written} == {key_id(new.encode())}
    assert verify(rotated.audit_dir, load_keys(rotated.audit_key_path, create=False))[1] == []
    rotated.audit_key_path.write_text(f"{new}\n")  # the old key dropped too early: its files no longer verify
    _, problems, _ = verify(rotated.audit_dir, load_keys(rotated.audit_key_path, create=False))
    assert any(p.startswith(f"{LEDGER} line 1: its content does not match its MAC") for p in problems)
