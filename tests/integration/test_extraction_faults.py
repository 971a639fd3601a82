"""Extraction from a sandbox bank that misbehaves on purpose (real sandbox process, real HTTP):
5xx answers, 429 with Retry-After, slow answers, connections dropped mid-body, duplicates across
pages and records that break the contract, all at once. The oracle says what must land and what
must be quarantined."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from waits import wait_until

from crm.settings import REPO_ROOT
from ingestion.extract import QuarantineLimitExceeded, ReconciliationError, extract_entity
from ingestion.landing import partition_path
from ingestion.plan import window
from sandbox.faults import Faults
from sandbox.oracle import Oracle, id_checksum

D = dt.date(2026, 11, 20)
CUSTOMERS, SEED = 400, 5
EVERY_FAULT = (
    "server_error=0.08,throttle=0.03,slow=0.04,drop=0.06,duplicate=0.15,bad_record=0.03,slow_s=1.0,retry_after_s=1,"
    "token_ttl_s=3"  # tokens expire mid-extraction: the client must renew them
)
ENTITY_KEYS = {"customers": "customer_id", "accounts": "account_id", "transactions": "transaction_id",
               "campaign_responses": "response_id"}  # fmt: skip


def _settings(settings, name: str, faults: str, **extra):
    return settings.replace(
        home=settings.home / name,
        customers=CUSTOMERS,
        seed=SEED,
        faults=faults,
        page_size=100,
        transaction_lookback_days=20,
        response_lookback_days=120,
        max_quarantine_share=0.1,
        api_max_retries=8,
        api_timeout_s=0.6,  # slow answers (1 s) time out: the client must retry them
        **extra,
    )


def _truth(s, entity: str, faults: str):
    span = window(entity, D, s)
    params = {"as_of": D} if span is None else {"date_from": span[0], "date_to": span[1]}
    return Oracle(CUSTOMERS, SEED, Faults.parse(faults)).truth(entity, **params)


@pytest.fixture(scope="module")
def faulty(settings):
    s = _settings(settings, "faulty", EVERY_FAULT)
    s.ensure_dirs()
    yield s
    from crm.services import stop_sandbox

    stop_sandbox(s)


class _Remember(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_with_every_fault_on_the_landing_is_exactly_the_oracles(faulty):
    retries = _Remember()
    client_log = logging.getLogger("crm.integration_api")
    client_log.addHandler(retries)
    level, client_log.level = client_log.level, logging.INFO
    duplicates = 0
    for entity, key in ENTITY_KEYS.items():
        result = extract_entity(entity, D, faulty)
        truth = _truth(faulty, entity, EVERY_FAULT)
        landed = pq.read_table(partition_path(faulty.landing_dir, entity, D)).column(key).to_pylist()
        assert (len(landed), id_checksum(landed)) == (truth.good, truth.good_checksum), entity
        assert len(set(landed)) == len(landed), entity
        qpath = partition_path(faulty.quarantine_dir, entity, D)
        quarantined = pq.read_table(qpath).column("record_key").to_pylist() if truth.bad else []
        assert sorted(quarantined) == sorted(truth.bad_kinds), entity
        assert (result.reported, result.landed, result.quarantined) == (truth.records, truth.good, truth.bad)
        duplicates += result.duplicates
    client_log.removeHandler(retries)
    client_log.setLevel(level)
    assert duplicates > 0  # duplicates were served, and dropped
    retried = " ".join(retries.messages)
    for fault in ("status 503", "status 429", "RemoteProtocolError", "ReadTimeout", "token was refused"):
        assert fault in retried


def test_each_kind_of_broken_record_has_its_own_reason(faulty):
    expected = {
        "bad_dni": ("document_number", "value_error", "8 digits for DNI"),
        "unknown_currency": ("currency", "literal_error", "'PEN' or 'USD'"),
        "missing_field": (None, "missing", "Field required"),
        "wrong_type": (None, None, "should be"),
    }
    seen = set()
    for entity in ENTITY_KEYS:
        truth = _truth(faulty, entity, EVERY_FAULT)
        if not truth.bad:
            continue
        rows = pq.read_table(partition_path(faulty.quarantine_dir, entity, D)).to_pylist()
        assert rows, entity
        for row in rows:
            kind = truth.bad_kinds[row["record_key"]]
            field, error_type, words = expected[kind]
            assert words in row["reason"], (kind, row)
            if field:
                assert row["field"] == field, (kind, row)
            if error_type:
                assert row["error_type"] == error_type, (kind, row)
            assert row["entity"] == entity and row["business_date"] == D and row["page"] >= 0
            assert json.loads(row["raw_payload"])[ENTITY_KEYS[entity]] is not None
            seen.add(kind)
    assert seen == set(expected)


def test_an_extraction_killed_half_way_resumes_and_lands_the_same(faulty):
    entity = "transactions"
    path = partition_path(faulty.landing_dir, entity, D)
    path.unlink(missing_ok=True)
    checkpoint = path.parent / "_staging" / "checkpoint.json"
    env = {**os.environ, "CRM_HOME": str(faulty.home)}
    code = (
        "import datetime as dt, sys; from crm.settings import get_settings; "
        "from ingestion.extract import extract_entity; "
        f"s = get_settings().replace(customers={CUSTOMERS}, seed={SEED}, "
        f"faults={EVERY_FAULT!r}, page_size=100, transaction_lookback_days=20, api_max_retries=8); "
        f"extract_entity({entity!r}, dt.date.fromisoformat({D.isoformat()!r}), s)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO_ROOT)

    def pages_landed() -> int:
        pages = json.loads(checkpoint.read_text())["pages"] if checkpoint.exists() else 0
        assert pages >= 10 or proc.poll() is None, "the extraction ended before it could be killed"
        return pages

    wait_until(pages_landed, until=lambda pages: pages >= 10, timeout=120, message="the checkpoint to count 10 pages")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    landed_pages = json.loads(checkpoint.read_text())["pages"]
    assert not path.exists() and landed_pages >= 10

    result = extract_entity(entity, D, faulty)
    assert result.resumed_from_page == landed_pages
    truth = _truth(faulty, entity, EVERY_FAULT)
    landed = pq.read_table(path).column("transaction_id").to_pylist()
    assert (len(landed), id_checksum(landed)) == (truth.good, truth.good_checksum)
    assert not checkpoint.parent.exists()  # the staging folder is gone once the partition is landed


def test_records_the_api_loses_fail_the_reconciliation_with_the_numbers(settings):
    s = _settings(settings, "lossy", "omit=0.01")
    s.ensure_dirs()
    truth = _truth(s, "accounts", "")
    try:
        with pytest.raises(ReconciliationError) as err:
            extract_entity("accounts", D, s)
    finally:
        from crm.services import stop_sandbox

        stop_sandbox(s)
    message = str(err.value)
    assert f"accounts for {D} does not reconcile: the API reports {truth.records} records" in message
    assert "landed" in message and "quarantined" in message


def test_too_many_broken_records_fail_the_run_naming_the_field(settings):
    s = _settings(settings, "broken", "bad_record=0.2").replace(max_quarantine_share=0.01)
    s.ensure_dirs()
    try:
        with pytest.raises(
            QuarantineLimitExceeded, match=r"customers for 2026-11-20: \d+ of \d+ records broke the contract"
        ):
            extract_entity("customers", D, s)
    finally:
        from crm.services import stop_sandbox

        stop_sandbox(s)
    assert partition_path(s.quarantine_dir, "customers", D).exists()  # kept for whoever looks into it
    assert partition_path(s.landing_dir, "customers", D).exists()  # and the good records are not lost


def test_a_retry_after_of_an_hour_is_capped_and_the_extraction_fails_instead_of_hanging(settings):
    """A gateway throttling every call with Retry-After: 3600 fails the extraction after the retries,
    each wait capped at CRM_API_MAX_RETRY_AFTER_S, instead of holding the task for hours."""
    import threading

    from crm.integration_api import IntegrationApiError

    s = _settings(settings, "throttled", "throttle=1.0,retry_after_s=3600").replace(api_max_retries=2, api_max_retry_after_s=0.2)  # fmt: skip
    s.ensure_dirs()
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            extract_entity("customers", D, s)
        except BaseException as error:
            outcome.append(error)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=120)  # with the sandbox's hour honoured, it would still be waiting
    try:
        assert not worker.is_alive(), "the extraction is still waiting on Retry-After"
        assert outcome and isinstance(outcome[0], IntegrationApiError), outcome
        assert "failed after 2 retries: status 429" in str(outcome[0])
    finally:
        from crm.services import stop_sandbox

        stop_sandbox(s)
