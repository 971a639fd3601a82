"""The read API's audit trail (docs/decisions/0011): every ``/v1/`` call, answered or refused, with
who made it (the customer, the employee or the integration), their role, what they asked for, the
outcome, the source address, the time and the snapshot it was read from; nothing else personal.

Records are appended before the answer leaves: when one cannot be written the caller gets 503, not
an unaudited answer. Each API process writes its own file per UTC day
(``<audit dir>/api-YYYY-MM-DD-<host>-<pid>.jsonl``, created 0600 in a 0700 directory); each record
carries the hash of the one before it and its own (``prev``, ``hash``: SHA-256), so an edited,
inserted or removed record breaks the chain, which ``crm audit verify`` checks.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import structlog

from serving.auth import Principal

GENESIS = "0" * 64
UNAVAILABLE = orjson.dumps({"detail": "the audit trail cannot be written: no answer is given unaudited"})
log = structlog.get_logger(__name__)


def _digest(record: dict) -> str:
    """The hash of a record: SHA-256 of its JSON without ``hash`` (its fields in the order written)."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(orjson.dumps(body)).hexdigest()


class AuditTrail:
    """This process's append-only, hash-chained audit file of the day."""

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.directory = directory
        self.process = f"{socket.gethostname()}-{os.getpid()}"
        self.day: str | None = None
        self.fd: int | None = None
        self.prev = GENESIS
        self._second, self._stamp = -1, ""

    def path_for(self, day: str) -> Path:
        return self.directory / f"api-{day}-{self.process}.jsonl"

    def _open(self, day: str) -> None:
        self.close()
        path = self.path_for(day)
        self.prev = GENESIS
        if path.exists() and path.stat().st_size:  # the same process id again today: go on with its chain
            *_, last = read_file(path)
            self.prev = last["hash"]
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.day = day

    def record(self, fields: dict) -> None:
        """Append one record (raises ``OSError`` when it cannot be written whole)."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second, self._stamp = second, dt.datetime.fromtimestamp(second, dt.UTC).isoformat()
        day = self._stamp[:10]
        if day != self.day or self.fd is None:
            self._open(day)
        body = orjson.dumps({"at": self._stamp, **fields, "prev": self.prev})
        digest = hashlib.sha256(body).hexdigest()
        line = b'%s,"hash":"%s"}\n' % (body[:-1], digest.encode())  # the record, then its hash
        if os.write(self.fd, line) != len(line):
            raise OSError("short write to the audit trail")
        self.prev = digest

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def read_file(path: Path) -> Iterator[dict]:
    with open(path, "rb") as fh:
        for line in fh:
            yield orjson.loads(line)


def read_records(directory: Path) -> Iterator[dict]:
    """Every record of the trail, file by file (by day, then process), in the order written."""
    for path in sorted(directory.glob("api-*.jsonl")):
        yield from read_file(path)


def verify(directory: Path) -> tuple[int, list[str]]:
    """(records checked, problems): each record's hash must be its own and ``prev`` the hash of the
    record before it in its file (the first: zeros)."""
    count, problems = 0, []
    for path in sorted(directory.glob("api-*.jsonl")):
        prev = GENESIS
        with open(path, "rb") as fh:
            for number, line in enumerate(fh, start=1):
                count += 1
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    problems.append(f"{path.name} line {number}: not a JSON record")
                    prev = hashlib.sha256(line).hexdigest()  # no record matches it: the next one fails too
                    continue
                if record.get("prev") != prev:
                    problems.append(f"{path.name} line {number}: does not follow the record before it "
                                    "(a record was removed, inserted or edited)")  # fmt: skip
                if record.get("hash") != _digest(record):
                    problems.append(f"{path.name} line {number}: its content does not match its hash (edited)")
                prev = record.get("hash", "")
    return count, problems


def _header(headers, name: bytes) -> str | None:
    return next((v.decode("latin-1") for k, v in headers if k == name), None)


def call_record(scope, status: int, snapshot_id: str | None) -> dict:
    """What the trail keeps of one call."""
    who: Principal | None = scope.get("crm.principal")
    query = scope.get("query_string", b"").decode("latin-1")
    client = scope.get("client")
    return {
        "kind": who.kind if who else None,
        "who": who.subject if who else None,
        "role": who.role if who else None,
        "credential": who.credential if who else None,
        "what": f"{scope['method']} {scope['path']}{'?' + query if query else ''}",
        "customer_id": scope.get("crm.customer_id"),  # whose offers, on a look-up
        "accept": "csv" if "text/csv" in (_header(scope["headers"], b"accept") or "") else None,
        "status": status,
        "source": client[0] if client else None,
        "forwarded_for": _header(scope["headers"], b"x-forwarded-for"),
        "snapshot_id": snapshot_id,
    }


def recorded(trail: AuditTrail, record: dict) -> bool:
    """Write ``record``; False (logged) when it cannot be written: the caller then answers 503."""
    try:
        trail.record(record)
    except OSError as exc:
        log.error("audit trail not writable: answering 503", error=str(exc))
        return False
    return True


async def refuse_unaudited(send) -> None:
    """The 503 of a call whose record could not be written."""
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/json"), (b"content-length", b"%d" % len(UNAVAILABLE))]})  # fmt: skip
    await send({"type": "http.response.body", "body": UNAVAILABLE})


def _audited(path: str) -> bool:
    """The API's business calls and the console's pages (not its stylesheet)."""
    return path.startswith("/v1/") or (path.startswith("/console") and not path.startswith("/console/static/"))


class AuditCalls:
    """ASGI layer: every ``/v1/`` call and console page is recorded when its answer starts, before it leaves; if the
    record cannot be written the caller gets 503 instead of the answer. (The offers fast path,
    outside this layer, records its own calls the same way.)"""

    def __init__(self, app, trail: AuditTrail):
        self.app = app
        self.trail = trail

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not _audited(scope["path"]):
            return await self.app(scope, receive, send)
        refused = False

        async def send_recorded(message):
            nonlocal refused
            if refused:
                return
            if message["type"] == "http.response.start":
                snapshot_id = _header(message.get("headers", []), b"x-snapshot-id")
                if not recorded(self.trail, call_record(scope, message["status"], snapshot_id)):
                    refused = True
                    await refuse_unaudited(send)
                    return
            await send(message)

        await self.app(scope, receive, send_recorded)
