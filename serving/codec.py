"""The compact encoding of a snapshot in Redis.

A snapshot stores ids once, in its *dictionary* (campaigns, offers, channels, reason texts, each
campaign's validity), and everything else as small integers into it:

- a customer's ranked offers: 12 bytes an offer (``OFFER``), best first, as one field of a hash
  bucket ``...:cb:<customer_id // BUCKET>`` (small hashes stay listpack-encoded in Redis: a few
  bytes of overhead per customer instead of a key's ~60);
- a segment (campaign x channel, and campaign x every channel): one string of 10-byte entries
  (``SEGMENT``) in priority order, so a page is one ``GETRANGE``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np

BUCKET = 128  # customers per hash: within Redis's default hash-max-listpack-entries (128)
OFFER = struct.Struct("<BBBBBBHf")  # campaign, offer, channel, 3 reasons (255: none), propensity x1e4, priority
NO_REASON = 255
SEGMENT = np.dtype([("customer_id", "<u4"), ("priority", "<f4"), ("channel", "u1"), ("offer", "u1")])
MAX_CODES = 255


class EncodingError(ValueError):
    pass


@dataclass(frozen=True)
class Dictionary:
    campaigns: list[str]
    offers: list[str]
    channels: list[str]
    reasons: list[str]
    valid_until: list[str]  # per campaign

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Dictionary:
        return cls(**data)


def bucket_of(customer_id: int) -> int:
    return customer_id // BUCKET


def codes(values: np.ndarray, vocabulary: list[str], what: str) -> np.ndarray:
    index = {v: i for i, v in enumerate(vocabulary)}
    if len(index) > MAX_CODES:
        raise EncodingError(f"a snapshot holds at most {MAX_CODES} distinct {what}, got {len(index)}")
    return np.array([index[v] for v in values], dtype=np.uint8) if len(values) else np.zeros(0, np.uint8)


def encode_offers(
    campaign: np.ndarray,
    offer: np.ndarray,
    channel: np.ndarray,
    reasons: np.ndarray,  # (n, 3) uint8, NO_REASON where fewer
    propensity: np.ndarray,
    priority: np.ndarray,
) -> bytes:
    """Rows (already in customer then rank order) as one buffer of ``OFFER`` records."""
    rec = np.empty(
        len(campaign),
        dtype=np.dtype(
            [
                ("campaign", "u1"),
                ("offer", "u1"),
                ("channel", "u1"),
                ("reasons", "u1", (3,)),
                ("propensity", "<u2"),
                ("priority", "<f4"),
            ]
        ),
    )
    rec["campaign"], rec["offer"], rec["channel"], rec["reasons"] = campaign, offer, channel, reasons
    rec["propensity"] = np.clip(np.rint(propensity * 10_000), 0, 65_535)
    rec["priority"] = priority
    return rec.tobytes()


def customer_fields(customer_ids: np.ndarray, buffer: bytes) -> Iterator[tuple[int, dict[str, bytes]]]:
    """(bucket, {customer id: its offers' bytes}) for customers in ascending order."""
    view = memoryview(buffer)
    starts = np.flatnonzero(np.r_[True, customer_ids[1:] != customer_ids[:-1]])
    ends = np.r_[starts[1:], len(customer_ids)]
    ids = customer_ids[starts].tolist()
    size = OFFER.size
    bucket, fields = None, {}
    for cid, start, end in zip(ids, starts.tolist(), ends.tolist(), strict=True):
        b = cid // BUCKET
        if b != bucket:
            if fields:
                yield bucket, fields
            bucket, fields = b, {}
        fields[str(cid)] = bytes(view[start * size : end * size])
    if fields:
        yield bucket, fields


def decode_offers(blob: bytes, d: Dictionary) -> list[dict]:
    out = []
    for rank, (ca, of, ch, r1, r2, r3, prop, prio) in enumerate(OFFER.iter_unpack(blob), start=1):
        out.append(
            {
                "rank": rank,
                "campaign_id": d.campaigns[ca],
                "offer_id": d.offers[of],
                "channel": d.channels[ch],
                "valid_until": d.valid_until[ca],
                "propensity": prop / 10_000,
                "priority": round(prio, 2),
                "reasons": [d.reasons[r] for r in (r1, r2, r3) if r != NO_REASON],
            }
        )
    return out


def decode_segment(blob: bytes, d: Dictionary, first_position: int) -> list[dict]:
    entries = np.frombuffer(blob, dtype=SEGMENT)
    return [
        {
            "customer_id": int(cid),
            "position": first_position + i,
            "offer_id": d.offers[of],
            "channel": d.channels[ch],
            "priority": round(float(p), 2),
        }
        for i, (cid, p, ch, of) in enumerate(entries.tolist())
    ]
