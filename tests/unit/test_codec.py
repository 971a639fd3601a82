"""The snapshot codec, without services: packed offers come back as the JSON the API documents."""

from __future__ import annotations

import numpy as np
import orjson

from models.read_api import MOBILE_FIELDS, MobileOffer, Offer
from serving.codec import NO_REASON, Dictionary, OffersJson, encode_offers

D = Dictionary(
    campaigns=["CMP-CARD", "CMP-LOAN", "CMP-\u00f1"],
    offers=["OFR-1", "OFR-2", 'OFR-"3"'],
    channels=["SMS", "EMAIL", "PHONE"],
    reasons=["holds a savings account", "uses the bank often", 'says "hola" \u00e1'],
    valid_until=["2027-01-31", "2027-02-28", "2027-03-31"],
)


def _packed(rng: np.random.Generator, n: int):
    campaign, offer, channel = (rng.integers(0, 3, n).astype(np.uint8) for _ in range(3))
    reasons = rng.integers(0, 3, (n, 3)).astype(np.uint8)
    reasons[rng.random((n, 3)) < 0.4] = NO_REASON
    propensity = rng.random(n)
    priority = rng.random(n) * 800
    blob = encode_offers(campaign, offer, channel, reasons, propensity, priority)
    return blob, campaign, offer, channel, reasons, propensity, priority


def test_packed_offers_encode_to_the_documented_json_in_rank_order():
    rng = np.random.default_rng(3)
    blob, campaign, offer, channel, reasons, _, _ = _packed(rng, 5)
    offers = orjson.loads(OffersJson(D).encode(blob, mobile=False))
    assert [o["rank"] for o in offers] == [1, 2, 3, 4, 5]
    for o, ca, of, ch, rs in zip(offers, campaign, offer, channel, reasons, strict=True):
        Offer.model_validate(o)
        assert (o["campaign_id"], o["offer_id"], o["channel"]) == (D.campaigns[ca], D.offers[of], D.channels[ch])
        assert o["valid_until"] == D.valid_until[ca]
        assert o["reasons"] == [D.reasons[r] for r in rs if r != NO_REASON]
        assert 0 <= o["propensity"] <= 1 and o["priority"] == round(o["priority"], 2)
    assert list(offers[0]) == ["rank", "campaign_id", "offer_id", "channel", "valid_until", "propensity", "priority",
                               "reasons"]  # fmt: skip


def test_the_mobile_app_gets_what_to_show_only():
    blob, *_ = _packed(np.random.default_rng(4), 3)
    full = orjson.loads(OffersJson(D).encode(blob, mobile=False))
    mobile = orjson.loads(OffersJson(D).encode(blob, mobile=True))
    assert mobile == [{k: o[k] for k in MOBILE_FIELDS} for o in full]
    assert all(MobileOffer.model_validate(o) for o in mobile)


def test_the_same_codes_encode_the_same_whatever_the_cache_holds():
    encoder = OffersJson(D)
    encoder.MAX_PARTS = 2  # the cache of encoded codes fills and starts again
    blob, *_ = _packed(np.random.default_rng(5), 40)
    first = encoder.encode(blob, mobile=False)
    assert encoder.encode(blob, mobile=False) == first == OffersJson(D).encode(blob, mobile=False)
    assert OffersJson(D).encode(b"", mobile=False) == b"[]"


def test_a_customer_id_past_32_bits_stops_the_publish_instead_of_wrapping_to_another_customer():
    import pytest

    from serving.codec import MAX_ID, EncodingError, customer_buckets

    ids = np.array([5, MAX_ID + 6], dtype=np.int64)  # wrapped, the second would read as customer 5
    with pytest.raises(EncodingError, match=f"customer {MAX_ID + 6} is past the cache's id range"):
        list(customer_buckets(ids, b"\0" * 2, size=1))
    assert [b for b, *_ in customer_buckets(ids[:1], b"\0", size=1)] == [0]
