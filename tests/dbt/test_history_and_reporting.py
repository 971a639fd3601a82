"""dim_customers keeps every version of a customer (SCD type 2), and a rerun corrects one;
personal data never reaches a mart in clear; campaign_performance counts the day's assignments,
contacts and acceptances; customer_360's last contact looks back the year a fresh warehouse's load brings."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest
from dbt_warehouse import empty_raw_warehouse, run_dbt

D1 = dt.date(2026, 11, 26)
D2 = D1 + dt.timedelta(days=1)
NAME, DOCUMENT = "Rosa Quispe Mamani", "41235678"
OLD_CONTACT = D1 - dt.timedelta(days=364)
RESPONSE = "insert into raw.campaign_responses (response_id, customer_id, campaign_id, channel, contact_date, response, " \
           "_business_date) values "  # fmt: skip  # D2 - 365: outside the year a date's last contact looks back


def _customer(con, business_date: dt.date, customer_id: int, segment: str, updated_on: dt.date) -> None:
    con.execute(
        "insert into raw.customers by name select ? as customer_id, 'DNI' as document_type, ? as document_number, "
        "? as full_name, date '1980-03-01' as birth_date, 'LIMA' as region, 'MIRAFLORES' as district, "
        "? as segment, 'B3' as income_band, true as consent_sms, false as consent_email, false as consent_phone, "
        "false as consent_push, false as consent_social, date '2020-01-01' as created_on, ? as updated_on, "
        "? as _business_date",
        [customer_id, DOCUMENT if customer_id == 1 else f"7000000{customer_id}", NAME, segment, updated_on,
         business_date],
    )  # fmt: skip


def _build(directory: Path, business_date: dt.date) -> None:
    done = run_dbt(directory, "build", "--exclude", "test_type:unit", business_date=business_date)
    assert done.returncode == 0, done.stdout[-3000:]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Path:
    """Two business dates: customer 1 moves from MASIVO to PREFERENTE on D2, customer 2 does not
    change; D2 is built twice (a rerun)."""
    directory = tmp_path_factory.mktemp("history")
    with duckdb.connect(str(empty_raw_warehouse(directory))) as con:
        _customer(con, D1, 1, "MASIVO", dt.date(2026, 3, 1))
        _customer(con, D1, 2, "PREMIUM", dt.date(2025, 7, 1))
        _customer(con, D2, 1, "PREFERENTE", D2)
        _customer(con, D2, 2, "PREMIUM", dt.date(2025, 7, 1))
        for day in (D1, D2):
            con.execute("insert into raw.accounts values (10, 1, 'SAVINGS', 'PEN', 2500.00, '2020-01-01', 'ACTIVE', ?, ?), "
                        "(11, 1, 'CREDIT_CARD', 'USD', -100.00, '2021-01-01', 'ACTIVE', ?, ?)", [day, day, day, day])  # fmt: skip
        for i, (day, response) in enumerate([(D1, "ACCEPTED"), (D1, "DECLINED"), (D2, "NO_ANSWER")]):
            con.execute(
                RESPONSE + "(?, 1, 'CMP-PL-PREAPP', 'SMS', ?, ?, ?)",
                [f"R{i}", day, response, day],
            )
        # customer 2's only contact: inside the 365 days D1's load reaches, one day too old for D2's
        con.execute(
            RESPONSE + "('R9', 2, 'CMP-PL-PREAPP', 'SMS', ?, 'NO_ANSWER', ?)",
            [OLD_CONTACT, D1],
        )
        # customer 2 was in a list's control on D1: tracked, bought anyway, never contacted
        con.execute(
            "insert into raw.campaign_responses (response_id, customer_id, campaign_id, channel, contact_date, "
            "response, contacted, _business_date) values ('E2', 2, 'CMP-PL-PREAPP', 'SMS', ?, 'ACCEPTED', false, ?)",
            [D1, D1],
        )
        con.execute(
            "insert into marts.customer_campaign_assignments values "
            "(?, 1, 1, 'CMP-PL-PREAPP', 'OFR-PL-PREAPP-15K', 'SMS', 0.3, 50.0, '2027-12-31', 'm', '1', 'r', 'model', 1), "
            "(?, 2, 1, 'CMP-PL-PREAPP', 'OFR-PL-PREAPP-15K', 'SMS', 0.2, 40.0, '2027-12-31', 'm', '1', 'r', 'model', 1), "
            "(?, 1, 1, 'CMP-PL-PREAPP', 'OFR-PL-PREAPP-15K', 'SMS', 0.3, 50.0, '2027-12-31', 'm', '1', 'r', 'model', 1), "
            # customer 2 is in the control arm on D2: the offer is logged, never offered
            "(?, 2, 1, 'CMP-PL-PREAPP', 'OFR-PL-PREAPP-15K', 'SMS', 0.2, 40.0, '2027-12-31', 'm', '1', 'r', 'control', 1)",
            [D1, D1, D2, D2],
        )
    _build(directory, D1)
    _build(directory, D2)
    _build(directory, D2)
    return directory


def _rows(directory: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(directory / "warehouse.duckdb")) as con:
        return con.execute(sql).fetchall()


def test_dim_customers_keeps_each_version_with_its_validity_and_a_current_flag(warehouse):
    rows = _rows(warehouse, "select customer_id, segment, valid_from, valid_to, is_current from marts.dim_customers "
                            "order by customer_id, valid_from")  # fmt: skip
    open_end = dt.date(9999, 12, 31)
    assert rows == [
        (1, "MASIVO", dt.date(2026, 3, 1), D2, 0),
        (1, "PREFERENTE", D2, open_end, 1),  # the rerun of D2 added no version
        (2, "PREMIUM", dt.date(2025, 7, 1), open_end, 1),
    ]


def test_no_mart_holds_a_name_or_document_number_in_clear(warehouse):
    tables = _rows(warehouse, "select table_schema, table_name from information_schema.tables "
                              "where table_schema in ('marts', 'snapshots')")  # fmt: skip
    assert len(tables) >= 8
    for schema, table in tables:
        text = str(_rows(warehouse, f"select * from {schema}.{table}"))
        assert NAME not in text and DOCUMENT not in text, f"{schema}.{table}"
    shown = _rows(warehouse, "select as_of_date, full_name_masked, document_number_masked from marts.customer_360 "
                             "where customer_id = 1 order by as_of_date")  # fmt: skip
    assert shown == [(D1, "R***", "*****678"), (D2, "R***", "*****678")]


def test_campaign_performance_and_customer_360_show_the_day(warehouse):
    rows = _rows(warehouse, "select performance_date, assigned, held_out, contacted, accepted, conversion_rate, "
                            "value_pen from marts.campaign_performance where campaign_id = 'CMP-PL-PREAPP' "
                            "and channel = 'SMS' order by performance_date")  # fmt: skip
    assert [(day, a, h, c, acc, float(rate), float(value)) for day, a, h, c, acc, rate, value in rows] == [
        (OLD_CONTACT, 0, 0, 1, 0, 0.0, 0.0),  # customer 2's contact of a year before, on its own day
        (D1, 2, 0, 2, 1, 0.5, 650.0),
        (D2, 1, 1, 1, 0, 0.0, 0.0),  # the control arm's offer is held out, not served
    ]
    offers = _rows(warehouse, "select as_of_date, customer_id, offers_today, top_campaign_id, last_contact_response, "
                              "balance_savings_pen, balance_credit_card_pen from marts.customer_360 "
                              "order by as_of_date, customer_id")  # fmt: skip
    # each date as it was on that date: D1's offers and last contact (the later id of D1's two), then D2's
    assert [(d, c, n, top, last, float(s), float(cc)) for d, c, n, top, last, s, cc in offers] == [
        (D1, 1, 1, "CMP-PL-PREAPP", "DECLINED", 2500.0, -375.0),  # a USD card debt, in PEN at the reference rate
        (D1, 2, 1, "CMP-PL-PREAPP", "NO_ANSWER", 0.0, 0.0),
        (D2, 1, 1, "CMP-PL-PREAPP", "NO_ANSWER", 2500.0, -375.0),
        (D2, 2, 0, None, None, 0.0, 0.0),  # in the control arm: no offer
    ]


def test_customer_360s_last_contact_looks_back_the_365_days_a_fresh_warehouse_loads(warehouse):
    """A date's row must not depend on which older dates the warehouse also loaded: a contact 365
    days before D2 reached the warehouse only with D1's load (a fresh warehouse loading D2 never
    sees it), so D2's row shows no last contact, as D2 built alone would."""
    rows = _rows(warehouse, "select as_of_date, last_contact_date, last_contact_response from marts.customer_360 "
                            "where customer_id = 2 order by as_of_date")  # fmt: skip
    assert rows == [(D1, OLD_CONTACT, "NO_ANSWER"), (D2, None, None)]


def test_a_rerun_corrects_a_version_and_an_id_held_twice_stops_the_build(tmp_path):
    """A re-extraction that corrects a profile without a new updated_on replaces the held version
    when the date is rerun (the history skips only the versions it holds with the same profile).
    A contact id that a load brings while the warehouse already holds it on another day (outside
    the late-arrival window the load replaced) stops the build at the staging test of the load,
    before customer_360 could show that customer twice."""
    with duckdb.connect(str(empty_raw_warehouse(tmp_path))) as con:
        _customer(con, D1, 3, "MASIVO", dt.date(2026, 6, 1))
        con.execute(RESPONSE + "('R7', 3, 'CMP-PL-PREAPP', 'SMS', ?, 'DECLINED', ?)",
                    [D1 - dt.timedelta(days=200), D1])  # fmt: skip
    _build(tmp_path, D1)
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        con.execute("update raw.customers set segment = 'PREFERENTE' where customer_id = 3")
    _build(tmp_path, D1)
    assert _rows(tmp_path, "select segment, valid_from, is_current from marts.dim_customers where customer_id = 3") == [
        ("PREFERENTE", dt.date(2026, 6, 1), 1)
    ]
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        _customer(con, D2, 3, "PREFERENTE", dt.date(2026, 6, 1))
        con.execute(RESPONSE + "('R7', 3, 'CMP-PL-PREAPP', 'SMS', ?, 'ACCEPTED', ?)",
                    [D2, D2])  # fmt: skip
    done = run_dbt(tmp_path, "build", "--exclude", "test_type:unit", business_date=D2)
    assert done.returncode != 0
    failed = [line for line in done.stdout.splitlines() if "Failure in test" in line]
    assert len(failed) == 1 and "unique_in_the_load" in failed[0], done.stdout[-3000:]
    assert _rows(tmp_path, f"select count(*) from marts.customer_360 where as_of_date = date '{D2}'") == [(0,)]
