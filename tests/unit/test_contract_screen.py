"""The extraction checks pages on arrow (``ingestion.contract``) and lets pydantic decide only the
records its screen does not pass: whatever the records, a page must land and quarantine exactly
what pydantic alone lands and quarantines, with the same errors."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from ingestion.contract import Unscreenable, _iso_date, check_page, check_page_with_pydantic, checker, screen_for
from ingestion.extract import _quarantine_entry
from models.core_banking import ENTITIES, PRIMARY_KEYS
from sandbox.faults import BAD_KINDS, break_record

D = dt.date(2026, 11, 27)
GOOD = {
    "customers": {"customer_id": 12, "document_type": "DNI", "document_number": "41842487",
                  "full_name": "ROSA QUISPE MAMANI", "birth_date": "1985-03-02", "region": "LIMA", "district": "ATE",
                  "segment": "MASIVO", "income_band": "B2", "consent_sms": True, "consent_email": False,
                  "consent_phone": True, "consent_push": False, "consent_social": False, "created_on": "2019-01-01",
                  "updated_on": "2026-01-01"},
    "accounts": {"account_id": 120, "customer_id": 12, "product": "SAVINGS", "currency": "PEN", "balance": "10.50",
                 "opened_on": "2020-01-01", "status": "ACTIVE", "updated_on": "2026-11-27"},
    "transactions": {"transaction_id": "T0207830000048810", "account_id": 120, "customer_id": 12,
                     "booking_date": "2026-11-26", "type": "POS_PURCHASE", "merchant_category": "GROCERY",
                     "amount": "-98.62", "currency": "PEN"},
    "campaign_responses": {"response_id": "R020783000000024", "customer_id": 12, "campaign_id": "CMP-CC-NEW",
                           "channel": "SMS", "contact_date": "2026-11-26", "response": "DECLINED",
                           "contacted": False, "list_date": "2026-11-25"},
}  # fmt: skip
MISSING = object()

# values of every JSON type that a contract may meet, near misses included
JUNK_VALUES = [None, True, False, 0, 1, -1, 12.0, 12.5, -0.0, float("inf"), "", " ", "12", "x", "١٢٣", [1],
               {"value": "10.00"}, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 10**30]  # fmt: skip
ODD_DATES = ["0000-01-01", "0001-01-01", "9999-12-31", "2026-02-29", "2024-02-29", "2026-02-30", "2026-13-01",
             "2026-00-10", "20261127", "2026/11/27", "٢٠٢٦-١١-٢٧"]  # fmt: skip
JUNK = st.sampled_from(JUNK_VALUES)
BY_KIND = {
    "int": st.one_of(st.integers(-(2**65), 2**65), st.integers(-3, 3), st.floats()),
    "bool": st.sampled_from([True, False, 0, 1, 2, 1.0, "true", "false", "yes", "off", "T", "perhaps"]),
    "str": st.one_of(st.text(max_size=12), st.text(alphabet="0123456789١٢٣²", max_size=12)),
    "date": st.one_of(
        st.dates().map(dt.date.isoformat),
        st.datetimes().map(dt.datetime.isoformat),
        st.from_regex(r"-?[0-9]{1,5}-[0-9]{1,2}-[0-9]{1,3}(T00:00(:00)?Z?| )?", fullmatch=True),
        st.sampled_from(ODD_DATES),
        st.integers(0, 2_000_000_000),
    ),
    "decimal": st.one_of(
        st.decimals(allow_nan=True, allow_infinity=True).map(str),
        st.decimals(places=2, min_value=-(10**15), max_value=10**15).map(str),
        st.from_regex(r"[+-]?[0-9]{0,17}(\.[0-9]{0,4})?([eE][+-]?[0-9]{1,2})?", fullmatch=True),
        st.sampled_from(["1_000.00", " 1.5", "1.5 ", "-0", "-0.00", "10.500", "1.005", "0E-7", "١٢.٥", ".5", "5."]),
        st.floats(),
        st.integers(),
    ),
}


def _kind(model: type[BaseModel], name: str) -> str:
    node = model.__pydantic_core_schema__["schema"]["fields"][name]["schema"]
    while node["type"] in ("function-after", "nullable", "default"):
        node = node["schema"]
    return node["type"]


def _values(entity: str, name: str) -> st.SearchStrategy:
    model, good = ENTITIES[entity], GOOD[entity][name]
    kind = _kind(model, name)
    if kind == "literal":
        expected = model.__pydantic_core_schema__["schema"]["fields"][name]["schema"]
        while "expected" not in expected:
            expected = expected["schema"]
        near = st.sampled_from(expected["expected"]).flatmap(
            lambda v: st.sampled_from([v, v.lower(), f" {v}", f"{v} ", v[:-1]])
        )
        special = st.one_of(near, st.text(max_size=8))
    elif name == "document_number":
        special = st.one_of(st.from_regex(r"[0-9]{6,12}", fullmatch=True), st.sampled_from(["١٢٣٤٥٦٧٨", "4184248O"]))
    else:
        special = BY_KIND[kind]
    # mostly the good value, so that whole records pass and pages mix good and broken records
    return st.one_of(st.just(good), st.just(good), st.just(good), st.just(good), special, JUNK, st.just(MISSING))


def _records(entity: str) -> st.SearchStrategy:
    fields = {name: _values(entity, name) for name in ENTITIES[entity].model_fields}
    record = st.fixed_dictionaries(fields).map(lambda r: {k: v for k, v in r.items() if v is not MISSING})
    return st.one_of(record, record, record, record, st.just(GOOD[entity]), st.sampled_from(["x", 5, None, [1]]))


def _entry(entity: str, pair) -> tuple:
    raw, exc = pair
    errors = [(e["type"], e["loc"], e["msg"]) for e in exc.errors()]
    return raw, errors, _quarantine_entry(entity, D, 0, PRIMARY_KEYS[entity], raw, exc)


def _same_as_pydantic(entity: str, page: list) -> None:
    model = ENTITIES[entity]
    screened, reference = check_page(screen_for(model), page), check_page_with_pydantic(model, page)
    assert screened.landed.equals(reference.landed), (screened.landed.to_pylist(), reference.landed.to_pylist())
    assert [_entry(entity, b) for b in screened.broken] == [_entry(entity, b) for b in reference.broken]


@pytest.mark.parametrize("entity", sorted(ENTITIES))
def test_every_contract_is_screened(entity):
    """No entity falls back to pydantic for every record (the extraction would be as slow as before)."""
    screen = screen_for(ENTITIES[entity])
    assert [f.name for f in screen.fields] == list(ENTITIES[entity].model_fields)


@pytest.mark.parametrize("entity", sorted(ENTITIES))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_a_screened_page_lands_and_quarantines_what_pydantic_does(entity, data):
    _same_as_pydantic(entity, data.draw(st.lists(_records(entity), max_size=25), label="page"))


@settings(max_examples=300, deadline=None)
@given(
    text=st.one_of(BY_KIND["date"].filter(lambda v: isinstance(v, str)), st.text("0123456789-:T +Z\x00", max_size=12))
)
def test_a_date_passes_the_screen_only_as_pydantic_reads_it(text):
    """A column whose every value arrow casts takes the fast path (the cast itself): one value
    alone always does when it casts, so each odd string meets it here."""
    if _iso_date(pa.array([text])).to_pylist() == [True]:
        assert TypeAdapter(dt.date).validate_python(text) == pa.array([text]).cast(pa.date32()).to_pylist()[0]


@pytest.mark.parametrize("entity", sorted(ENTITIES))
def test_every_way_the_sandbox_breaks_a_record_is_caught(entity):
    good = [dict(GOOD[entity], **{PRIMARY_KEYS[entity]: GOOD[entity][PRIMARY_KEYS[entity]]})] * 3
    page = good + [break_record(GOOD[entity], kind) for kind in BAD_KINDS[entity]] + good
    checked = check_page(screen_for(ENTITIES[entity]), page)
    assert checked.landed.num_rows == 6 and len(checked.broken) == len(BAD_KINDS[entity])
    _same_as_pydantic(entity, page)


class _Pattern(BaseModel):
    model_config = ConfigDict(extra="ignore")
    code: str = Field(pattern="^[A-Z]+$")


class _Alias(BaseModel):
    code: str = Field(validation_alias="Code")


class _Validated(BaseModel):
    code: str

    @field_validator("code")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True)
    day: dt.date


def test_a_none_passes_the_screen_only_where_a_missing_value_would_be_none():
    """``str | None`` without a default is required (missing: "Field required") though None is
    allowed; arrow reads both as null, so pydantic must decide them."""

    class Note(BaseModel):
        note: str | None
        tag: str | None = None

    screen = screen_for(Note)
    page = [{"note": "a"}, {"note": None}, {"tag": "b"}]
    checked = check_page(screen, page)
    assert checked.landed.column("note").to_pylist() == ["a", None]
    assert [(raw, exc.errors()[0]["type"]) for raw, exc in checked.broken] == [({"tag": "b"}, "missing")]


@pytest.mark.parametrize("model", [_Pattern, _Alias, _Validated, _Strict])
def test_a_contract_the_screen_does_not_know_is_checked_by_pydantic_alone(model):
    """A constraint, alias, validator or config the screen has no check for must not let records
    through unchecked: the model is refused, and its pages go through pydantic."""
    with pytest.raises(Unscreenable):
        screen_for(model)
    assert checker(model).func is check_page_with_pydantic
