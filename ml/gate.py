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
Each counts with the weight training gives it, the inverse of the probability its offer was
drawn with (decision 0028): an exploration contact drawn among k eligible offers stands for the k.
Measured unweighted, a model trained on the weighted contacts is judged on another population than
the one it was fitted to: the closed loop's first retrain was refused for a calibration error of
0.025 read that way (``make bench-loop``).

``capture_at_capacity`` adds the campaigns up as the arbitration's objective does: each campaign's
precision at capacity x its capacity x its offer's value x its weight, over the same sum for a
ranking that knew the outcomes (every acceptance first). 1.0 is a perfect ranking; a random one
scores about the campaigns' acceptance rates over that ceiling (``capture_random``).

``calibration_error`` is the expected calibration error over ten quantile bins: the
weighted mean of |mean predicted - acceptance rate| per bin. The arbitration compares
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


def calibration_error(
    y: np.ndarray, p: np.ndarray, bins: int = CALIBRATION_BINS, weights: np.ndarray | None = None
) -> float:
    """Expected calibration error over ``bins`` quantile bins of ``p``, each contact counting its
    weight (``weights``; all 1 when None): the bins hold equal weight, and each adds
    |weighted mean predicted - weighted acceptance rate| x its weight."""
    w = np.ones(len(p)) if weights is None else np.asarray(weights, dtype="float64")
    order = np.argsort(p, kind="stable")
    w, p, y = w[order], np.asarray(p, dtype="float64")[order], np.asarray(y, dtype="float64")[order]
    total = w.sum()
    if not total:
        return 0.0
    start = np.cumsum(w) - w  # the weight before each contact
    which = np.minimum((start / total * bins).astype(int), bins - 1)
    gap = np.bincount(which, weights=w * p, minlength=bins) - np.bincount(which, weights=w * y, minlength=bins)
    return float(np.abs(gap).sum() / total)


def capture_metrics(
    y: np.ndarray,
    p: np.ndarray,
    campaigns: pd.Series,
    capacities: dict[str, Capacity],
    weights: np.ndarray | None = None,
) -> dict:
    """``capture_at_capacity``, ``capture_random``, ``calibration_error`` and each live campaign's
    ``precision_at_capacity.<campaign>`` on held-out contacts (outcomes ``y``, probabilities ``p``),
    each contact counting its ``weights`` (all 1 when None): an exploration contact drawn among k
    offers stands for the k eligible pairs (decision 0028), as it does in training."""
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype="float64")
    out: dict[str, float] = {}
    ours = best = random = 0.0
    groups = campaigns.groupby(campaigns.to_numpy()).indices
    for campaign, capacity in sorted(capacities.items()):
        idx = groups.get(campaign)
        if idx is None or len(idx) == 0:
            continue
        order = idx[np.argsort(-p[idx], kind="stable")]
        ranked, mass = y[order].astype("float64"), w[order]
        per_contact = mass.sum() / len(idx)
        top = max(1, round(capacity.share * len(idx)), min(MIN_TOP, len(idx) // 4))  # in contacts of mean weight
        count = int(np.searchsorted(np.cumsum(mass), top * per_contact * (1 - 1e-9))) + 1  # those holding that weight
        precision = float((ranked[:count] * mass[:count]).sum() / mass[:count].sum())
        out[f"precision_at_capacity.{campaign}"] = round(precision, 6)
        ours += capacity.worth * precision
        best += capacity.worth * min(1.0, float((ranked * mass).sum()) / (top * per_contact))
        random += capacity.worth * float((ranked * mass).sum() / mass.sum())
    out["capture_at_capacity"] = ours / best if best else 0.0
    out["capture_random"] = random / best if best else 0.0
    out["calibration_error"] = calibration_error(y, p, weights=w)
    return out
