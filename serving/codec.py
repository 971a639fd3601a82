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
import orjson

BUCKET = 128  # customers per hash: within Redis's default hash-max-listpack-entries (128)
OFFER = struct.Struct("<BBBBBBHf")  # campaign, offer, channel, 3 reasons (255: none), propensity x1e4, priority
NO_REASON = 255
MAX_ID = 2**32 - 1  # customer ids are 32-bit in the packed snapshot (buckets, segments)
SEGMENT = np.dtype([("customer_id", "<u4"), ("priority", "<f4"), ("channel", "u1"), ("offer", "u1")])
MAX_CODES = 255
# a customer's masked profile (the console's sales view): segment, products held (bit i: PRODUCTS[i]),
# tenure in days; one field of a hash bucket ``...:pb:<customer_id // BUCKET>``
PROFILE = struct.Struct("<BHH")
# each day of a campaign's results (the snapshot's performance) carries its experiment's counts
EXPERIMENT = ("treated", "treated_accepted", "control", "control_accepted")
PRODUCTS = ("savings", "checking", "cts", "term_deposit", "credit_card", "personal_loan", "mortgage", "insurance")


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


def customer_buckets(
    customer_ids: np.ndarray, buffer: bytes, size: int = OFFER.size
) -> Iterator[tuple[int, bytes, bytes, bytes]]:
    """Per hash bucket: (bucket, uint32 customer ids, uint8 record counts, their records).

    ``customer_ids`` has one entry per row, ascending; ``buffer`` holds the rows' records of
    ``size`` bytes (OFFER records by default).
    """
    starts = np.flatnonzero(np.r_[True, customer_ids[1:] != customer_ids[:-1]])
    counts = np.diff(np.r_[starts, len(customer_ids)])
    if counts.max() > 255:
        raise EncodingError("a customer holds more than 255 offers")
    ids = customer_ids[starts]
    buckets = ids // BUCKET
    edges = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
    ends = np.r_[edges[1:], len(ids)]
    row_edges = np.r_[starts, len(customer_ids)]
    view = memoryview(buffer)
    if len(ids) and int(ids.max()) > MAX_ID:  # numpy would wrap it silently: another customer's offers
        raise EncodingError(f"customer {int(ids.max())} is past the cache's id range (at most {MAX_ID})")
    ids32, counts8 = ids.astype("<u4"), counts.astype(np.uint8)
    for first, last in zip(edges.tolist(), ends.tolist(), strict=True):
        rows = slice(row_edges[first] * size, row_edges[last] * size)
        yield int(buckets[first]), ids32[first:last].tobytes(), counts8[first:last].tobytes(), bytes(view[rows])


PROPENSITY_PRIORITY = struct.Struct("<Hf")  # the tail of an OFFER record, after its six codes
HEAD = OFFER.size - PROPENSITY_PRIORITY.size


class OffersJson:
    """A snapshot's packed offers straight to their JSON (``models.read_api.Offer``, or its
    ``MobileOffer`` fields for the app): the ids, validity and reasons behind an offer's six codes
    are encoded once per snapshot (bounded), the rank and the two figures per call; building dicts
    and serializing them cost the look-up hot path four times as much."""

    MAX_PARTS = 100_000

    def __init__(self, d: Dictionary):
        self.d = d
        self.parts: dict[bytes, tuple[bytes, bytes]] = {}

    def _parts(self, head: bytes) -> tuple[bytes, bytes]:
        ca, of, ch, *reasons = head
        d = self.d
        ids = orjson.dumps({"campaign_id": d.campaigns[ca], "offer_id": d.offers[of], "channel": d.channels[ch],
                            "valid_until": d.valid_until[ca]})[1:-1]  # fmt: skip
        parts = ids, orjson.dumps([d.reasons[r] for r in reasons if r != NO_REASON])
        if len(self.parts) >= self.MAX_PARTS:
            self.parts.clear()
        self.parts[head] = parts
        return parts

    def encode(self, blob: bytes, mobile: bool) -> bytes:
        """The JSON array of a customer's offers; ``mobile``: what the app shows only (``MOBILE_FIELDS``)."""
        out = []
        for rank, at in enumerate(range(0, len(blob), OFFER.size), start=1):
            head = blob[at : at + HEAD]
            ids, reasons = self.parts.get(head) or self._parts(head)
            if mobile:
                out.append(b'{"rank":%d,%b}' % (rank, ids))
                continue
            propensity, priority = PROPENSITY_PRIORITY.unpack_from(blob, at + HEAD)
            out.append(b'{"rank":%d,%b,"propensity":%b,"priority":%b,"reasons":%b}'
                       % (rank, ids, orjson.dumps(propensity / 10_000), orjson.dumps(round(priority, 2)), reasons))  # fmt: skip
        return b"[%b]" % b",".join(out)


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


def decode_profile(blob: bytes, segments: list[str]) -> dict:
    segment, held, tenure_days = PROFILE.unpack(blob)
    return {
        "segment": segments[segment],
        "products": [p for i, p in enumerate(PRODUCTS) if held >> i & 1],
        "tenure_days": tenure_days,
    }
