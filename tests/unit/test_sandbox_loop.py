"""The closed loop in the sandbox bank (issue 24, point 3): the day after a list is handed, the bank
contacts its members (within its channels' capacities) and tracks its control without contacting
it; a contact adds to what customers buy anyway; responses arrive days after the contact."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from sandbox.bank import Bank
from sandbox.executions import Executions
from sandbox.responses import MAX_RESPONSE_DELAY_DAYS

B = dt.date(2026, 11, 26)  # the business date of the list
C = B + dt.timedelta(days=1)  # the day the bank works on it


def _bank(tmp_path, size: int = 60_000) -> Bank:
    return Bank(size, seed=7, executions=Executions(tmp_path / "executions"))


def _responses(bank: Bank, day: dt.date, as_of: dt.date) -> pd.DataFrame:
    ids = np.arange(1, bank.size + 1)
    return pd.DataFrame(bank.campaign_responses(ids, day, as_of=as_of))


def test_without_a_list_the_bank_runs_its_own_random_campaigns(tmp_path):
    bank, plain = _bank(tmp_path, 3000), Bank(3000, seed=7)
    ids = np.arange(1, 3001)
    assert bank.campaign_responses(ids, C) == plain.campaign_responses(ids, C)
    assert all(r["contacted"] for r in plain.campaign_responses(ids, C))


def test_the_day_after_a_list_the_bank_contacts_its_members_and_tracks_its_control(tmp_path):
    bank = _bank(tmp_path, 5000)
    members = pd.DataFrame(
        {
            "customer_id": [10, 10, 11, 12, 4000],
            "campaign_id": ["CMP-PL-PREAPP", "CMP-CC-NEW", "CMP-PL-PREAPP", "CMP-TD-RATE", "CMP-MORTGAGE"],
            "channel": ["SMS", "EMAIL", "PHONE", "SMS", "EMAIL"],
            "contact": [True, True, False, True, True],
        }
    )
    bank.executions.save(B, members)
    got = _responses(bank, C, C + dt.timedelta(days=MAX_RESPONSE_DELAY_DAYS))
    assert sorted(zip(got["customer_id"], got["campaign_id"], got["channel"], got["contacted"], strict=True)) == sorted(
        zip(members["customer_id"], members["campaign_id"], members["channel"], members["contact"], strict=True)
    )
    assert got["response_id"].is_unique and (got["contact_date"] == C.isoformat()).all()
    # the control member bought or not, never declined: it was not asked
    assert got.loc[~got["contacted"], "response"].isin(["ACCEPTED", "NO_ANSWER"]).all()
    assert bank.count_campaign_responses(np.arange(1, 5001), [C]) == len(members)
    # the day is worked: its list is history. The same list again is a rerun; another is refused
    assert bank.executions.save(B, members) is True
    assert bank.executions.save(B, members.iloc[:2]) is False
    assert len(_responses(bank, C, C)) == len(members)


def test_a_list_replaces_the_one_handed_before_until_the_bank_works_its_day(tmp_path):
    """A rerun of the live date hands its list again: replaced while its day is ahead. Once the feed
    has served that day, or any later one, the list it had (or its absence) is history."""
    bank = _bank(tmp_path, 5000)
    members = pd.DataFrame({"customer_id": [10, 11, 12], "campaign_id": "CMP-PL-PREAPP", "channel": "SMS",
                            "contact": [True, True, False]})  # fmt: skip
    assert bank.executions.save(B, members) and bank.executions.save(B, members.iloc[:2])
    assert len(_responses(bank, C, C)) == 2
    later = C + dt.timedelta(days=5)
    bank.count_campaign_responses(np.arange(1, 5001), [later])  # a count serves the day too
    assert bank.executions.served_until() == later
    assert bank.executions.save(later - dt.timedelta(days=2), members) is False  # its day was worked without it
    assert len(_responses(bank, later - dt.timedelta(days=1), later)) > len(members)  # the bank's own campaigns
    assert bank.executions.save(later, members) is True  # tomorrow is still ahead


def test_a_channel_contacts_no_more_than_its_daily_capacity_in_the_list_s_order(tmp_path):
    bank = _bank(tmp_path, 5000)
    phone = pd.DataFrame({"customer_id": np.arange(1, 1601), "campaign_id": "CMP-PL-PREAPP", "channel": "PHONE",
                          "contact": True})  # fmt: skip
    phone.loc[1599, "contact"] = False  # the control is tracked, whatever the capacity
    bank.executions.save(B, phone)
    got = _responses(bank, C, C)
    contacted = got[got["contacted"]]["customer_id"]
    assert len(contacted) == 1500 and contacted.max() == 1500  # PHONE dials 1,500 a day (contact_policies)
    assert got[~got["contacted"]]["customer_id"].tolist() == [1600]


def test_responses_arrive_within_days_and_a_contact_adds_what_the_oracle_says(tmp_path):
    bank = _bank(tmp_path)
    campaign = "CMP-PL-PREAPP"
    ids = np.arange(1, bank.size + 1)
    bank.executions.save(B, pd.DataFrame({"customer_id": ids, "campaign_id": campaign, "channel": "SMS",
                                          "contact": ids % 2 == 0}))  # fmt: skip
    by_day = {k: _responses(bank, C, C + dt.timedelta(days=k)).set_index("response_id")["response"]
              for k in range(MAX_RESPONSE_DELAY_DAYS + 2)}  # fmt: skip
    answered = [(by_day[k] != "NO_ANSWER").mean() for k in sorted(by_day)]
    assert answered[0] < answered[1] < answered[2] < answered[3] == answered[4]  # arrive over days, then final
    for k in range(MAX_RESPONSE_DELAY_DAYS + 1):  # an answer, once arrived, never changes
        arrived = by_day[k] != "NO_ANSWER"
        assert (by_day[k][arrived] == by_day[k + 1][arrived]).all()
    final = _responses(bank, C, C + dt.timedelta(days=MAX_RESPONSE_DELAY_DAYS))
    accepted = (final["response"] == "ACCEPTED").to_numpy()
    treated = final["contacted"].to_numpy()
    p1, p0 = (
        bank.true_propensity(final["customer_id"], campaign),
        bank.organic_propensity(final["customer_id"], campaign),
    )
    assert accepted[treated].mean() == pytest.approx(p1[treated].mean(), abs=0.01)
    assert accepted[~treated].mean() == pytest.approx(p0[~treated].mean(), abs=0.01)
    uplift = bank.true_uplift(final["customer_id"], campaign)
    assert (uplift > 0).all() and accepted[treated].mean() - accepted[~treated].mean() == pytest.approx(
        uplift.mean(), abs=0.015
    )
