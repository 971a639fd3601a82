"""Quotas of the read API (OWASP API4): how many look-ups a caller may make a minute and how many
segments they may export a day, counted in Redis so that every API worker and pod shares them.

A caller is the person or the integration (``Principal.kind`` and ``subject``), whatever token or
key they use. Past a quota the answer is 429 with ``Retry-After`` (the seconds until the window
ends).

Segment rows are counted a day, pages and CSV exports together (``CRM_QUOTA_SEGMENT_ROWS_PER_DAY``),
beside the day's count of exports: whoever reads a campaign's customers, a page at a time or whole,
reads them against one quota.

Look-ups are the hot path, so each worker counts them in memory and adds its counts to Redis every
``SYNC_S`` seconds (one pipelined ``INCRBY`` per caller seen), learning the total of every worker
at the same time (and of every caller past half the quota); a caller it has not seen this minute
it first reads from Redis. A caller is
refused once the known total plus this worker's unsent count (those a sync is sending included)
reaches the quota; a sync that fails keeps its counts for the next one (a sync that failed after
Redis counted them counts them twice: a quota errs towards refusing). Between two syncs
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
        self.sending: dict[str, int] = {}  # counts a sync is adding to Redis right now: still counted
        self.known: dict[str, int] = {}  # every worker's total for the window, as of the last sync

    def _roll(self, now: float) -> int:
        window = int(now // MINUTE)
        if window != self.window:
            self.window, self.unsent, self.sending, self.known = window, {}, {}, {}
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
        if known + unsent + (self.sending.get(key, 0) if self.sending else 0) >= self.limit:
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
        # what is being sent stays counted until Redis has it, and comes back if Redis fails
        self.unsent, self.sending = {}, sent
        try:
            async with client.pipeline(transaction=False) as pipe:
                for key in keys:
                    name = self._name(window, key)
                    pipe.incrby(name, sent.get(key, 0))
                    pipe.expire(name, 2 * MINUTE)
                totals = (await pipe.execute())[::2]
        except BaseException:
            if window == self.window:  # for the next sync
                for key, count in sent.items():
                    self.unsent[key] = self.unsent.get(key, 0) + count
            raise
        finally:
            if window == self.window:
                self.sending = {}
        if window == self.window:
            self.known.update(zip(keys, totals, strict=True))


async def take_daily(
    client: aioredis.Redis, prefix: str, who: Principal, counts: dict[str, tuple[int, int]]
) -> str | None:
    """Count ``counts`` (quota name: (amount, the day's limit)) against the caller's day (UTC) in
    one round trip; None when every one fits, else the name of the first that does not (and nothing
    is counted: a refused call uses no quota up)."""
    day = int(time.time() // DAY)
    names = {what: f"{prefix}:quota:{what}:{day}:{caller(who)}" for what in counts}
    async with client.pipeline(transaction=False) as pipe:
        for what, (amount, _) in counts.items():
            pipe.incrby(names[what], amount)
            pipe.expire(names[what], 2 * DAY)
        totals = (await pipe.execute())[::2]
    over = next((what for (what, (_, limit)), total in zip(counts.items(), totals, strict=True) if total > limit), None)
    if over is not None:
        async with client.pipeline(transaction=False) as pipe:
            for what, (amount, _) in counts.items():
                pipe.decrby(names[what], amount)
            await pipe.execute()
    return over


def seconds_to_tomorrow() -> float:
    now = time.time()
    return (int(now // DAY) + 1) * DAY - now
