"""Reading the live snapshot from Redis: which snapshot is live, and a read that stays within one."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis

from crm.cache import connect_async
from crm.services import READ_API_CLIENT_NAME
from serving.answers import NoSnapshot
from serving.codec import SEGMENT, Dictionary, OffersJson, decode_segment
from serving.keys import Keys

T = TypeVar("T")

SID_CACHE_S = 0.25  # how stale the API's idea of the live snapshot id may be
WATCH_S = 0.05  # how often the deadline watchdog looks (a read overruns its deadline by at most this)
EXPIRED = -1.0


class Deadlines:
    """The deadline of every read in flight, kept by one watchdog task that cancels a read past it
    (which then raises ``TimeoutError``): on the look-up hot path a dictionary entry costs a tenth
    of arming and cancelling a timer per request, as ``asyncio.timeout`` does."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.running: dict[asyncio.Task, float] = {}
        self.watching: asyncio.Task | None = None

    def start(self) -> None:
        self.watching = asyncio.get_running_loop().create_task(self._watch())

    def stop(self) -> None:
        if self.watching is not None:
            self.watching.cancel()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_S)
            now = time.monotonic()
            for task, deadline in list(self.running.items()):
                if EXPIRED < deadline <= now:
                    self.running[task] = EXPIRED
                    task.cancel()

    async def run(self, read: Awaitable[T]) -> T:
        """``await read``, or ``TimeoutError`` once ``seconds`` have passed."""
        task = asyncio.current_task()
        if task in self.running or self.watching is None:  # nested, or no watchdog: a timer of its own
            async with asyncio.timeout(self.seconds):
                return await read
        self.running[task] = time.monotonic() + self.seconds
        try:
            return await read
        except asyncio.CancelledError:
            if self.running.get(task) == EXPIRED:
                task.uncancel()
                raise TimeoutError(f"no answer from Redis within {self.seconds} s") from None
            raise
        finally:
            del self.running[task]


class SnapshotGone(RuntimeError):
    """A snapshot expired while a read that started on it was still going (a long export)."""


class SnapshotReader:
    """The read API's two Redis clients (text, and bytes for the packed values) and what it knows of
    the live snapshot: its id, re-read at most every ``SID_CACHE_S``, and the dictionaries of the
    last few snapshots."""

    def __init__(self, keys: Keys, deadline_s: float = 2.0):
        self.keys = keys
        self.deadline_s = deadline_s  # a read Redis has not answered by then raises TimeoutError (503)
        self.text: aioredis.Redis
        self.raw: aioredis.Redis
        self.sid: str | None = None
        self.until = 0.0
        self.dictionaries: dict[str, Dictionary] = {}
        self.encoders: dict[str, OffersJson] = {}
        self.deadlines = Deadlines(deadline_s)

    def open(self, redis_url: str) -> None:
        """Connect (in the running event loop, whose watchdog keeps the reads' deadlines)."""
        self.deadlines.start()
        # no per-command timeout on the look-up client: redis-py wraps every send in a task for it,
        # which costs more than the look-up; a dead Redis still fails fast (connection errors)
        self.text = connect_async(redis_url, decode_responses=True, client_name=READ_API_CLIENT_NAME)
        self.raw = connect_async(redis_url, client_name=READ_API_CLIENT_NAME, socket_timeout=None)

    async def close(self) -> None:
        self.deadlines.stop()
        await self.text.aclose()
        await self.raw.aclose()

    async def current_sid(self, fresh: bool = False) -> str:
        now = time.monotonic()
        if fresh or now >= self.until:
            sid = await self.text.get(self.keys.current)
            if sid is None:
                raise NoSnapshot
            self.sid, self.until = sid, now + SID_CACHE_S
        return self.sid  # type: ignore[return-value]

    async def in_snapshot(self, read: Callable[[str], Awaitable[T | None]]) -> tuple[str, T | None]:
        """Run ``read`` against one snapshot, the live one; every read names the snapshot it used.

        The live id is cached for ``SID_CACHE_S``: a read that finds nothing (the snapshot it knew
        was just replaced and dropped) asks Redis again and reads once more from the live one.
        A stalled Redis raises TimeoutError after ``deadline_s``: no request hangs on it.
        """

        async def in_the_live_one() -> tuple[str, T | None]:
            sid = await self.current_sid()
            value = await read(sid)
            if value is None:
                latest = await self.current_sid(fresh=True)
                if latest != sid:
                    sid, value = latest, await read(latest)
            return sid, value

        return await self.deadlines.run(in_the_live_one())

    async def json(self, key_of: Callable[[str], str]) -> tuple[str, Any]:
        """A JSON value of the live snapshot (its metadata, its campaign list)."""

        async def read(sid: str):
            raw = await self.text.get(key_of(sid))
            return json.loads(raw) if raw is not None else None

        sid, value = await self.in_snapshot(read)
        if value is None:
            raise NoSnapshot
        return sid, value

    async def dictionary(self, sid: str) -> Dictionary | None:
        """The snapshot's dictionary (ids behind the packed codes), read once per snapshot."""
        d = self.dictionaries.get(sid)
        if d is None:
            raw = await self.text.get(self.keys.meta(sid))
            if raw is None:
                return None
            d = Dictionary.from_json(json.loads(raw)["dictionary"])
            if len(self.dictionaries) >= 4:
                self.dictionaries.pop(next(iter(self.dictionaries)))
            self.dictionaries[sid] = d
        return d

    async def offers_json(self, sid: str) -> OffersJson | None:
        """The snapshot's encoder of offers as JSON (its dictionary's, made once per snapshot)."""
        encoder = self.encoders.get(sid)
        if encoder is None:
            d = await self.dictionary(sid)
            if d is None:
                return None
            encoder = OffersJson(d)
            if len(self.encoders) >= 4:
                self.encoders.pop(next(iter(self.encoders)))
            self.encoders[sid] = encoder
        return encoder

    async def live_meta(self) -> tuple[str | None, dict | None]:
        """The live snapshot's id and metadata, read fresh from Redis (the ops probes)."""
        async with asyncio.timeout(self.deadline_s):
            sid = await self.text.get(self.keys.current)
            raw = await self.text.get(self.keys.meta(sid)) if sid else None
        return sid, json.loads(raw) if raw else None

    async def segment_csv(self, key: str, d: Dictionary, total: int, chunk: int = 10_000) -> AsyncIterator[str]:
        """The whole segment as CSV, in priority order, read from Redis a chunk at a time: the
        ``total`` rows it had when the export started. A snapshot replaced during the export stays
        readable for a while (serving.publish drains it); should it be gone before the end, the export
        fails rather than end a 200 with a truncated file."""
        yield "position,customer_id,offer_id,channel,priority\n"
        size = SEGMENT.itemsize
        start = 0
        while start < total:
            async with asyncio.timeout(self.deadline_s):
                blob = await self.raw.getrange(key, start * size, (min(start + chunk, total)) * size - 1)
            if len(blob) < (min(start + chunk, total) - start) * size:
                raise SnapshotGone(f"{key} expired after {start} of {total} rows of the export")
            rows = decode_segment(blob, d, start + 1)
            yield "".join(
                f"{e['position']},{e['customer_id']},{e['offer_id']},{e['channel']},{e['priority']:.2f}\n" for e in rows
            )
            start += chunk
