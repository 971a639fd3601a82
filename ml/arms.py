"""Each day's assignment is an experiment: customers are split into arms by a hash of their id and
the business date, and every assigned offer says which arm chose it and with what probability.

- **model** (most customers): the arbitration of the model's propensities.
- **control** (``CRM_CONTROL_SHARE``): held out. The same arbitration runs over them with the
  model's customers, so each control customer's row is the offer they *would* have had; it is
  logged and never served (no segment, no sales screen, no app). Comparing the model arm's
  acceptances with the control's, campaign by campaign, is what the campaign added.
- **exploration** (``CRM_EXPLORATION_SHARE``): each customer draws one of their eligible offers
  uniformly at random, so the next model can learn about offers the current one never picks.
  Exploration has its own share of every campaign's and channel's daily capacity; the draws are
  served in a random order until that share runs out.

``selection_probability`` is the probability, within the arm, that the customer got that offer:
1 for the model's and control's (the arbitration is deterministic), and for exploration
``1 / eligible offers of the customer x the share of the campaign's draws its capacity served``.
The split is a pure function of (customer, date): a rerun of the date gives the same arms, and a
customer's arm changes from one day to the next.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd

from crm.settings import Settings
from ml.arbitrate import UNLIMITED, Policy, arbitrate

MODEL, EXPLORATION, CONTROL = "model", "exploration", "control"
ARMS = (MODEL, EXPLORATION, CONTROL)
EXPLORATION_REASON = "an offer the bank is trying with a few customers chosen at random (exploration)"


@dataclasses.dataclass(frozen=True)
class Shares:
    exploration: float
    control: float

    def __post_init__(self) -> None:
        if not (0 <= self.exploration < 1 and 0 <= self.control < 1 and self.exploration + self.control < 1):
            raise ValueError(
                f"the exploration ({self.exploration}) and control ({self.control}) shares must each be in "
                "[0, 1) and leave the model arm some customers"
            )

    @classmethod
    def of(cls, settings: Settings) -> Shares:
        """The shares ``CRM_EXPLORATION_SHARE`` and ``CRM_CONTROL_SHARE`` set."""
        return cls(settings.model.exploration_share, settings.model.control_share)


def draw(customer_ids: np.ndarray, business_date: dt.date, purpose: int) -> np.ndarray:
    """Uniform [0, 1) numbers, a pure function of (customer, date, purpose)."""
    salt = pd.util.hash_array(np.array([business_date.toordinal() * 16 + purpose], dtype=np.uint64))[0]
    mixed = pd.util.hash_array(np.asarray(customer_ids, dtype=np.uint64) ^ salt)
    return (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def arm_of(customer_ids: np.ndarray, business_date: dt.date, shares: Shares) -> np.ndarray:
    """Each customer's arm on ``business_date``."""
    u = draw(customer_ids, business_date, 1)
    return np.where(u < shares.control, CONTROL, np.where(u < shares.control + shares.exploration, EXPLORATION, MODEL))


def _scaled(capacity: dict[str, int], share: float) -> tuple[dict[str, int], dict[str, int]]:
    """A capacity split in two: the rest and ``share`` of it (rounded half up, unlimited stays so)."""
    mine = {k: v if v >= UNLIMITED else int(np.floor(v * share + 0.5)) for k, v in capacity.items()}
    return {k: v if v >= UNLIMITED else v - mine[k] for k, v in capacity.items()}, mine


def split_policy(policy: Policy, share: float) -> tuple[Policy, Policy]:
    """The model's and the exploration's policies: exploration gets ``share`` of every capacity and
    one offer per customer."""
    campaign_rest, campaign_mine = _scaled(policy.campaign_capacity, share)
    channel_rest, channel_mine = _scaled(policy.channel_capacity, share)
    rest = dataclasses.replace(policy, campaign_capacity=campaign_rest, channel_capacity=channel_rest)
    mine = dataclasses.replace(policy, max_offers=1, campaign_capacity=campaign_mine, channel_capacity=channel_mine)
    return rest, mine


def explore(pairs: pd.DataFrame, policy: Policy, business_date: dt.date) -> pd.DataFrame:
    """One eligible offer per customer of ``pairs``, drawn uniformly, served in a random order within
    ``policy``'s capacities, with its ``selection_probability``."""
    if pairs.empty:
        return arbitrate(pairs, policy).assign(selection_probability=pd.Series(dtype="float64"))
    pairs = pairs.sort_values(["customer_id", "campaign_id"], kind="stable", ignore_index=True)
    customer = pairs["customer_id"].to_numpy(dtype=np.int64)
    offers = pairs.groupby("customer_id", sort=False)["campaign_id"].transform("size").to_numpy()
    position = pairs.groupby("customer_id", sort=False).cumcount().to_numpy()
    pick = np.minimum((draw(customer, business_date, 2) * offers).astype(np.int64), offers - 1)
    drawn = pairs[position == pick].reset_index(drop=True)
    drawn["offers"] = offers[position == pick]
    random_order = drawn.assign(
        propensity=draw(drawn["customer_id"].to_numpy(), business_date, 3), value_pen=1.0, priority_weight=1.0
    )
    served = arbitrate(random_order, policy)
    truth = drawn.set_index("customer_id")
    for column in ("propensity", "value_pen", "priority_weight"):
        served[column] = truth.loc[served["customer_id"].to_numpy(), column].to_numpy()
    served["priority"] = served["propensity"] * served["value_pen"] * served["priority_weight"]
    campaign = served["campaign_id"].astype(str)
    fit = campaign.value_counts() / drawn["campaign_id"].astype(str).value_counts()
    served["selection_probability"] = campaign.map(fit).to_numpy() / served["offers"].to_numpy()
    return served.drop(columns="offers")


def assign(pairs: pd.DataFrame, policy: Policy, business_date: dt.date, shares: Shares) -> pd.DataFrame:
    """The day's assignment with ``arm`` and ``selection_probability``: the arbitration's for the
    model and control arms, the exploration's draws for the exploration arm."""
    arm = arm_of(pairs["customer_id"].to_numpy(dtype=np.int64), business_date, shares)
    exploring = arm == EXPLORATION
    model_policy, exploration_policy = split_policy(policy, shares.exploration)
    plan = arbitrate(pairs[~exploring], model_policy)
    plan["arm"] = arm_of(plan["customer_id"].to_numpy(dtype=np.int64), business_date, shares)
    plan["selection_probability"] = 1.0
    explored = explore(pairs[exploring], exploration_policy, business_date).assign(arm=EXPLORATION)
    out = pd.concat([plan, explored[plan.columns]], ignore_index=True) if len(explored) else plan
    return out.sort_values(["customer_id", "rank"], kind="stable", ignore_index=True)
