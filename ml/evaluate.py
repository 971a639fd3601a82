"""``make evaluate``: a business date's assignment against the truth only the sandbox knows.

For the eligible customer x campaign pairs of the date (``marts.campaign_eligibility``), the
sandbox's oracle gives each pair's true probability of acceptance. Three assignments, all under
the same constraints (offers per customer, campaign and channel capacities), are compared by their
expected acceptances (the sum of the true probabilities of the pairs they assign):

- ours: what ``crm_daily`` wrote to ``marts.customer_campaign_assignments``;
- the oracle's: the greedy assignment by true probability (the best a perfect model could do);
- a random one: eligible offers in a random order (seeded).

Evaluation only: the pipeline never sees the oracle.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from crm.settings import Settings, get_settings
from crm.warehouse import warehouse
from ml.arbitrate import Policy, arbitrate, load_policy
from ml.features import scoring_batches
from models.core_banking import CHANNELS

PAIR_COLUMNS = ["customer_id", "campaign_id", "value_pen", "priority_weight",
                *(f"consent_{c.lower()}" for c in CHANNELS), *(f"contacts_30d_{c.lower()}" for c in CHANNELS)]  # fmt: skip


@dataclass(frozen=True)
class Evaluation:
    business_date: str
    eligible_pairs: int
    assigned_pairs: int
    ours: float
    oracle: float
    random: float
    oracle_capture: float  # ours / oracle
    random_capture: float  # random / oracle


def _expected(assigned: pd.DataFrame, truth: pd.DataFrame) -> float:
    got = assigned[["customer_id", "campaign_id"]].merge(truth, on=["customer_id", "campaign_id"], how="left")
    if got["true_p"].isna().any():
        raise ValueError("an assigned pair is not among the eligible pairs of the date")
    return float(got["true_p"].sum())


def evaluate(business_date: dt.date, customers: int, seed: int, settings: Settings | None = None) -> Evaluation:
    """Expected acceptances of ours, the oracle's and a random assignment for ``business_date``."""
    from sandbox.oracle import Oracle

    settings = settings or get_settings()
    with warehouse(settings).connect() as session:
        batches = [b[PAIR_COLUMNS] for b in scoring_batches(session, business_date)]
        ours = session.frame(
            "select customer_id, campaign_id from marts.customer_campaign_assignments where business_date = :d",
            {"d": business_date},
        )
        policy = load_policy(session, settings.max_offers_per_customer)
    pairs = pd.concat(batches, ignore_index=True) if batches else pd.DataFrame(columns=PAIR_COLUMNS)
    if pairs.empty or ours.empty:
        raise ValueError(f"no eligible pairs or no assignment for {business_date}: run make demo DATE={business_date}")
    return compare(pairs, ours, Oracle(customers, seed), policy, business_date, seed)


def compare(
    pairs: pd.DataFrame, ours: pd.DataFrame, oracle, policy: Policy, business_date: dt.date, seed: int
) -> Evaluation:
    """Our assignment ``ours`` of the eligible ``pairs`` against the oracle's and a random one."""
    # one order for the random draw, whatever order the warehouse returned the pairs in
    pairs = pairs[PAIR_COLUMNS].sort_values(["customer_id", "campaign_id"], ignore_index=True)
    pairs["true_p"] = 0.0
    for campaign, rows in pairs.groupby("campaign_id").groups.items():
        ids = pairs.loc[rows, "customer_id"].to_numpy()
        pairs.loc[rows, "true_p"] = oracle.true_propensity(ids, campaign)
    truth = pairs[["customer_id", "campaign_id", "true_p"]]

    def assign(order_by: np.ndarray) -> pd.DataFrame:
        # expected acceptances are what is compared: the oracle ranks by true probability alone
        return arbitrate(pairs.assign(propensity=order_by, value_pen=1.0, priority_weight=1.0), policy)

    best = _expected(assign(pairs["true_p"].to_numpy()), truth)
    rng = np.random.default_rng(seed)
    random = _expected(assign(rng.random(len(pairs))), truth)
    mine = _expected(ours, truth)
    return Evaluation(
        business_date=business_date.isoformat(),
        eligible_pairs=len(pairs),
        assigned_pairs=len(ours),
        ours=round(mine, 2),
        oracle=round(best, 2),
        random=round(random, 2),
        oracle_capture=round(mine / best, 4) if best else 0.0,
        random_capture=round(random / best, 4) if best else 0.0,
    )


def report(result: Evaluation) -> str:
    return "\n".join(
        [
            f"expected acceptances for {result.business_date} "
            f"({result.assigned_pairs} offers assigned of {result.eligible_pairs} eligible pairs):",
            f"  our assignment     {result.ours:10.2f}",
            f"  oracle's (best)    {result.oracle:10.2f}",
            f"  random             {result.random:10.2f}",
            f"  oracle_capture     {result.oracle_capture:10.3f}   (ours / oracle's)",
            f"  random_capture     {result.random_capture:10.3f}   (random / oracle's)",
            json.dumps(asdict(result)),
        ]
    )


def latest_assigned_date(settings: Settings) -> dt.date | None:
    """The newest business date with an assignment in the warehouse (None: no run yet)."""
    return warehouse(settings).scalar("select max(business_date) from marts.customer_campaign_assignments")
