"""Faults on demand: what a real integration API does to its clients, at set rates, from the seed.

Transport faults hit a request attempt: a 5xx answer, a 429 with ``Retry-After``, a slow answer,
a connection dropped half-way through the body. Whether the n-th attempt at a given request
faults is a pure function of (seed, request, n), so a run is reproducible and a retried request
eventually gets through.

Data faults hit records and pages, whatever the attempt: a record that breaks its contract (bad
DNI, unknown currency, a missing required field, a wrong type), a page whose last record is
served again at the start of the next page (a duplicate across pages), and (only when asked for
by name) records left out of their page though the control total counts them. The oracle
(:mod:`sandbox.oracle`) knows exactly which records were broken and how.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, fields

import numpy as np

from sandbox.draws import uniform

TRANSPORT = ("server_error", "throttle", "slow", "drop")

# the ways a record can break its contract, per entity: (kind, field it breaks)
BAD_KINDS: dict[str, list[tuple[str, str]]] = {
    "customers": [("bad_dni", "document_number"), ("missing_field", "full_name"), ("wrong_type", "consent_sms")],
    "accounts": [("unknown_currency", "currency"), ("missing_field", "product"), ("wrong_type", "balance")],
    "transactions": [("unknown_currency", "currency"), ("missing_field", "booking_date"), ("wrong_type", "amount")],
    "campaign_responses": [("missing_field", "campaign_id"), ("wrong_type", "contact_date")],
}
_WRONG_VALUES = {"consent_sms": "perhaps", "balance": "12,5O0.00", "amount": {"value": "10.00"}, "contact_date": [1]}


@dataclass(frozen=True)
class Faults:
    """Rates in [0, 1]: of request attempts (transport faults), of pages (duplicate), of records
    (bad_record)."""

    server_error: float = 0.0
    throttle: float = 0.0
    slow: float = 0.0
    drop: float = 0.0
    duplicate: float = 0.0
    bad_record: float = 0.0
    omit: float = 0.0  # records left out of their page but counted in the control total (not in "all")
    slow_s: float = 0.3
    retry_after_s: int = 1
    token_ttl_s: float = 900.0  # how long an access token lives (short: clients must renew mid-run)

    @classmethod
    def parse(cls, spec: str | None) -> Faults:
        """``"server_error=0.05,throttle=0.02,..."``; ``"all"`` turns every fault on."""
        if not spec:
            return cls()
        if spec.strip() == "all":
            return cls.everything()
        known = {f.name: f.type for f in fields(cls)}
        values: dict[str, float] = {}
        for part in spec.split(","):
            name, _, value = part.partition("=")
            name = name.strip()
            if name not in known:
                raise ValueError(f"unknown fault {name!r} in {spec!r}; known: {', '.join(known)}")
            try:
                values[name] = float(value)
            except ValueError:
                raise ValueError(f"fault {name!r} needs a number, got {value!r}") from None
            if name not in ("slow_s", "retry_after_s", "token_ttl_s") and not 0 <= values[name] <= 1:
                raise ValueError(f"fault rate {name}={value} is not between 0 and 1")
        if "retry_after_s" in values:
            values["retry_after_s"] = int(values["retry_after_s"])
        return cls(**values)

    @classmethod
    def everything(cls) -> Faults:
        return cls(server_error=0.05, throttle=0.03, slow=0.03, drop=0.03, duplicate=0.05, bad_record=0.004)

    @property
    def any_transport(self) -> bool:
        return any(getattr(self, k) > 0 for k in TRANSPORT)

    def spec(self) -> str:
        return ",".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self))


def _h(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def transport_fault(faults: Faults, seed: int, request: str, attempt: int) -> str | None:
    """Which transport fault (if any) the ``attempt``-th try at ``request`` meets."""
    if not faults.any_transport:
        return None
    u = float(uniform(seed, _h(request), attempt, 100))
    for kind in TRANSPORT:
        rate = getattr(faults, kind)
        if u < rate:
            return kind
        u -= rate
    return None


def page_is_duplicated(faults: Faults, seed: int, entity: str, page_start: str) -> bool:
    """Whether the page starting at ``page_start`` ends by handing its last record to the next one."""
    return faults.duplicate > 0 and float(uniform(seed, _h(f"{entity}:{page_start}"), 101)) < faults.duplicate


def bad_kind(faults: Faults, seed: int, entity: str, keys: list) -> list[tuple[str, str] | None]:
    """For each record key: the way the record is broken, or None."""
    if faults.bad_record <= 0 or not keys:
        return [None] * len(keys)
    hashed = np.array([_h(f"{entity}:{k}") for k in keys], dtype=np.uint64)
    hit = uniform(seed, hashed, 102) < faults.bad_record
    which = (uniform(seed, hashed, 103) * len(BAD_KINDS[entity])).astype(int)
    return [BAD_KINDS[entity][w] if h else None for h, w in zip(hit.tolist(), which.tolist(), strict=True)]


def omitted(faults: Faults, seed: int, entity: str, keys: list) -> list[bool]:
    """For each record key: whether the listing silently leaves the record out."""
    if faults.omit <= 0 or not keys:
        return [False] * len(keys)
    hashed = np.array([_h(f"{entity}:{k}") for k in keys], dtype=np.uint64)
    return (uniform(seed, hashed, 104) < faults.omit).tolist()


def break_record(record: dict, kind: tuple[str, str]) -> dict:
    name, field = kind
    broken = dict(record)
    if name == "bad_dni":
        broken["document_type"] = "DNI"
        broken["document_number"] = broken["document_number"][:5] + "O" + broken["document_number"][6:8]
    elif name == "unknown_currency":
        broken[field] = "PES"
    elif name == "missing_field":
        del broken[field]
    elif name == "wrong_type":
        broken[field] = _WRONG_VALUES[field]
    return broken


class FaultInjection:
    """ASGI middleware giving the sandbox's list endpoints their transport faults."""

    def __init__(self, app, faults: Faults, seed: int):
        self.app, self.faults, self.seed = app, faults, seed
        self.attempts: dict[str, int] = {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/v1/") or not self.faults.any_transport:
            return await self.app(scope, receive, send)
        request = f"{scope['path']}?{scope['query_string'].decode()}"
        attempt = self.attempts.get(request, 0)
        self.attempts[request] = attempt + 1
        fault = transport_fault(self.faults, self.seed, request, attempt)
        if fault == "server_error":
            return await _answer(send, 503, b'{"detail":"service temporarily unavailable"}')
        if fault == "throttle":
            headers = [(b"retry-after", str(self.faults.retry_after_s).encode())]
            return await _answer(send, 429, b'{"detail":"too many requests"}', headers)
        if fault == "slow":
            await asyncio.sleep(self.faults.slow_s)
        if fault != "drop":
            return await self.app(scope, receive, send)

        # the connection drops half-way through the body: the client gets a truncated answer
        start: dict = {}
        body = bytearray()

        async def capture(message):
            if message["type"] == "http.response.start":
                start.update(message)
            else:
                body.extend(message.get("body", b""))

        await self.app(scope, receive, capture)
        headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": start["status"], "headers": headers})
        await send({"type": "http.response.body", "body": bytes(body[: len(body) // 2]), "more_body": True})
        raise ConnectionAbortedError("sandbox fault: connection dropped mid-body")


async def _answer(send, status: int, body: bytes, headers: list | None = None) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            + (headers or []),
        }
    )
    await send({"type": "http.response.body", "body": body})
