"""``make evaluate``: a business date's assignment against the truth only the sandbox knows.

For the eligible customer x campaign pairs of the date (``marts.campaign_eligibility``), the
sandbox's oracle gives each pair's true probability of acceptance. Three assignments, all under
the same constraints (offers per customer, campaign and channel capacities, consents, contact
caps), are compared by their expected value, the arbitration's own objective (the sum over the
pairs they assign of true probability x offer value x campaign weight), and by their expected
acceptances (the sum of the true probabilities):

- ours: what ``crm_daily`` wrote to ``marts.customer_campaign_assignments`` for the model's and
  the control arm's customers (``ml.arms``: a control customer's row is the model's choice,
  logged and not served). The exploration arm's customers, and its share of the capacities, are
  left out of all three assignments: what is measured is the model's choice;
- the oracle's: the same arbitration fed the true probabilities (what a perfect model would
  assign, by the same objective and the same greedy rules: value-consistent; not an exact
  optimum, so a lucky assignment can exceed it);
- a random one: eligible offers in a random order (seeded).

``oracle_capture`` is our expected value over the oracle's; ``random_capture`` a random
assignment's; ``acceptance_capture`` our expected acceptances over the oracle assignment's.

Evaluation only: the pipeline never sees the oracle.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from crm.settings import Settings
from crm.warehouse import warehouse
from ml.arbitrate import Policy, arbitrate, load_policy
from ml.arms import EXPLORATION, Shares, arm_of, split_policy
from ml.features import scoring_batches
from models.core_banking import CHANNELS

PAIR_COLUMNS = ["customer_id", "campaign_id", "value_pen", "priority_weight",
                *(f"consent_{c.lower()}" for c in CHANNELS), *(f"contacts_30d_{c.lower()}" for c in CHANNELS)]  # fmt: skip


@dataclass(frozen=True)
class Evaluation:
    business_date: str
    eligible_pairs: int
    assigned_pairs: int
    ours: float  # expected acceptances
    oracle: float
    random: float
    ours_value: float  # expected value: sum of true p x value_pen x priority_weight (the objective)
    oracle_value: float
    random_value: float
    oracle_capture: float  # ours_value / oracle_value
    random_capture: float  # random_value / oracle_value
    acceptance_capture: float  # ours / oracle


def _expected(assigned: pd.DataFrame, truth: pd.DataFrame) -> tuple[float, float]:
    """(expected acceptances, expected value) of an assignment under the true probabilities."""
    got = assigned[["customer_id", "campaign_id"]].merge(truth, on=["customer_id", "campaign_id"], how="left")
    if got["true_p"].isna().any():
        raise ValueError("an assigned pair is not among the eligible pairs of the date")
    return float(got["true_p"].sum()), float((got["true_p"] * got["worth"]).sum())


def evaluate(business_date: dt.date, customers: int, seed: int, settings: Settings) -> Evaluation:
    """Expected value and acceptances of ours, the oracle's and a random assignment for ``business_date``."""
    from sandbox.oracle import Oracle

    with warehouse(settings).connect() as session:
        ours = session.frame(
            "select customer_id, campaign_id from marts.customer_campaign_assignments where business_date = :d "
            "and arm <> :exploration",
            {"d": business_date, "exploration": EXPLORATION},
        )
    pairs, policy = measured_pairs(business_date, settings)
    if pairs.empty or ours.empty:
        raise ValueError(f"no eligible pairs or no assignment for {business_date}: run make demo DATE={business_date}")
    return compare(pairs, ours, Oracle(customers, seed), policy, business_date, seed)


def measured_pairs(
    business_date: dt.date, settings: Settings, columns: list[str] = PAIR_COLUMNS
) -> tuple[pd.DataFrame, Policy]:
    """The eligible pairs of ``business_date`` the model chooses among (not the exploration arm's
    customers), with ``columns`` of ``scoring_batches``, and the policy with the capacities left to them."""
    with warehouse(settings).connect() as session:
        with contextlib.closing(scoring_batches(session, business_date)) as stream:
            batches = [b[columns] for b in stream]
        policy = load_policy(session, settings.model.max_offers_per_customer)
    pairs = pd.concat(batches, ignore_index=True) if batches else pd.DataFrame(columns=columns)
    shares = Shares.of(settings)
    pairs = pairs[arm_of(pairs["customer_id"].to_numpy(dtype="int64"), business_date, shares) != EXPLORATION]
    return pairs, split_policy(policy, shares.exploration)[0]


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
    pairs["worth"] = pairs["value_pen"].astype(float) * pairs["priority_weight"].astype(float)
    truth = pairs[["customer_id", "campaign_id", "true_p", "worth"]]

    # the oracle: the arbitration itself, fed the true probabilities (the same objective and rules)
    best = _expected(arbitrate(pairs.assign(propensity=pairs["true_p"]), policy), truth)
    rng = np.random.default_rng(seed)
    shuffled = pairs.assign(propensity=rng.random(len(pairs)), value_pen=1.0, priority_weight=1.0)
    random = _expected(arbitrate(shuffled, policy), truth)
    mine = _expected(ours, truth)

    def share(part: float, whole: float) -> float:
        return round(part / whole, 4) if whole else 0.0

    return Evaluation(
        business_date=business_date.isoformat(),
        eligible_pairs=len(pairs),
        assigned_pairs=len(ours),
        ours=round(mine[0], 2),
        oracle=round(best[0], 2),
        random=round(random[0], 2),
        ours_value=round(mine[1], 2),
        oracle_value=round(best[1], 2),
        random_value=round(random[1], 2),
        oracle_capture=share(mine[1], best[1]),
        random_capture=share(random[1], best[1]),
        acceptance_capture=share(mine[0], best[0]),
    )


def report(result: Evaluation) -> str:
    return "\n".join(
        [
            f"{result.business_date}: {result.assigned_pairs} offers assigned of {result.eligible_pairs} eligible pairs",
            "                    expected value   expected acceptances",
            f"  our assignment    {result.ours_value:14.2f}   {result.ours:20.2f}",
            f"  oracle's          {result.oracle_value:14.2f}   {result.oracle:20.2f}",
            f"  random            {result.random_value:14.2f}   {result.random:20.2f}",
            f"  oracle_capture     {result.oracle_capture:10.3f}   (our expected value / the oracle's)",
            f"  random_capture     {result.random_capture:10.3f}   (a random assignment's / the oracle's)",
            f"  acceptance_capture {result.acceptance_capture:10.3f}   (our expected acceptances / the oracle's)",
            json.dumps(asdict(result)),
        ]
    )


def latest_assigned_date(settings: Settings) -> dt.date | None:
    """The newest business date with an assignment in the warehouse (None: no run yet)."""
    return warehouse(settings).scalar("select max(business_date) from marts.customer_campaign_assignments")
