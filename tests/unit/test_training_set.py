"""Which feature dates the point-in-time training set lacks, and which row each contact gets."""

from __future__ import annotations

import datetime as dt

import pytest

from crm.settings import Settings
from crm.warehouse import warehouse
from ml.features import NUMERIC_FEATURES
from ml.training_set import TrainingWindow, feature_dates_missing, training_frame

D = dt.date(2026, 11, 27)


@pytest.fixture()
def con(tmp_path):
    """A session on a warehouse of the interface (DuckDB in ``tmp_path``) with the two marts read."""
    wh = warehouse(Settings(home=tmp_path))
    wh.execute("create schema marts")
    wh.execute(
        "create table marts.fct_campaign_contacts (contact_id varchar(20), customer_id bigint, "
        "campaign_id varchar(20), contact_date date, is_accepted integer, response_window_days integer)"
    )
    wh.execute("create schema raw")
    wh.execute("create table raw._coverage (entity varchar(40), day date, _business_date date)")
    numeric = ", ".join(f"{c} double precision" for c in NUMERIC_FEATURES)
    wh.execute(
        f"create table marts.customer_features (as_of_date date, customer_id bigint, segment varchar(20), "
        f"income_band varchar(20), region varchar(20), {numeric})"
    )
    with wh.begin() as session:
        yield session


def _contact(con, n: int, day: dt.date, window: int = 30, accepted: int = 0, customer: int = 1, loaded_by=D):
    """A contact on ``day``, whose day raw last loaded in the run of ``loaded_by`` (None: not loaded)."""
    con.execute("insert into marts.fct_campaign_contacts values (:id, :customer, 'CMP-A', :day, :accepted, :window)",
                {"id": f"R{n}", "customer": customer, "day": day, "accepted": accepted, "window": window})  # fmt: skip
    if loaded_by and not con.scalar("select count(*) from raw._coverage where day = :day", {"day": day}):
        con.execute(
            "insert into raw._coverage values ('campaign_responses', :day, :run)", {"day": day, "run": loaded_by}
        )


def _features(con, day: dt.date, customer: int = 1, age: float = 40):
    values = {c: age if c == "age" else 0.0 for c in NUMERIC_FEATURES}
    con.execute(
        "insert into marts.customer_features values (:day, :customer, 'MASIVO', 'B2', 'LIMA', "
        f"{', '.join(f':{c}' for c in values)})",
        {"day": day, "customer": customer, **values},
    )


def test_missing_dates_sit_on_the_weekly_grid_just_before_each_uncovered_contact(con):
    _contact(con, 1, D - dt.timedelta(days=40))  # grid: D-1-7k just before it is D-43 (k=6)
    _contact(con, 2, D - dt.timedelta(days=36))  # D-36 -> k=6 as well: one date serves both
    _contact(con, 3, D - dt.timedelta(days=2), window=30)  # its day is still re-read: needs nothing
    _contact(con, 4, D - dt.timedelta(days=60))
    _features(con, D - dt.timedelta(days=61))  # the daily run of the day before contact 4
    assert feature_dates_missing(con, TrainingWindow(D)) == [D - dt.timedelta(days=43)]
    assert feature_dates_missing(con, TrainingWindow(D, window_days=30)) == []


def test_each_contact_gets_the_latest_features_before_it_never_after(con):
    day = D - dt.timedelta(days=50)
    _contact(con, 1, day, accepted=1)
    _features(con, day - dt.timedelta(days=6), age=30)
    _features(con, day - dt.timedelta(days=2), age=31)  # the latest before the contact
    _features(con, day, age=99)  # the contact's own day: already after the call
    _features(con, day + dt.timedelta(days=1), age=98)
    df = training_frame(con, TrainingWindow(D))
    assert df[["age", "accepted"]].values.tolist() == [[31.0, 1]]
    assert (df["contact_date"] - df["feature_date"]).dt.days.tolist() == [2]


def test_features_older_than_the_step_are_not_used(con):
    day = D - dt.timedelta(days=50)
    _contact(con, 1, day)
    _features(con, day - dt.timedelta(days=8))
    assert training_frame(con, TrainingWindow(D)).empty
    assert feature_dates_missing(con, TrainingWindow(D)) == [D - dt.timedelta(days=1 + 7 * 8)]


def test_a_contact_is_learnt_from_once_the_run_that_last_rereads_its_day_loaded_it(con):
    """The daily delta re-reads the last CRM_LATE_ARRIVAL_DAYS (3) days: a contact's outcome can change
    until the run 3 days after it and never after, whatever its campaign's response window (decision
    0029)."""
    for n, age in enumerate((2, 3, 10, 29), start=1):
        day = D - dt.timedelta(days=age)
        _contact(con, n, day, window=30, accepted=n % 2)
        _features(con, day - dt.timedelta(days=1))
    assert sorted(training_frame(con, TrainingWindow(D, late_arrival_days=3))["contact_id"]) == ["R2", "R3", "R4"]
    assert sorted(training_frame(con, TrainingWindow(D, late_arrival_days=10))["contact_id"]) == ["R3", "R4"]


def test_after_days_without_a_run_the_days_not_read_for_the_last_time_wait(con):
    """crm_daily last succeeded on D - 5: the days it read are final up to D - 8, whatever the date
    asked for; a contact whose day raw never loaded is not a refusal either."""
    last_run = D - dt.timedelta(days=5)
    for n, age in enumerate((6, 7, 8, 9), start=1):
        day = D - dt.timedelta(days=age)
        _contact(con, n, day, accepted=0, loaded_by=last_run)
        _features(con, day - dt.timedelta(days=1))
    _contact(con, 5, D - dt.timedelta(days=20), loaded_by=None)
    _features(con, D - dt.timedelta(days=21))
    assert sorted(training_frame(con, TrainingWindow(D))["contact_id"]) == ["R3", "R4"]


def test_a_day_made_final_by_a_later_run_is_not_known_to_an_earlier_training_date(con):
    """Training as of D - 2 after the runs up to D: the day D - 4 was read for the last time by the run of
    D - 1, so on D - 2 its outcome could still change and it is not learnt from; D - 6 (final by the
    run of D - 3) is."""
    for n, age in enumerate((4, 6), start=1):
        day = D - dt.timedelta(days=age)
        _contact(con, n, day, loaded_by=day + dt.timedelta(days=3))
        _features(con, day - dt.timedelta(days=1))
    assert sorted(training_frame(con, TrainingWindow(D))["contact_id"]) == ["R1", "R2"]
    assert sorted(training_frame(con, TrainingWindow(D - dt.timedelta(days=2)))["contact_id"]) == ["R2"]


def test_the_late_arrival_days_follow_the_setting(monkeypatch):
    from ml.train import TrainingConfig

    monkeypatch.setenv("CRM_LATE_ARRIVAL_DAYS", "6")
    assert TrainingConfig().window(D, Settings()).late_arrival_days == 6
