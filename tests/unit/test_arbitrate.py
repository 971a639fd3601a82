from __future__ import annotations

import pandas as pd

from ml.arbitrate import arbitrate


def _pairs(rows):
    return pd.DataFrame(
        rows, columns=["customer_id", "campaign_id", "channel", "propensity", "value_pen", "priority_weight"]
    )


def test_at_most_n_offers_per_customer_best_first():
    pairs = _pairs([(1, f"C{i}", "SMS", 0.1 * i, 100.0, 1.0) for i in range(1, 6)])
    out = arbitrate(pairs, max_offers=3, campaign_capacity={}, channel_capacity={})
    assert list(out["campaign_id"]) == ["C5", "C4", "C3"]
    assert list(out["rank"]) == [1, 2, 3]


def test_priority_is_propensity_times_value_times_weight():
    pairs = _pairs([(1, "LOW_P_HIGH_VALUE", "SMS", 0.05, 2000.0, 1.0), (1, "HIGH_P_LOW_VALUE", "SMS", 0.5, 100.0, 1.0)])
    out = arbitrate(pairs, max_offers=1, campaign_capacity={}, channel_capacity={})
    assert list(out["campaign_id"]) == ["LOW_P_HIGH_VALUE"]
    assert out["priority"].iat[0] == 100.0


def test_campaign_capacity_goes_to_the_best_customers_and_others_get_their_next_offer():
    pairs = _pairs(
        [
            (1, "A", "SMS", 0.9, 100.0, 1.0),
            (2, "A", "SMS", 0.8, 100.0, 1.0),
            (2, "B", "SMS", 0.1, 100.0, 1.0),
        ]
    )
    out = arbitrate(pairs, max_offers=1, campaign_capacity={"A": 1}, channel_capacity={})
    assert out.set_index("customer_id")["campaign_id"].to_dict() == {1: "A", 2: "B"}


def test_channel_capacity_is_respected():
    pairs = _pairs([(c, "A", "PHONE", 0.5, 100.0, 1.0) for c in range(1, 11)])
    out = arbitrate(pairs, max_offers=3, campaign_capacity={}, channel_capacity={"PHONE": 4})
    assert len(out) == 4
    assert list(out["customer_id"]) == [1, 2, 3, 4]  # ties broken by customer id


def test_same_inputs_same_assignment_whatever_the_row_order():
    rows = [(c, f"C{k}", "SMS", ((c * 7 + k * 3) % 10) / 10, 100.0, 1.0) for c in range(1, 50) for k in range(5)]
    a = arbitrate(_pairs(rows), 3, {"C1": 10}, {"SMS": 100})
    b = arbitrate(_pairs(rows[::-1]), 3, {"C1": 10}, {"SMS": 100})
    pd.testing.assert_frame_equal(a, b)
