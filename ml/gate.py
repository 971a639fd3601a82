"""The promotion gate's measures: what a model would capture at the campaigns' capacities, and how
well its probabilities are calibrated, on held-out contacts.

The arbitration gives each campaign its ``daily_capacity`` offers out of its eligible customers: it
takes the top ``share = capacity / eligible`` of them by expected value. Whole-population ROC AUC
barely moves when the ranking at that top changes, and that top is where every offer is (issue
24). So, for each live campaign, the held-out contacts of the campaign are ranked by the model and
the acceptance rate of their top ``share`` is its **precision at capacity**. That top is read over
at least ``MIN_TOP`` contacts (or a quarter of the campaign's, when it has fewer than four times
that): at a bank's capacities the top share of a campaign's held-out contacts is a few dozen, whose
acceptance rate is noise (a standard error near 0.09 at 29 contacts). On ``make bench-scoring``'s
bank it ranked a model that captured 0.83 of the oracle's value above one that captured 0.94 in 65
of 100 resamples of the holdout; over 300 contacts, in none. The held-out contacts
stand for the eligible population when nobody's model picked them: the bank's own campaigns
contact customers uniformly at random, and the exploration arm draws one of a customer's eligible
offers uniformly (:func:`ml.train.chosen_at_random` keeps those; the model arm's contacts are the
champion's own top picks, on which every model would be judged where the champion already looked).
Each weighs the same here (training weighs them by the inverse of their logged probability:
decision 0028).

``capture_at_capacity`` adds the campaigns up as the arbitration's objective does: each campaign's
precision at capacity x its capacity x its offer's value x its weight, over the same sum for a
ranking that knew the outcomes (every acceptance first). 1.0 is a perfect ranking; a random one
scores about the campaigns' acceptance rates over that ceiling (``capture_random``).

``calibration_error`` is the expected calibration error over ten quantile bins: the
contact-weighted mean of |mean predicted - acceptance rate| per bin. The arbitration compares
propensity x value across campaigns, so probabilities that are off shift offers between them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from crm.warehouse import Session

CALIBRATION_BINS = 10
MIN_TOP = 300  # contacts a campaign's precision at capacity is read over, at least (module docstring)


@dataclass(frozen=True)
class Capacity:
    """A live campaign as the arbitration sees it on the training date."""

    share: float  # capacity / eligible customers, at most 1
    worth: float  # capacity x offer value x campaign weight: what a point of precision is worth


def campaign_capacities(session: Session, business_date: dt.date) -> tuple[dt.date, dict[str, Capacity]]:
    """The live campaigns' capacity shares and worth on the newest eligibility date up to
    ``business_date`` (``marts.campaign_eligibility``, which ``crm_daily`` builds)."""
    as_of = session.scalar(
        "select max(as_of_date) from marts.campaign_eligibility where as_of_date <= :d", {"d": business_date}
    )
    if as_of is None:
        raise LookupError(
            f"marts.campaign_eligibility has no date up to {business_date}: the promotion gate needs the "
            "campaigns' eligible customers; run crm_daily for a date up to it first"
        )
    rows = session.rows(
        "select e.campaign_id, count(*), max(c.daily_capacity), "
        "max(cast(e.value_per_conversion_pen as double precision)), max(cast(e.priority_weight as double precision)) "
        "from marts.campaign_eligibility e join staging.stg_campaigns__campaigns c on c.campaign_id = e.campaign_id "
        "where e.as_of_date = :d group by e.campaign_id",
        {"d": as_of},
    )
    capacities = {}
    for campaign, eligible, capacity, value, weight in rows:
        capacity = min(int(capacity), int(eligible))
        capacities[str(campaign)] = Capacity(
            share=capacity / int(eligible), worth=capacity * float(value) * float(weight)
        )
    return as_of, capacities


def calibration_error(y: np.ndarray, p: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """Expected calibration error over ``bins`` quantile bins of ``p``."""
    order = np.argsort(p, kind="stable")
    total = 0.0
    for part in np.array_split(order, bins):
        if len(part):
            total += len(part) * abs(float(p[part].mean()) - float(y[part].mean()))
    return total / max(len(p), 1)


def capture_metrics(y: np.ndarray, p: np.ndarray, campaigns: pd.Series, capacities: dict[str, Capacity]) -> dict:
    """``capture_at_capacity``, ``capture_random``, ``calibration_error`` and each live campaign's
    ``precision_at_capacity.<campaign>`` on held-out contacts (outcomes ``y``, probabilities ``p``)."""
    out: dict[str, float] = {}
    ours = best = random = 0.0
    groups = campaigns.groupby(campaigns.to_numpy()).indices
    for campaign, capacity in sorted(capacities.items()):
        idx = groups.get(campaign)
        if idx is None or len(idx) == 0:
            continue
        top = max(1, round(capacity.share * len(idx)), min(MIN_TOP, len(idx) // 4))
        ranked = y[idx][np.argsort(-p[idx], kind="stable")]
        precision = float(ranked[:top].mean())
        out[f"precision_at_capacity.{campaign}"] = round(precision, 6)
        ours += capacity.worth * precision
        best += capacity.worth * min(1.0, float(ranked.sum()) / top)
        random += capacity.worth * float(ranked.mean())
    out["capture_at_capacity"] = ours / best if best else 0.0
    out["capture_random"] = random / best if best else 0.0
    out["calibration_error"] = calibration_error(y, p)
    return out
