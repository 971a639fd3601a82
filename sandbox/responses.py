"""The campaigns' side of the sandbox bank: the hidden propensity of each customer to accept each
campaign (what the oracle knows and the model must learn), who a campaign contacts each day, and
how they respond. A mixin of ``sandbox.bank.Bank``, whose customers' profiles and consents it reads."""

from __future__ import annotations

import datetime as dt
from functools import cached_property

import numpy as np

from models.core_banking import CHANNELS
from sandbox.draws import day_number, uniform

CONTACT_RATE = 0.02  # chance that a customer is contacted by some campaign on a given day (about 7 a year)

# hidden propensity: product -> (intercept, weights on the latent profile)
# profile columns: income_z, age_z, digital, activity, has_card, balance_z, young_family
_PROPENSITY = {
    "CREDIT_CARD": (-2.6, [0.6, -0.2, 0.5, 0.7, 0.3, 0.1, 0.0]),
    "PERSONAL_LOAN": (-2.9, [-0.3, -0.1, 0.2, 0.6, 0.4, -0.6, 0.4]),
    "CTS": (-2.7, [0.2, -0.4, 0.1, 0.2, 0.0, 0.2, 0.3]),
    "TERM_DEPOSIT": (-3.2, [0.5, 0.7, -0.3, -0.2, 0.0, 0.9, 0.0]),
    "MORTGAGE": (-3.8, [0.8, -0.3, 0.1, 0.1, 0.2, 0.5, 1.2]),
    "INSURANCE": (-3.0, [0.3, 0.5, 0.0, 0.0, 0.5, 0.2, 0.6]),
    "SAVINGS": (-2.4, [-0.1, -0.6, 0.9, 0.3, 0.0, 0.0, 0.0]),
}


class CampaignResponses:
    """Campaign contacts and responses of ``Bank`` (its ``seed``, ``campaigns``, ``profile``,
    ``customers``, ``created`` and draws)."""

    def true_propensity(self, ids: np.ndarray, campaign_id: str) -> np.ndarray:
        """The hidden probability that customers ``ids`` accept ``campaign_id`` when contacted."""
        ids = np.asarray(ids, dtype=np.int64)
        p = self.profile(ids)
        campaign = self.campaigns[self._campaign_index[campaign_id]]
        intercept, w = _PROPENSITY.get(campaign.product, (-3.0, [0.2] * 7))
        age_z = (p["age"] - 45) / 15
        x = np.column_stack(
            [
                p["income_z"],
                age_z,
                p["digital"],
                p["activity"],
                p["has_card"],
                p["balance_z"],
                p["young_family"],
            ]
        )
        # each campaign has its own twist on its product's propensity
        twist = (uniform(self.seed, self._campaign_index[campaign_id], 80) - 0.5) * 0.6
        return 1 / (1 + np.exp(-(intercept + twist + x @ np.asarray(w))))

    def _contacted(self, ids: np.ndarray, dn: int) -> np.ndarray:
        """The customers a campaign contacted on day number ``dn``."""
        contacted = ids[self._u(ids, dn, 90) < CONTACT_RATE]
        if len(contacted) == 0 or not self.campaigns:
            return contacted[:0]
        return contacted[self.created(contacted) <= dn]

    def count_campaign_responses(self, ids: np.ndarray, days: list[dt.date]) -> int:
        ids = np.asarray(ids, dtype=np.int64)
        return sum(len(self._contacted(ids, day_number(d))) for d in days)

    def campaign_responses(self, ids: np.ndarray, day: dt.date) -> list[dict]:
        ids = np.asarray(ids, dtype=np.int64)
        dn = day_number(day)
        contacted = self._contacted(ids, dn)
        pick = (self._u(contacted, dn, 91) * len(self.campaigns)).astype(int)
        if len(contacted) == 0:
            return []
        consents = {c["customer_id"]: c for c in self.customers(contacted, day)}
        prob = np.empty(len(contacted))
        for k in np.unique(pick).tolist():
            prob[pick == k] = self.true_propensity(contacted[pick == k], self.campaigns[k].campaign_id)
        u = self._u(contacted, dn, 92)
        out = []
        for i, (cid, k) in enumerate(zip(contacted.tolist(), pick.tolist(), strict=True)):
            campaign = self.campaigns[k]
            consented = [ch for ch in campaign.channels if consents[cid][f"consent_{ch.lower()}"]]
            channel = consented[0] if consented else (campaign.channels[0] if campaign.channels else CHANNELS[0])
            response = "ACCEPTED" if u[i] < prob[i] else ("DECLINED" if u[i] < prob[i] + 0.35 else "NO_ANSWER")
            out.append(
                {
                    "response_id": f"R{dn:06d}{cid:09d}",
                    "customer_id": cid,
                    "campaign_id": campaign.campaign_id,
                    "channel": channel,
                    "contact_date": day.isoformat(),
                    "response": response,
                }
            )
        return out

    @cached_property
    def campaign_ids(self) -> list[str]:
        return [c.campaign_id for c in self.campaigns]
