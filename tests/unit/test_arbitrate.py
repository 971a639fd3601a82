from __future__ import annotations

import pandas as pd

from ml.arbitrate import Policy, arbitrate


def _pairs(rows, **extra):
    df = pd.DataFrame(rows, columns=["customer_id", "campaign_id", "propensity", "value_pen", "priority_weight"])
    return df.assign(**extra)


def _policy(max_offers=3, **kw):
    return Policy(max_offers=max_offers, **kw)


def test_at_most_n_offers_per_customer_best_first():
    pairs = _pairs([(1, f"C{i}", 0.1 * i, 100.0, 1.0) for i in range(1, 6)])
    out = arbitrate(pairs, _policy(3))
    assert list(out["campaign_id"]) == ["C5", "C4", "C3"]
    assert list(out["rank"]) == [1, 2, 3]


def test_priority_is_propensity_times_value_times_weight():
    pairs = _pairs([(1, "LOW_P_HIGH_VALUE", 0.05, 2000.0, 1.0), (1, "HIGH_P_LOW_VALUE", 0.5, 100.0, 1.5)])
    out = arbitrate(pairs, _policy(1))
    assert list(out["campaign_id"]) == ["LOW_P_HIGH_VALUE"]
    assert out["priority"].iat[0] == 100.0


def test_campaign_capacity_goes_to_the_best_customers_and_others_get_their_next_offer():
    pairs = _pairs([(1, "A", 0.9, 100.0, 1.0), (2, "A", 0.8, 100.0, 1.0), (2, "B", 0.1, 100.0, 1.0)])
    out = arbitrate(pairs, _policy(1, campaign_capacity={"A": 1}))
    assert out.set_index("customer_id")["campaign_id"].to_dict() == {1: "A", 2: "B"}


def test_a_full_channel_falls_back_to_the_next_consented_one_and_says_so():
    pairs = _pairs([(c, "A", 0.5, 100.0, 1.0) for c in range(1, 7)], consent_phone=1, consent_email=1, consent_sms=0)
    pairs.loc[pairs["customer_id"] == 6, "consent_email"] = 0  # phone only
    policy = _policy(3, channel_capacity={"PHONE": 4}, campaign_channels={"A": ("PHONE", "SMS", "EMAIL")})
    out = arbitrate(pairs, policy).set_index("customer_id")
    assert list(out["channel"]) == ["PHONE"] * 4 + ["EMAIL"]  # ties broken by customer id; 6 has no channel left
    assert out.loc[1, "channel_reason"] == "PHONE: the campaign's preferred channel the customer consented to"
    assert out.loc[5, "channel_reason"] == "EMAIL: PHONE was at its daily capacity"


def test_the_frequency_cap_counts_past_contacts_and_todays_offers():
    pairs = _pairs([(1, "A", 0.9, 100.0, 1.0), (1, "B", 0.8, 100.0, 1.0), (2, "A", 0.5, 100.0, 1.0)],
                   contacts_30d_phone=[1, 1, 2], consent_phone=1, consent_sms=1)  # fmt: skip
    policy = _policy(3, max_contacts_30d={"PHONE": 2}, campaign_channels={"A": ("PHONE", "SMS"), "B": ("PHONE",)})
    out = arbitrate(pairs, policy)
    got = {(r.customer_id, r.campaign_id): r.channel for r in out.itertuples()}
    # customer 1: one past phone contact + today's A on the phone reach the cap of 2, so B (phone only) is dropped
    assert got == {(1, "A"): "PHONE", (2, "A"): "SMS"}
    assert out.set_index("customer_id").loc[2, "channel_reason"] == (
        "SMS: the customer reached the PHONE limit of 2 contacts in 30 days"
    )


def test_no_channel_without_consent():
    pairs = _pairs([(1, "A", 0.9, 100.0, 1.0)], consent_sms=0, consent_email=0)
    assert arbitrate(pairs, _policy(3, campaign_channels={"A": ("SMS", "EMAIL")})).empty


def test_same_inputs_same_assignment_whatever_the_row_order():
    rows = [(c, f"C{k}", ((c * 7 + k * 3) % 10) / 10, 100.0, 1.0) for c in range(1, 50) for k in range(5)]
    policy = _policy(3, campaign_capacity={"C1": 10}, channel_capacity={"SMS": 100, "EMAIL": 20},
                     campaign_channels={f"C{k}": ("SMS", "EMAIL") for k in range(5)})  # fmt: skip
    a = arbitrate(_pairs(rows), policy)
    b = arbitrate(_pairs(rows[::-1]), policy)
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 120 and (a.groupby("campaign_id").size()["C1"] == 10)
