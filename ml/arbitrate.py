"""Arbitration: from scored customer x campaign pairs to at most N offers per customer.

priority = propensity x value of the offer (PEN) x campaign weight. Pairs are taken greedily in
priority order (ties broken by customer and campaign id, so the same inputs always give the same
assignment, whatever order they come in). A pair is skipped when its customer already has N
offers or its campaign has used its daily capacity. Its channel is the first of the campaign's
channels, in the campaign's order of preference, that

- the customer consented to,
- still has capacity today (what the call centre can dial, say), and
- the contact policy's frequency cap allows: the customer's contacts on that channel in the last
  30 days plus today's offers on it stay within ``max_contacts_30d``;

a pair with no such channel is skipped. Each assigned pair says why its channel was chosen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from models.core_banking import CHANNELS

UNLIMITED = np.iinfo(np.int64).max


@dataclass(frozen=True)
class Policy:
    """The business rules arbitration applies."""

    max_offers: int
    campaign_capacity: dict[str, int] = field(default_factory=dict)  # offers per campaign per day
    channel_capacity: dict[str, int] = field(default_factory=dict)  # offers per channel per day
    max_contacts_30d: dict[str, int] = field(default_factory=dict)  # contacts per customer per channel
    campaign_channels: dict[str, tuple[str, ...]] = field(default_factory=dict)  # by preference

    def channels_of(self, campaign: str) -> tuple[str, ...]:
        return self.campaign_channels.get(campaign, CHANNELS)


def load_policy(session, max_offers: int) -> Policy:
    """The rules as the campaigns database has them (staging models of the dbt project), read
    through the warehouse's session (``crm.warehouse.Session``)."""
    campaign = dict(session.rows("select campaign_id, daily_capacity from staging.stg_campaigns__campaigns"))
    rows = session.rows("select channel, daily_capacity, max_contacts_30d from staging.stg_campaigns__contact_policies")
    prefs: dict[str, list[str]] = {}
    for cid, ch in session.rows(
        "select campaign_id, channel from staging.stg_campaigns__campaign_channels order by campaign_id, preference"
    ):
        prefs.setdefault(cid, []).append(ch)
    return Policy(
        max_offers=max_offers,
        campaign_capacity=campaign,
        channel_capacity={ch: cap for ch, cap, _ in rows},
        max_contacts_30d={ch: cap for ch, _, cap in rows},
        campaign_channels={k: tuple(v) for k, v in prefs.items()},
    )


def _column(pairs: pd.DataFrame, name: str, default: int) -> np.ndarray:
    return pairs[name].to_numpy(dtype=np.int16) if name in pairs else np.full(len(pairs), default, dtype=np.int16)


def arbitrate(pairs: pd.DataFrame, policy: Policy) -> pd.DataFrame:
    """The assigned pairs with ``channel``, ``priority``, ``rank`` (1 = best, per customer) and
    ``channel_reason``, in customer then rank order.

    ``pairs`` has ``customer_id``, ``campaign_id``, ``propensity``, ``value_pen``,
    ``priority_weight``, and per channel ``consent_<channel>`` (1 or 0; all consented when
    missing) and ``contacts_30d_<channel>`` (0 when missing)."""
    columns = list(pairs.columns)
    if pairs.empty:
        return pairs.assign(channel="", priority=0.0, rank=0, channel_reason="").iloc[:0]
    priority = (
        pairs["propensity"].to_numpy(dtype=np.float64)
        * pairs["value_pen"].to_numpy(dtype=np.float64)
        * pairs["priority_weight"].to_numpy(dtype=np.float64)
    )
    campaigns = sorted(pairs["campaign_id"].unique())  # codes in id order: the tie-break
    campaign_code = pd.Categorical(pairs["campaign_id"], categories=campaigns).codes.astype(np.int64)
    customer_id = pairs["customer_id"].to_numpy(dtype=np.int64)
    order = np.lexsort((campaign_code, customer_id, -priority))
    customer_code = pd.factorize(customer_id)[0]

    consent = np.column_stack([_column(pairs, f"consent_{c.lower()}", 1) for c in CHANNELS])
    contacts = np.column_stack([_column(pairs, f"contacts_30d_{c.lower()}", 0) for c in CHANNELS])
    # the channels of each campaign, as channel indexes in order of preference
    options = [[CHANNELS.index(ch) for ch in policy.channels_of(c) if ch in CHANNELS] for c in campaigns]
    campaign_left = np.array([policy.campaign_capacity.get(c, UNLIMITED) for c in campaigns], dtype=np.int64)
    channel_left = np.array([policy.channel_capacity.get(c, UNLIMITED) for c in CHANNELS], dtype=np.int64)
    cap_30d = np.array([policy.max_contacts_30d.get(c, UNLIMITED) for c in CHANNELS], dtype=np.int64)
    offers = np.zeros(customer_code.max() + 1, dtype=np.int64)
    today = {}  # (customer code, channel) -> offers on that channel today
    chosen_rows, chosen_channel, reasons = [], [], []
    open_campaigns = int((campaign_left > 0).sum())
    for i in order.tolist():
        if open_campaigns == 0:
            break
        cu, ca = customer_code[i], campaign_code[i]
        if offers[cu] >= policy.max_offers or campaign_left[ca] <= 0:
            continue
        why = ""
        for ch in options[ca]:
            if not consent[i, ch]:
                continue
            if channel_left[ch] <= 0:
                why = why or f"{CHANNELS[ch]} was at its daily capacity"
                continue
            used = contacts[i, ch] + today.get((cu, ch), 0)
            if used >= cap_30d[ch]:
                # no count in the text: the served snapshot holds every distinct reason once
                why = why or f"the customer reached the {CHANNELS[ch]} limit of {cap_30d[ch]} contacts in 30 days"
                continue
            chosen_rows.append(i)
            chosen_channel.append(CHANNELS[ch])
            reasons.append(
                f"{CHANNELS[ch]}: " + (why if why else "the campaign's preferred channel the customer consented to")
            )
            offers[cu] += 1
            campaign_left[ca] -= 1
            channel_left[ch] -= 1
            today[(cu, ch)] = today.get((cu, ch), 0) + 1
            if campaign_left[ca] == 0:
                open_campaigns -= 1
            break
    chosen = pairs.iloc[chosen_rows][columns].copy()
    chosen["channel"] = chosen_channel
    chosen["priority"] = priority[chosen_rows]
    chosen["channel_reason"] = reasons
    chosen["rank"] = chosen.groupby("customer_id").cumcount() + 1
    return chosen.sort_values(["customer_id", "rank"], kind="stable").reset_index(drop=True)
