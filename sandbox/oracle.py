"""The truth about a sandbox bank, for tests and evaluation (never for the platform's own runs):
what each listing holds, which of its records the faults broke and how, and the hidden
propensities. :class:`OracleModel` is those propensities dressed as a model, for ``make
bench-loop``'s second loop: the pipeline run with the truth in its model's place.

    oracle = Oracle(customers=300, seed=7, faults=Faults.parse("all"))
    truth = oracle.truth("accounts", as_of=date)
    truth.good, truth.good_checksum   # what an extraction must land
    truth.bad_kinds                   # record key -> how it was broken: what it must quarantine
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from models.core_banking import PRIMARY_KEYS
from sandbox.app import record_stream
from sandbox.bank import Bank
from sandbox.faults import Faults, bad_kind


def id_checksum(keys: Iterable[object]) -> int:
    """An order-free checksum of record ids: the sum of their 64-bit hashes, modulo 2**64."""
    total = 0
    for key in keys:
        total += int.from_bytes(hashlib.blake2b(str(key).encode(), digest_size=8).digest(), "little")
    return total % (1 << 64)


@dataclass(frozen=True)
class EntityTruth:
    entity: str
    records: int  # distinct records the listing serves, broken ones included
    good: int
    good_checksum: int
    bad: int
    bad_checksum: int
    bad_kinds: dict[str, str]  # str(record key) -> kind of breakage (sandbox.faults.BAD_KINDS)


class Oracle:
    def __init__(self, customers: int, seed: int, faults: Faults | None = None):
        self.bank = Bank(customers, seed)
        self.faults = faults or Faults()

    def truth(
        self,
        entity: str,
        *,
        as_of: dt.date | None = None,
        updated_since: dt.date | None = None,
        date_from: dt.date | None = None,
        date_to: dt.date | None = None,
        block: int = 5000,
    ) -> EntityTruth:
        days = None
        if date_from is not None and date_to is not None:
            days = [date_from + dt.timedelta(days=i) for i in range((date_to - date_from).days + 1)]
        generate, _ = record_stream(self.bank, entity, as_of=as_of, updated_since=updated_since, days=days)
        key = PRIMARY_KEYS[entity]
        good, bad = [], {}
        for first in range(1, self.bank.size + 1, block):
            ids = np.arange(first, min(first + block, self.bank.size + 1))
            keys = [record[key] for _, record in generate(ids)]
            for k, kind in zip(keys, bad_kind(self.faults, self.bank.seed, entity, keys), strict=True):
                if kind:
                    bad[str(k)] = kind[0]
                else:
                    good.append(k)
        return EntityTruth(
            entity=entity,
            records=len(good) + len(bad),
            good=len(good),
            good_checksum=id_checksum(good),
            bad=len(bad),
            bad_checksum=id_checksum(bad),
            bad_kinds=bad,
        )

    def true_propensity(self, customer_ids: np.ndarray, campaign_id: str) -> np.ndarray:
        return self.bank.true_propensity(customer_ids, campaign_id)

    def traits(self, customer_ids: np.ndarray) -> dict[str, np.ndarray]:
        """The hidden traits the true propensities are a function of (``make bench-scoring``'s ceilings)."""
        return self.bank.profile(customer_ids)

    def true_uplift(self, customer_ids: np.ndarray, campaign_id: str) -> np.ndarray:
        """What a contact of ``campaign_id`` adds to the probability that the customers buy."""
        return self.bank.true_uplift(customer_ids, campaign_id)


@lru_cache(maxsize=4)
def _bank(customers: int, seed: int) -> Bank:
    return Bank(customers, seed)


class OracleModel(ClassifierMixin, BaseEstimator):
    """The sandbox bank's true propensities as a scikit-learn classifier of (customer_id,
    campaign_id) pairs: registered as a bench bank's champion, ``crm_daily`` scores, arbitrates
    and hands on what a perfect model would (``make bench-loop``'s oracle loop). Nothing is fitted,
    and nothing of the bank is stored with it: the bank is drawn again from its size and seed."""

    def __init__(self, customers: int = 0, seed: int = 0):
        self.customers = customers
        self.seed = seed

    def fit(self, X=None, y=None):
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X) -> np.ndarray:
        bank = _bank(self.customers, self.seed)
        ids = np.asarray(X["customer_id"], dtype=np.int64)
        campaigns = np.asarray(X["campaign_id"]).astype(str)
        p = np.empty(len(ids))
        for campaign in np.unique(campaigns).tolist():
            rows = campaigns == campaign
            p[rows] = bank.true_propensity(ids[rows], campaign)
        return np.column_stack([1.0 - p, p])
