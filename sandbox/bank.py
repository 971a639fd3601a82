"""A deterministic synthetic Peruvian retail bank, generated from ids, never held in memory.

Every attribute of a customer, account, transaction or campaign contact is a pure function of
``(seed, ids, date)`` through a counter-based hash (splitmix64), so any page of any entity can be
generated on its own, in any order, with memory bounded by the page. Customers ``1..size`` exist;
their campaign responses follow a hidden propensity (:meth:`Bank.true_propensity`) that depends on
the customer's latent profile and the campaign's product, so a model can learn real signal.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from models.core_banking import INCOME_BANDS, MERCHANT_CATEGORIES
from sandbox.catalogue import FIRST_NAMES, LAST_NAMES, REGIONS, Campaign, load_campaigns
from sandbox.draws import day_number, from_day_number, iso_dates, normal, uniform
from sandbox.executions import Executions
from sandbox.responses import CampaignResponses

HISTORY_ANCHOR = dt.date(2024, 1, 1)  # most customers joined over the ten years before this date
JOIN_UNTIL = dt.date(2027, 12, 31)  # ... and the rest join day by day from the anchor to this date
JOINING_SHARE = 0.15

# account slots: slot k of customer c has account id c*10+k
SLOT_PRODUCTS = [
    "SAVINGS",
    "CREDIT_CARD",
    "CTS",
    "TERM_DEPOSIT",
    "PERSONAL_LOAN",
    "MORTGAGE",
    "INSURANCE",
    "CHECKING",
]
_BALANCE_SCALE = {"SAVINGS": 1.0, "CHECKING": 2.0, "CTS": 1.5, "TERM_DEPOSIT": 4.0, "CREDIT_CARD": -0.4,
                  "PERSONAL_LOAN": -2.5, "MORTGAGE": -30.0, "INSURANCE": 0.0}  # fmt: skip
MAX_TX_PER_DAY = 4


class Bank(CampaignResponses):
    """The synthetic bank of ``size`` customers for ``seed``."""

    def __init__(
        self, size: int, seed: int, campaigns: list[Campaign] | None = None, executions: Executions | None = None
    ):
        if size < 1:
            raise ValueError("size must be at least 1 customer")
        self.size = size
        self.seed = seed
        self.campaigns = campaigns if campaigns is not None else load_campaigns()
        self._campaign_index = {c.campaign_id: i for i, c in enumerate(self.campaigns)}
        self.executions = executions  # the lists the platform handed the bank (None: it never does)

    # ---- customers -------------------------------------------------------------------------
    def _u(self, *keys) -> np.ndarray:
        return uniform(self.seed, *keys)

    def created(self, ids: np.ndarray) -> np.ndarray:
        """The day number each customer joined the bank: most in the ten years before
        HISTORY_ANCHOR, the rest (JOINING_SHARE) day by day after it, until JOIN_UNTIL."""
        ids = np.asarray(ids, dtype=np.int64)
        anchor = day_number(HISTORY_ANCHOR)
        before = anchor - (self._u(ids, 20) * 3650).astype(np.int64)
        after = anchor + (self._u(ids, 24) * (day_number(JOIN_UNTIL) - anchor)).astype(np.int64)
        return np.where(self._u(ids, 23) < JOINING_SHARE, after, before)

    def updated(self, ids: np.ndarray, as_of: dt.date) -> np.ndarray:
        """The day number each customer's record last changed on or before ``as_of`` (joining, or
        giving e-mail consent)."""
        ids = np.asarray(ids, dtype=np.int64)
        created = self.created(ids)
        d = day_number(as_of)
        changed = created
        for day in self._consent_change_days(ids):
            changed = np.maximum(changed, np.where(day <= d, day, created))
        return np.minimum(changed, d)

    def _consent_change_days(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The day each customer gives e-mail consent, and the day each withdraws SMS consent
        (spread over the years around the anchor: every day some customers change)."""
        anchor = day_number(HISTORY_ANCHOR)
        never = np.iinfo(np.int64).max // 2
        email_from = anchor - 400 + (self._u(ids, 30) * 2600).astype(np.int64)
        email_from = np.where(self._u(ids, 32) < 0.75, email_from, never)  # some never give it
        sms_until = anchor + (self._u(ids, 35) * 2200).astype(np.int64)
        sms_until = np.where((self._u(ids, 36) < 0.3) & (self._u(ids, 31) < 0.8), sms_until, never)
        return email_from, sms_until

    def existing(self, ids: np.ndarray, as_of: dt.date, updated_since: dt.date | None = None) -> np.ndarray:
        """The customers among ``ids`` who are the bank's on ``as_of`` (changed since
        ``updated_since``, when given)."""
        ids = np.asarray(ids, dtype=np.int64)
        keep = self.created(ids) <= day_number(as_of)
        if updated_since is not None:
            keep &= self.updated(ids, as_of) >= day_number(updated_since)
        return ids[keep]

    def profile(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        """The latent profile of customers ``ids``: what the hidden propensity depends on."""
        ids = np.asarray(ids, dtype=np.int64)
        age = 18 + (self._u(ids, 1) ** 1.3) * 62
        income_z = normal(self.seed, ids, 2) + 0.02 * (np.minimum(age, 55) - 35)
        digital = np.clip(1.1 - age / 70 + 0.3 * (self._u(ids, 3) - 0.5), 0, 1)
        activity = np.clip(0.15 + 1.2 * self._u(ids, 4) + 0.25 * income_z, 0.05, 3.0)
        has_card = self._u(ids, 10 + 1) < np.clip(0.25 + 0.15 * income_z, 0.05, 0.9)
        balance_z = 0.7 * income_z + 0.5 * normal(self.seed, ids, 5) + 0.01 * (age - 40)
        young_family = ((age > 26) & (age < 42)).astype(float) * (self._u(ids, 6) < 0.6)
        return {
            "age": age,
            "income_z": income_z,
            "digital": digital,
            "activity": activity,
            "has_card": has_card.astype(float),
            "balance_z": balance_z,
            "young_family": young_family,
        }

    def customers(self, ids: np.ndarray, as_of: dt.date, updated_since: dt.date | None = None) -> list[dict]:
        """The records of the customers among ``ids`` who exist on ``as_of`` (and changed since
        ``updated_since``): new customers appear on the day they join."""
        ids = self.existing(ids, as_of, updated_since)
        if len(ids) == 0:
            return []
        p = self.profile(ids)
        anchor = day_number(HISTORY_ANCHOR)
        created = self.created(ids)
        birth = anchor - (p["age"] * 365.25).astype(np.int64)
        band = np.clip(np.digitize(p["income_z"], [-0.8, 0.1, 0.9, 1.7]), 0, 4)
        u_seg = self._u(ids, 21)
        segment = np.where(
            u_seg < 0.12,
            "EMPRENDEDOR",
            np.where(band >= 4, "PREMIUM", np.where(band >= 3, "PREFERENTE", "MASIVO")),
        )
        region_names = list(REGIONS)
        cum = np.cumsum([REGIONS[r][0] for r in region_names])
        region_idx = np.minimum(np.searchsorted(cum / cum[-1], self._u(ids, 22)), len(region_names) - 1)
        # consents change over time: e-mail consent is given on a customer-specific day
        d = day_number(as_of)
        email_from, sms_until = self._consent_change_days(ids)
        consent = {
            "consent_sms": (self._u(ids, 31) < 0.8) & (d < sms_until),
            "consent_email": email_from <= d,
            "consent_phone": self._u(ids, 33) < 0.55,
            "consent_push": p["digital"] > 0.35,
            "consent_social": (p["digital"] > 0.55) & (self._u(ids, 34) < 0.7),
        }
        updated = self.updated(ids, as_of)
        is_ruc = segment == "EMPRENDEDOR"
        dni = (self._u(ids, 41) * 1e8).astype(np.int64)
        ruc = (self._u(ids, 40) * 1e9).astype(np.int64)
        first = np.array(FIRST_NAMES)[(self._u(ids, 42) * len(FIRST_NAMES)).astype(int)]
        last1 = np.array(LAST_NAMES)[(self._u(ids, 43) * len(LAST_NAMES)).astype(int)]
        last2 = np.array(LAST_NAMES)[(self._u(ids, 44) * len(LAST_NAMES)).astype(int)]
        u_district = self._u(ids, 45)
        n_districts = np.array([len(REGIONS[r][1]) for r in region_names])[region_idx]
        district_idx = (u_district * n_districts).astype(int)
        district = [
            REGIONS[region_names[r]][1][k] for r, k in zip(region_idx.tolist(), district_idx.tolist(), strict=True)
        ]
        doc = [
            f"10{r:09d}" if ir else f"{n:08d}"
            for ir, r, n in zip(is_ruc.tolist(), ruc.tolist(), dni.tolist(), strict=True)
        ]
        names = np.char.add(np.char.add(np.char.add(np.char.add(first, " "), last1), " "), last2)
        columns = {
            "customer_id": ids.tolist(),
            "document_type": np.where(is_ruc, "RUC", "DNI").tolist(),
            "document_number": doc,
            "full_name": names.tolist(),
            "birth_date": iso_dates(birth),
            "region": np.array(region_names)[region_idx].tolist(),
            "district": district,
            "segment": segment.tolist(),
            "income_band": np.array(INCOME_BANDS)[band].tolist(),
            **{k: v.tolist() for k, v in consent.items()},
            "created_on": iso_dates(created),
            "updated_on": iso_dates(updated),
        }
        names_ = list(columns)
        return [dict(zip(names_, values, strict=True)) for values in zip(*columns.values(), strict=True)]

    # ---- accounts --------------------------------------------------------------------------
    def _holdings(self, ids: np.ndarray) -> np.ndarray:
        """Boolean matrix (customers x slots): which account slots each customer has."""
        p = self.profile(ids)
        u = self._u(ids[:, None], 50 + np.arange(len(SLOT_PRODUCTS))[None, :])
        prob = np.column_stack(
            [
                np.ones(len(ids)),
                np.clip(0.25 + 0.15 * p["income_z"], 0.05, 0.9),
                np.where(p["age"] < 65, 0.45, 0.0),
                np.clip(0.08 + 0.1 * p["balance_z"], 0.01, 0.6),
                np.clip(0.12 + 0.05 * p["activity"], 0.0, 0.5),
                np.clip(0.03 + 0.05 * p["income_z"] + 0.05 * p["young_family"], 0.0, 0.4),
                np.clip(0.12 + 0.05 * p["age"] / 40, 0.0, 0.5),
                np.where(p["income_z"] > 1.2, 0.5, 0.05),
            ]
        )
        held = u < prob
        held[:, 1] = p["has_card"] > 0  # the card the profile says the customer has
        return held

    def _account_rows(self, ids: np.ndarray, as_of: dt.date) -> tuple[np.ndarray, ...]:
        """(row, slot, customer id, account id, opened day) of every account open on ``as_of``,
        customer-major then slot: the listing's order."""
        held = self._holdings(ids)
        created = self.created(ids)
        row, slot = np.nonzero(held)
        cid = ids[row]
        acc = cid * 10 + slot
        opened = np.where(slot > 0, created[row] + (self._u(acc, 60) * 2500).astype(np.int64), created[row])
        keep = opened <= day_number(as_of)  # not opened yet on this date: new accounts appear day by day
        return row[keep], slot[keep], cid[keep], acc[keep], opened[keep]

    def count_accounts(self, ids: np.ndarray, as_of: dt.date) -> int:
        return len(self._account_rows(np.asarray(ids, dtype=np.int64), as_of)[0])

    def accounts(self, ids: np.ndarray, as_of: dt.date) -> list[dict]:
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return []
        p = self.profile(ids)
        d = day_number(as_of)
        row, slot, cid, acc, opened = self._account_rows(ids, as_of)
        product = np.array(SLOT_PRODUCTS)[slot]
        usd = np.isin(product, ("SAVINGS", "TERM_DEPOSIT")) & (self._u(acc, 61) < 0.15)
        scale = np.array([_BALANCE_SCALE[pr] for pr in SLOT_PRODUCTS])[slot]
        base = np.exp(8.0 + 0.9 * p["balance_z"][row]) * scale
        wiggle = 1 + 0.08 * np.sin(2 * np.pi * (d / 30.0 + self._u(acc, 62)))
        balance = np.round(base * wiggle / np.where(usd, 3.7, 1.0), 2)
        iso_as_of = as_of.isoformat()
        opened_iso = {int(x): from_day_number(x).isoformat() for x in np.unique(opened)}
        return [
            {
                "account_id": a,
                "customer_id": c,
                "product": pr,
                "currency": "USD" if u else "PEN",
                "balance": f"{bal:.2f}",
                "opened_on": opened_iso[o],
                "status": "ACTIVE",
                "updated_on": iso_as_of,
            }
            for a, c, pr, u, bal, o in zip(
                acc.tolist(),
                cid.tolist(),
                product.tolist(),
                usd.tolist(),
                balance.tolist(),
                opened.tolist(),
                strict=True,
            )
        ]

    # ---- transactions ----------------------------------------------------------------------
    def _transaction_grid(self, ids: np.ndarray, days: list[dt.date], p: dict) -> tuple[np.ndarray, ...]:
        """Days, and the customers x days grid (customer-major) with each cell's transaction count."""
        dns = np.array([day_number(d) for d in days], dtype=np.int64)
        created = self.created(ids)
        g_cid = np.repeat(ids, len(dns))
        g_dn = np.tile(dns, len(ids))
        n = np.floor(np.repeat(p["activity"], len(dns)) + self._u(g_cid, g_dn, 70)).astype(np.int64)
        n = np.where(np.repeat(created, len(dns)) <= g_dn, np.minimum(n, MAX_TX_PER_DAY), 0)
        return dns, g_cid, g_dn, n

    def count_transactions(self, ids: np.ndarray, days: list[dt.date]) -> int:
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0 or not days:
            return 0
        return int(self._transaction_grid(ids, days, self.profile(ids))[3].sum())

    def transaction_columns(self, ids: np.ndarray, days: list[dt.date]) -> dict[str, np.ndarray] | None:
        """Transactions of customers ``ids`` booked on ``days`` as columns (customer, day number,
        index within the day, account, type, merchant category, amount), in (customer, day, index)
        order; None when there are none. What ``transactions`` serves, and what a bench loads
        straight into a warehouse."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0 or not days:
            return None
        p = self.profile(ids)
        dns, g_cid, g_dn, n = self._transaction_grid(ids, days, p)
        if n.sum() == 0:
            return None
        cid = np.repeat(g_cid, n)
        dn = np.repeat(g_dn, n)
        j = np.arange(len(cid)) - np.repeat(np.cumsum(n) - n, n)
        income = np.repeat(np.repeat(np.exp(7.6 + 0.7 * p["income_z"]), len(dns)), n)
        has_card = np.repeat(np.repeat(p["has_card"] > 0, len(dns)), n)
        u_type = self._u(cid, dn, j, 71)
        types = np.select(
            [u_type < 0.45, u_type < 0.58, u_type < 0.70, u_type < 0.88, u_type < 0.99],
            [
                "POS_PURCHASE",
                "ATM_WITHDRAWAL",
                "TRANSFER",
                "WALLET_P2P",
                "BILL_PAYMENT",
            ],
            "SALARY_DEPOSIT",
        )
        dom = np.array([from_day_number(x).day for x in dns])[np.searchsorted(dns, dn)] if len(dns) else dn
        payday = np.isin(dom, (15, 28)) & (j == 0) & (self._u(cid, 72) < 0.6)
        types = np.where(payday, "SALARY_DEPOSIT", types)
        mcc = np.array(MERCHANT_CATEGORIES)[(self._u(cid, dn, j, 73) * len(MERCHANT_CATEGORIES)).astype(int)]
        spend = np.exp(3.0 + 0.5 * np.log(income / 1000 + 1) + 1.1 * normal(self.seed, cid, dn, j, 74))
        amount = np.where(types == "SALARY_DEPOSIT", income, -spend)
        account = np.where((types == "POS_PURCHASE") & has_card, cid * 10 + 1, cid * 10)
        return {"customer_id": cid, "day_number": dn, "index": j, "account_id": account, "type": types,
                "merchant_category": mcc, "amount": amount}  # fmt: skip

    def transactions(self, ids: np.ndarray, days: list[dt.date]) -> list[dict]:
        """Transactions of customers ``ids`` booked on ``days``, in (customer, day, index) order."""
        columns = self.transaction_columns(ids, days)
        if columns is None:
            return []
        iso = {int(x): from_day_number(x).isoformat() for x in np.unique(columns["day_number"])}
        return [
            {
                "transaction_id": f"T{d:06d}{c:09d}{jj}",
                "account_id": a,
                "customer_id": c,
                "booking_date": iso[d],
                "type": t,
                "merchant_category": m if t == "POS_PURCHASE" else None,
                "amount": f"{amt:.2f}",
                "currency": "PEN",
            }
            for c, d, jj, a, t, m, amt in zip(
                *(columns[k].tolist() for k in ("customer_id", "day_number", "index", "account_id", "type")),
                columns["merchant_category"].tolist(),
                columns["amount"].tolist(),
                strict=True,
            )
        ]

    # ---- campaign contacts and responses ---------------------------------------------------
