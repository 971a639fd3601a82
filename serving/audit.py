"""The read API's audit trail (docs/decisions/0011, 0015): every ``/v1/`` call and console page,
answered or refused, with who made it (the customer, the employee or the integration), their role,
what they asked for, the outcome, the source address, the time and the snapshot it was read from;
nothing else personal, every field capped, credentials never written.

Records are appended before the answer leaves: when one cannot be written the caller gets 503, not
an unaudited answer. Each API process writes its own file per UTC day
(``<audit dir>/api-YYYY-MM-DD-<host>-<pid>.jsonl``, created 0600 in a 0700 directory).

What makes it trustworthy (Ley 29733, PCI DSS 10):

- **Keyed.** Each record carries its number in the file (``seq``), the MAC of the record before it
  (``prev``) and its own (``mac``): HMAC-SHA256 under a key the deployment mounts
  (``CRM_AUDIT_KEY_FILE``), never beside the trail. Editing, inserting or removing a record breaks
  the chain, and recomputing it needs the key.
- **Sealed.** Every ``CRM_AUDIT_SEAL_S`` seconds (when it wrote since), when its day ends and when
  it stops, a process appends a seal of its file (record count, last MAC) to the ledger
  ``seals.jsonl``, itself a MAC chain; a file's first record follows the ledger's last seal, so
  each day is chained to the seals before it. A file cut short, or deleted, no longer matches its
  seal; a seal removed breaks the ledger's chain.
- **Sent off the host.** Each seal is also logged (logger ``crm.audit``, one JSON line per seal,
  no personal data) to the deployment's log sink, which the API cannot rewrite: ``crm audit verify
  --seals <exported log>`` checks the trail against that copy too, which catches even the ledger's
  last seals removed together with the records they sealed.

Verification is ``serving.audit_verify``.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import hmac
import logging
import os
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, quote

import orjson
import structlog

from crm.settings import SettingsError
from serving.auth import Principal

GENESIS = "0" * 64
LEDGER = "seals.jsonl"
SEAL_EVENT = "crm_audit_seal"
UNAVAILABLE = orjson.dumps({"detail": "the audit trail cannot be written: no answer is given unaudited"})
CREDENTIAL_IN_URL = (
    "credentials go in the Authorization or X-API-Key header, never in the URL: this call was refused and "
    "the query parameter {name} was not recorded"
)
# query parameters that carry a credential: refused with 400, their value never written
CREDENTIAL_PARAMS = frozenset({
    "api_key", "apikey", "api-key", "x-api-key", "key", "access_token", "id_token", "refresh_token", "token",
    "jwt", "bearer", "authorization", "auth", "password", "passwd", "pwd", "secret", "client_secret",
    "session", "crm_console", "code",
})  # fmt: skip
REDACTED = "[redacted]"
CAP = {"what": 512, "who": 128, "credential": 64, "forwarded_for": 256, "source": 64}
log = structlog.get_logger(__name__)
seal_log = logging.getLogger("crm.audit")


# ---- keys -----------------------------------------------------------------------------------------


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"crm-audit-key-id:" + key).hexdigest()[:12]


@dataclass(frozen=True)
class AuditKeys:
    """The keys of the trail: ``current`` signs, every key (retired ones included) verifies."""

    current: str  # key id
    by_id: dict[str, bytes]
    # each key's HMAC with its pads computed once: a record's MAC is a copy and an update (the look-up
    # hot path writes one per call; a one-shot hmac.digest costs half as much again)
    _keyed: dict[str, hmac.HMAC] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._keyed.update({kid: hmac.new(key, digestmod=hashlib.sha256) for kid, key in self.by_id.items()})

    def mac(self, kid: str, body: bytes) -> str:
        h = self._keyed[kid].copy()
        h.update(body)
        return h.hexdigest()


def load_keys(path: Path, create: bool) -> AuditKeys:
    """The keys in ``path`` (one a line, the first signs); made there first when ``create``
    (locally: a development key, 0600, in a 0700 directory)."""
    if not path.exists() and create:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
    try:
        lines = [line.strip().encode() for line in path.read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise SettingsError(
            f"CRM_AUDIT_KEY_FILE: the audit trail's key cannot be read from {path}: {exc.strerror}"
        ) from None
    if not lines or any(len(line) < 32 for line in lines):
        raise SettingsError(f"CRM_AUDIT_KEY_FILE ({path}) must hold one key a line, each at least 32 characters")
    ids = [key_id(line) for line in lines]
    return AuditKeys(current=ids[0], by_id=dict(zip(ids, lines, strict=True)))


# ---- the ledger of seals ------------------------------------------------------------------------


def _last_line(fd: int) -> bytes | None:
    """The last complete line of the file open at ``fd`` (None when it is empty)."""
    end = os.lseek(fd, 0, os.SEEK_END)
    if end == 0:
        return None
    size = min(end, 4096)
    while True:
        chunk = os.pread(fd, size, end - size)
        lines = chunk.rstrip(b"\n").rsplit(b"\n", 1)
        if len(lines) == 2 or size == end:
            return lines[-1]
        size = min(end, size * 2)


class Ledger:
    """``seals.jsonl``: the seals of every file of the trail, one MAC chain, appended under a lock
    (every API process of the directory shares it)."""

    def __init__(self, directory: Path, keys: AuditKeys):
        self.path = directory / LEDGER
        self.keys = keys

    def head(self) -> str:
        """The MAC of the last seal (GENESIS for an empty ledger)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return GENESIS
        try:
            last = _last_line(fd)
        finally:
            os.close(fd)
        return orjson.loads(last)["mac"] if last else GENESIS

    def seal(self, file: str, records: int, last: str, final: bool) -> dict:
        """Append the seal of ``file`` (its ``records`` and the MAC of the last one) and log it."""
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            previous = _last_line(fd)
            seal = {
                "at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                "file": file,
                "records": records,
                "last": last,
                "final": final,
                "kid": self.keys.current,
                "prev": orjson.loads(previous)["mac"] if previous else GENESIS,
            }
            body = orjson.dumps(seal)
            seal["mac"] = self.keys.mac(self.keys.current, body)
            line = orjson.dumps(seal) + b"\n"
            if os.write(fd, line) != len(line):
                raise OSError("short write to the audit ledger")
        finally:
            os.close(fd)  # closing releases the lock
        seal_log.info(orjson.dumps({"event": SEAL_EVENT, **seal}).decode())
        return seal


# ---- the trail ----------------------------------------------------------------------------------


class AuditTrail:
    """This process's append-only, MAC-chained audit file of the day, and its seals."""

    def __init__(self, directory: Path, keys: AuditKeys):
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.directory = directory
        self.keys = keys
        self.ledger = Ledger(directory, keys)
        self.process = f"{socket.gethostname()}-{os.getpid()}"
        self.day: str | None = None
        self.fd: int | None = None
        self.prev = GENESIS
        self.seq = 0
        self.sealed = 0  # records covered by the last seal
        self._second, self._stamp = -1, ""

    def path_for(self, day: str) -> Path:
        return self.directory / f"api-{day}-{self.process}.jsonl"

    def _open(self, day: str) -> None:
        self.close()
        path = self.path_for(day)
        self.prev, self.seq = self.ledger.head(), 0  # the file's first record follows the last seal
        if path.exists() and path.stat().st_size:  # the same process id again today: go on with its chain
            for record in read_file(path):
                self.prev, self.seq = record["mac"], record["seq"]
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.day = day
        self.ledger.seal(path.name, self.seq, self.prev, final=False)  # on the ledger from its first moment
        self.sealed = self.seq

    def record(self, fields: dict) -> None:
        """Append one record (raises ``OSError`` when it cannot be written whole)."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second, self._stamp = second, dt.datetime.fromtimestamp(second, dt.UTC).isoformat()
        day = self._stamp[:10]
        if day != self.day or self.fd is None:
            self._open(day)
        seq = self.seq + 1
        body = orjson.dumps({"at": self._stamp, **fields, "seq": seq, "kid": self.keys.current, "prev": self.prev})
        mac = self.keys.mac(self.keys.current, body)
        line = b'%s,"mac":"%s"}\n' % (body[:-1], mac.encode())  # the record, then its MAC
        if os.write(self.fd, line) != len(line):
            raise OSError("short write to the audit trail")
        self.prev, self.seq = mac, seq

    def checkpoint(self, final: bool = False) -> None:
        """Seal this process's file when it wrote since its last seal (or for good, when ``final``)."""
        if self.day is None or (self.seq == self.sealed and not final):
            return
        self.ledger.seal(self.path_for(self.day).name, self.seq, self.prev, final=final)
        self.sealed = self.seq

    def close(self) -> None:
        if self.fd is not None:
            self.checkpoint(final=True)
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


# ---- what a call's record holds ----------------------------------------------------------------


def _header(headers, name: bytes) -> str | None:
    return next((v.decode("latin-1") for k, v in headers if k == name), None)


def _cap(value: str | None, field: str) -> str | None:
    """At most ``CAP[field]`` characters (a field cannot grow the trail without bound)."""
    limit = CAP[field]
    if value is None or len(value) <= limit:
        return value
    return f"{value[:limit]}…(+{len(value) - limit})"


def credential_in_query(query: bytes) -> str | None:
    """The name of the first query parameter that carries a credential, or None."""
    if not query:
        return None
    for name, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if name.strip().lower() in CREDENTIAL_PARAMS:
            return name
    return None


def _redacted(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    return "&".join(
        f"{quote(n, safe='')}={REDACTED if n.strip().lower() in CREDENTIAL_PARAMS else quote(v, safe='')}"
        for n, v in pairs
    )


def call_record(scope, status: int, snapshot_id: str | None, read: tuple[str | None, str | None] | None = None) -> dict:
    """What the trail keeps of one call. ``read``: its ``Accept`` and ``X-Forwarded-For`` headers,
    when the caller has already read them from the scope (the offers fast path reads every header
    once)."""
    who: Principal | None = scope.get("crm.principal")
    query = scope["query_string"].decode("latin-1") if scope.get("query_string") else ""
    if query and credential_in_query(scope["query_string"]):
        query = _redacted(query)
    client = scope.get("client")
    accept, forwarded_for = read or (
        _header(scope["headers"], b"accept"),
        _header(scope["headers"], b"x-forwarded-for"),
    )
    return {
        "kind": who.kind if who else None,
        "who": _cap(who.subject, "who") if who else None,
        "role": who.role if who else None,
        "credential": _cap(who.credential, "credential") if who else None,
        "what": _cap(f"{scope['method']} {scope['path']}{'?' + query if query else ''}", "what"),
        "customer_id": scope.get("crm.customer_id"),  # whose offers, on a look-up
        "accept": "csv" if accept and "text/csv" in accept else None,
        "status": status,
        "source": _cap(client[0], "source") if client else None,
        "forwarded_for": _cap(forwarded_for, "forwarded_for"),
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


async def send_json(send, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
    """A JSON answer sent straight to ASGI (the audit layer's own, the offers fast path's): never
    kept by a cache, since it names a customer or who asked."""
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)), (b"cache-control", b"no-store"),
        *((k.lower().encode(), v.encode()) for k, v in (headers or {}).items())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


async def refuse_unaudited(send) -> None:
    """The 503 of a call whose record could not be written."""
    await send_json(send, 503, UNAVAILABLE)


def _audited(path: str) -> bool:
    """The API's business calls and the console's pages (not its stylesheet)."""
    return path.startswith("/v1/") or (path.startswith("/console") and not path.startswith("/console/static/"))


NO_STORE = (b"cache-control", b"no-store")


class AuditCalls:
    """ASGI layer: every ``/v1/`` call and console page is recorded when its answer starts, before
    it leaves (an unhandled error's 500 included); if the record cannot be written the caller gets
    503 instead of the answer. A credential in the query string is refused with 400, recorded
    redacted. Every answer gets ``Cache-Control: no-store`` (they name customers, or who asked).
    (The offers fast path, outside this layer, records its own calls the same way.)"""

    def __init__(self, app, trail: AuditTrail):
        self.app = app
        self.trail = trail

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not _audited(scope["path"]):
            return await self.app(scope, receive, send)
        name = credential_in_query(scope.get("query_string", b""))
        if name is not None:
            body = orjson.dumps({"detail": CREDENTIAL_IN_URL.format(name=name)})
            if not recorded(self.trail, call_record(scope, 400, None)):
                return await refuse_unaudited(send)
            return await send_json(send, 400, body)
        refused = False

        async def send_recorded(message):
            nonlocal refused
            if refused:
                return
            if message["type"] == "http.response.start":
                headers = message.get("headers", [])
                if not recorded(self.trail, call_record(scope, message["status"], _header(headers, b"x-snapshot-id"))):
                    refused = True
                    await refuse_unaudited(send)
                    return
                if not any(k == b"cache-control" for k, _ in headers):
                    message["headers"] = [*headers, NO_STORE]
            await send(message)

        await self.app(scope, receive, send_recorded)
