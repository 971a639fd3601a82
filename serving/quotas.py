"""Quotas of the read API (OWASP API4): how many look-ups a caller may make a minute and how many
segments they may export a day, counted in Redis so that every API worker and pod shares them.

A caller is the person or the integration (``Principal.kind`` and ``subject``), whatever token or
key they use. Past a quota the answer is 429 with ``Retry-After`` (the seconds until the window
ends).

Look-ups are the hot path, so each worker counts them in memory and adds its counts to Redis every
``SYNC_S`` seconds (one pipelined ``INCRBY`` per caller seen), learning the total of every worker
at the same time (and of every caller past half the quota); a caller it has not seen this minute
it first reads from Redis. A caller is
refused once the known total plus this worker's unsent count reaches the quota. Between two syncs
other workers' look-ups are not yet known, so a burst spread over N workers may pass the quota by
up to what N - 1 workers admit in ``SYNC_S``. Exports are rare and
counted in Redis one by one (``INCR``), exactly.
"""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from serving.auth import Principal

SYNC_S = 0.5
MINUTE, DAY = 60, 86_400


def caller(who: Principal) -> str:
    return f"{who.kind}:{who.subject}"


class LookupQuota:
    """``limit`` look-ups a caller per minute (UTC minutes), shared through Redis."""

    def __init__(self, prefix: str, limit: int):
        self.prefix = prefix
        self.limit = limit
        self.window = -1
        self.unsent: dict[str, int] = {}
        self.known: dict[str, int] = {}  # every worker's total for the window, as of the last sync

    def _roll(self, now: float) -> int:
        window = int(now // MINUTE)
        if window != self.window:
            self.window, self.unsent, self.known = window, {}, {}
        return window

    def _name(self, window: int, key: str) -> str:
        return f"{self.prefix}:quota:lookups:{window}:{key}"

    def take_known(self, who: Principal) -> float | bool | None:
        """``take`` without Redis, for a caller this worker knows this minute (the look-up hot path:
        no await, no deadline to arm); False when the caller must be read from Redis first."""
        now = time.time()
        window = self._roll(now)
        key = caller(who)
        known = self.known.get(key)
        if known is None:
            return False
        unsent = self.unsent.get(key, 0)
        if known + unsent >= self.limit:
            return (window + 1) * MINUTE - now
        self.unsent[key] = unsent + 1
        return None

    async def take(self, client: aioredis.Redis, who: Principal) -> float | None:
        """None when the caller may look one more customer up (counted), else the seconds to wait.
        A caller this worker has not seen this minute is first looked up in Redis (once a minute)."""
        while (wait := self.take_known(who)) is False:
            window, key = self.window, caller(who)
            total = int(await client.get(self._name(window, key)) or 0)
            if window == self.window:  # else the minute ended while Redis answered: read the new one
                self.known[key] = total
        return wait

    async def sync(self, client: aioredis.Redis) -> None:
        """Add this worker's counts to Redis and learn every worker's totals: of the callers it
        counted since the last sync, and of those past half their quota (where others' counts matter)."""
        window, sent = self.window, self.unsent
        near = {key for key, total in self.known.items() if total >= self.limit // 2}
        keys = [*sent, *(near - set(sent))]
        if not keys:
            return
        self.unsent = {}
        async with client.pipeline(transaction=False) as pipe:
            for key in keys:
                name = self._name(window, key)
                pipe.incrby(name, sent.get(key, 0))
                pipe.expire(name, 2 * MINUTE)
            totals = (await pipe.execute())[::2]
        if window == self.window:
            self.known.update(zip(keys, totals, strict=True))


async def take_export(client: aioredis.Redis, prefix: str, limit: int, who: Principal) -> float | None:
    """None when the caller may export one more segment today (UTC; counted), else the seconds to wait."""
    now = time.time()
    day = int(now // DAY)
    name = f"{prefix}:quota:exports:{day}:{caller(who)}"
    async with client.pipeline(transaction=False) as pipe:
        pipe.incr(name)
        pipe.expire(name, 2 * DAY)
        count, _ = await pipe.execute()
    if count > limit:
        await client.decr(name)  # a refused export does not use the quota up
        return (day + 1) * DAY - now
    return None
