"""The campaigns' side of the sandbox bank: the hidden propensity of each customer to accept each
campaign (what the oracle knows and the model must learn), who a campaign contacts each day, and
how they respond. A mixin of ``sandbox.bank.Bank``, whose customers' profiles and consents it reads.

Until the platform hands the bank a list (:mod:`sandbox.executions`), the bank's own campaigns
contact about 2 % of its customers a day, each with a campaign drawn at random. From the day after
a list is handed, the loop is closed: the bank contacts the list's members (within its channels'
capacities) and tracks its control members without contacting them. A contacted member accepts
with the hidden propensity; anyone also buys the offer's product without a contact, at a lower
organic rate (the propensity's log-odds less the campaign's contact lift), so a campaign adds
``true_uplift`` = propensity - organic rate. Responses to a list arrive 0 to
``MAX_RESPONSE_DELAY_DAYS`` days after the contact (``campaign_responses(..., as_of=)`` says what
had arrived by a day); the HTTP feed serves them final. Served as of the request's date, a day's
records would change from one extraction to the next, and the platform's raw layer keeps one
version of a day: a later date's run would leak what it knew into an earlier date's marts (a
backfill beside the daily run then gives other rows than the date alone).
"""

from __future__ import annotations

import datetime as dt
from functools import cached_property

import numpy as np
import pandas as pd

from models.core_banking import CHANNELS
from sandbox.draws import day_number, uniform
from sandbox.executions import Executions, channel_capacities

CONTACT_RATE = 0.02  # chance that a customer is contacted by some campaign on a given day (about 7 a year)
MAX_RESPONSE_DELAY_DAYS = 3  # what the platform's daily delta re-reads (CRM_LATE_ARRIVAL_DAYS)

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

    executions: Executions | None = None

    def contact_lift(self, campaign_id: str) -> float:
        """The log-odds a contact of ``campaign_id`` adds to buying its product (0.5 to 2)."""
        return float(0.5 + 1.5 * uniform(self.seed, self._campaign_index[campaign_id], 81))

    def organic_propensity(self, ids: np.ndarray, campaign_id: str) -> np.ndarray:
        """The probability that customers ``ids`` buy ``campaign_id``'s product with no contact."""
        p = self.true_propensity(ids, campaign_id)
        return 1 / (1 + np.exp(-(np.log(p / (1 - p)) - self.contact_lift(campaign_id))))

    def true_uplift(self, ids: np.ndarray, campaign_id: str) -> np.ndarray:
        """What a contact of ``campaign_id`` adds to the probability that customers ``ids`` buy."""
        return self.true_propensity(ids, campaign_id) - self.organic_propensity(ids, campaign_id)

    @cached_property
    def _channel_capacity(self) -> dict[str, int]:
        return channel_capacities()

    def _worked_on(self, day: dt.date) -> pd.DataFrame | None:
        return self.executions.worked_on(day, self._channel_capacity) if self.executions is not None else None

    def _contacted(self, ids: np.ndarray, dn: int) -> np.ndarray:
        """The customers a campaign contacted on day number ``dn``."""
        contacted = ids[self._u(ids, dn, 90) < CONTACT_RATE]
        if len(contacted) == 0 or not self.campaigns:
            return contacted[:0]
        return contacted[self.created(contacted) <= dn]

    def count_campaign_responses(self, ids: np.ndarray, days: list[dt.date]) -> int:
        ids = np.asarray(ids, dtype=np.int64)
        total = 0
        for d in days:
            worked = self._worked_on(d)
            total += (
                len(self._contacted(ids, day_number(d)))
                if worked is None
                else int(np.isin(worked["customer_id"].to_numpy(), ids).sum())
            )
        return total

    def campaign_responses(self, ids: np.ndarray, day: dt.date, as_of: dt.date | None = None) -> list[dict]:
        """The feed's records of contacts made on ``day``, as the bank knows them at the end of
        ``as_of``; final (every response arrived) when not given, as the HTTP feed serves them."""
        ids = np.asarray(ids, dtype=np.int64)
        worked = self._worked_on(day)
        if worked is not None:
            final = day + dt.timedelta(days=MAX_RESPONSE_DELAY_DAYS)
            return self._list_responses(worked[np.isin(worked["customer_id"].to_numpy(), ids)], day, as_of or final)
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
                    "contacted": True,
                }
            )
        return out

    def _list_responses(self, members: pd.DataFrame, day: dt.date, as_of: dt.date) -> list[dict]:
        """The records of a handed list's members worked on ``day``, in customer then campaign order."""
        members = members[members["campaign_id"].isin(self._campaign_index)]
        if members.empty:
            return []
        dn = day_number(day)
        cid = members["customer_id"].to_numpy(dtype=np.int64)
        k = members["campaign_id"].map(self._campaign_index).to_numpy(dtype=np.int64)
        contact = members["contact"].to_numpy(dtype=bool)
        p = np.empty(len(members))
        for campaign in np.unique(members["campaign_id"]).tolist():
            rows = (members["campaign_id"] == campaign).to_numpy()
            p[rows] = np.where(contact[rows], self.true_propensity(cid[rows], campaign),
                               self.organic_propensity(cid[rows], campaign))  # fmt: skip
        u = self._u(cid, dn, k, 93)
        arrived = dn + (self._u(cid, dn, k, 94) * (MAX_RESPONSE_DELAY_DAYS + 1)).astype(np.int64) <= day_number(as_of)
        response = np.where(arrived & (u < p), "ACCEPTED",
                            np.where(arrived & contact & (u < p + 0.35), "DECLINED", "NO_ANSWER"))  # fmt: skip
        order = np.lexsort((k, cid))
        list_date = (day - dt.timedelta(days=1)).isoformat()
        return [
            {
                "response_id": f"E{dn:06d}{c:09d}{kk:03d}",
                "customer_id": c,
                "campaign_id": campaign,
                "channel": channel,
                "contact_date": day.isoformat(),
                "response": r,
                "contacted": bool(ct),
                "list_date": list_date,
            }
            for c, kk, campaign, channel, r, ct in zip(
                cid[order].tolist(), k[order].tolist(), members["campaign_id"].to_numpy()[order].tolist(),
                members["channel"].to_numpy()[order].tolist(), response[order].tolist(), contact[order].tolist(),
                strict=True,
            )
        ]  # fmt: skip

    @cached_property
    def campaign_ids(self) -> list[str]:
        return [c.campaign_id for c in self.campaigns]
