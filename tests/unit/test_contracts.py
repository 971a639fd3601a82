"""The contracts of core-banking records: what the extraction quarantines, and why."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from ingestion.extract import _quarantine_entry
from models.core_banking import Account, Customer

GOOD = {
    "customer_id": 12,
    "document_type": "DNI",
    "document_number": "41842487",
    "full_name": "ROSA QUISPE MAMANI",
    "birth_date": "1985-03-02",
    "region": "LIMA",
    "district": "ATE",
    "segment": "MASIVO",
    "income_band": "B2",
    "consent_sms": True,
    "consent_email": False,
    "consent_phone": True,
    "consent_push": False,
    "consent_social": False,
    "created_on": "2019-01-01",
    "updated_on": "2026-01-01",
}


def test_a_good_customer_passes():
    assert Customer.model_validate(GOOD).document_number == "41842487"


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"document_number": "4184248"}, "document_number", "8 digits for DNI"),
        ({"document_type": "RUC", "document_number": "41842487"}, "document_number", "11 digits for RUC"),
        ({"segment": "VIP"}, "segment", "Input should be"),
        ({"birth_date": "02/03/1985"}, "birth_date", "date"),
        ({"customer_id": None}, "customer_id", "integer"),
    ],
)
def test_each_broken_field_is_quarantined_with_its_name_and_reason(change, field, reason):
    raw = {**GOOD, **change}
    with pytest.raises(ValidationError) as exc:
        Customer.model_validate(raw)
    entry = _quarantine_entry("customers", dt.date(2026, 11, 27), 3, "customer_id", raw, exc.value)
    assert entry["field"] == field
    assert reason in entry["reason"]
    assert entry["page"] == 3 and entry["entity"] == "customers"
    assert '"full_name": "ROSA QUISPE MAMANI"' in entry["raw_payload"]  # nothing good is lost


def test_unknown_currency_and_missing_field_break_the_account_contract():
    base = {"account_id": 120, "customer_id": 12, "product": "SAVINGS", "currency": "PEN", "balance": "10.50",
            "opened_on": "2020-01-01", "status": "ACTIVE", "updated_on": "2026-11-27"}  # fmt: skip
    Account.model_validate(base)
    with pytest.raises(ValidationError, match="currency"):
        Account.model_validate({**base, "currency": "EUR"})
    with pytest.raises(ValidationError, match="balance"):
        Account.model_validate({k: v for k, v in base.items() if k != "balance"})
