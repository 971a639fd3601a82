"""What a snapshot is made of, read from the warehouse for a business date: the assignments as
small codes into the snapshot's dictionary, each campaign's results over the days before it (the
console's chart), and the customers' masked profiles (sales' look-ups). ``serving.publish`` writes
them to Redis."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crm.settings import Settings
from crm.warehouse import warehouse
from serving.codec import EXPERIMENT, MAX_CODES, NO_REASON, PRODUCTS, Dictionary

PERFORMANCE_DAYS = 30  # the console's chart: each campaign's results over the 30 days to the date


class PublishError(RuntimeError):
    pass


@dataclass(frozen=True)
class Assignments:
    """A business date's assignments, column by column, ids as small codes into ``dictionary``."""

    customer_id: np.ndarray  # int64, ascending, one row per offer
    campaign: np.ndarray  # uint8 codes
    offer: np.ndarray
    channel: np.ndarray
    reasons: np.ndarray  # (n, 3) uint8, NO_REASON where fewer
    propensity: np.ndarray
    priority: np.ndarray
    dictionary: Dictionary
    model_name: str
    model_version: str

    def __len__(self) -> int:
        return len(self.customer_id)


def _encoded(column: pa.ChunkedArray, what: str, limit: int | None = MAX_CODES) -> tuple[np.ndarray, list[str]]:
    """Codes into a sorted vocabulary (so the same data always gives the same codes); at most
    ``limit`` distinct values (None: any number, as int64 codes)."""
    encoded = pc.dictionary_encode(column).combine_chunks()
    vocabulary = encoded.dictionary.to_pylist()
    order = sorted(range(len(vocabulary)), key=vocabulary.__getitem__)
    remap = np.empty(len(vocabulary), dtype=np.int64)
    remap[order] = np.arange(len(vocabulary))
    if limit is not None and len(vocabulary) > limit:
        raise PublishError(f"a snapshot holds at most {limit} distinct {what}, got {len(vocabulary)}")
    codes = remap[encoded.indices.to_numpy()]
    return (codes if limit is None else codes.astype(np.uint8)), [vocabulary[i] for i in order]


def read_assignments(business_date: dt.date, settings: Settings) -> Assignments | None:
    table = warehouse(settings).arrow(
        """
        select customer_id, campaign_id, offer_id, channel, propensity, priority,
               cast(valid_until as varchar(10)) as valid_until, model_name, model_version, reasons
        from marts.customer_campaign_assignments
        where business_date = :d and arm <> 'control'  -- the control arm is held out: never served
        order by customer_id, rank
        """,
        {"d": business_date},
    )
    if table.num_rows == 0:
        return None
    campaign, campaigns = _encoded(table["campaign_id"], "campaigns")
    offer, offers = _encoded(table["offer_id"], "offers")
    channel, channels = _encoded(table["channel"], "channels")
    # each combination is parsed once; the snapshot's limit is on the distinct reasons, below
    reason_code, reason_texts = _encoded(table["reasons"], "reason combinations", limit=None)
    parsed = [json.loads(text) for text in reason_texts]
    if any(len(reasons) > 3 for reasons in parsed):
        raise PublishError(f"an assignment carries more than 3 reasons: {next(r for r in parsed if len(r) > 3)}")
    vocabulary = sorted({r for reasons in parsed for r in reasons})
    if len(vocabulary) >= NO_REASON:
        raise PublishError(f"a snapshot holds at most {NO_REASON - 1} distinct reasons, got {len(vocabulary)}")
    index = {r: i for i, r in enumerate(vocabulary)}
    combos = np.array([[index[r] for r in reasons] + [NO_REASON] * (3 - len(reasons)) for reasons in parsed], np.uint8)
    per_campaign = table.group_by("campaign_id").aggregate([("valid_until", "max")])
    valid = dict(zip(per_campaign["campaign_id"].to_pylist(), per_campaign["valid_until_max"].to_pylist(), strict=True))
    customer_id = table["customer_id"].to_numpy()
    if customer_id.max() >= 2**32:
        raise PublishError("customer ids above 2**32 do not fit the snapshot encoding")
    return Assignments(
        customer_id=customer_id,
        campaign=campaign,
        offer=offer,
        channel=channel,
        reasons=combos[reason_code],
        propensity=table["propensity"].to_numpy(),
        priority=table["priority"].to_numpy(),
        dictionary=Dictionary(campaigns, offers, channels, vocabulary, [valid[c] for c in campaigns]),
        model_name=str(table["model_name"][0].as_py()),
        model_version=str(table["model_version"][0].as_py()),
    )


def read_performance(business_date: dt.date, settings: Settings) -> dict[str, list[dict]] | None:
    """Each campaign's results per day over the ``PERFORMANCE_DAYS`` to ``business_date``, every
    channel together, from ``marts.campaign_performance``; None when the mart is not built."""
    first = business_date - dt.timedelta(days=PERFORMANCE_DAYS - 1)
    wh = warehouse(settings)
    if not wh.has_table("campaign_performance", "marts"):
        return None
    rows = wh.rows(
        """
        select campaign_id, cast(performance_date as varchar(10)) as day, sum(assigned), sum(contacted),
               sum(accepted), cast(sum(value_pen) as double precision),
               sum(treated), sum(treated_accepted), sum(control), sum(control_accepted)
        from marts.campaign_performance
        where performance_date between :first and :last
        group by campaign_id, performance_date
        order by campaign_id, performance_date
        """,
        {"first": first, "last": business_date},
    )
    out: dict[str, list[dict]] = {}
    for campaign_id, day, assigned, contacted, accepted, value, *experiment in rows:
        out.setdefault(campaign_id, []).append(
            {
                "date": day,
                "assigned": int(assigned),
                "contacted": int(contacted),
                "accepted": int(accepted),
                "acceptance_rate": round(accepted / contacted, 4) if contacted else None,
                "value_pen": round(value or 0.0, 2),
                # the day's experiment: the model arm's contacted members against the control's
                **{k: int(v or 0) for k, v in zip(EXPERIMENT, experiment, strict=True)},
            }
        )
    return out


def read_profiles(business_date: dt.date, settings: Settings) -> tuple[np.ndarray, bytes, list[str]] | None:
    """Every customer's masked profile on ``business_date`` from ``marts.customer_360`` (segment,
    products held, tenure) as (ascending ids, PROFILE records, segment names); None when the
    mart is not built or holds no row for the date."""
    held = " + ".join(f"coalesce(cast(has_{p} as integer), 0) * {1 << i}" for i, p in enumerate(PRODUCTS))
    wh = warehouse(settings)
    if not wh.has_table("customer_360", "marts"):
        return None
    tenure = "coalesce(tenure_days, 0)"
    table = wh.arrow(
        f"""
        select customer_id, coalesce(segment, 'UNKNOWN') as segment, {held} as held,
               case when {tenure} < 0 then 0 when {tenure} > 65535 then 65535 else {tenure} end as tenure_days
        from marts.customer_360
        where as_of_date = :d
        order by customer_id
        """,
        {"d": business_date},
    )
    if table.num_rows == 0:
        return None
    segment, segments = _encoded(table["segment"], "customer segments")
    records = np.empty(table.num_rows, dtype=np.dtype([("segment", "u1"), ("held", "<u2"), ("tenure", "<u2")]))
    records["segment"] = segment
    records["held"] = table["held"].to_numpy()
    records["tenure"] = table["tenure_days"].to_numpy()
    return table["customer_id"].to_numpy(), records.tobytes(), segments
