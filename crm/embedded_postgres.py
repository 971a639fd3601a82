"""The embedded PostgreSQL server (the server warehouse, ``CRM_DBT_TARGET=postgres``): Debian's
programs, started on demand as a detached process in ``<CRM_HOME>``, as Redis and the sandbox are
(``crm.services``)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

from crm.processes import ServiceError, alive, lock, reap, spawn, terminate
from crm.settings import Settings


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


def postgres_pid(settings: Settings) -> int | None:
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
    return pid if ours and alive(pid) else None


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
        if not alive(pid):
            return False
        if time.monotonic() > deadline:
            return None
        time.sleep(0.1)
    return True


def ensure_postgres(settings: Settings):
    """The embedded PostgreSQL server of the data directory, running (started, and created on first
    use, with a password of its own in ``<CRM_HOME>/run/postgres.pgpass``): its connection."""
    import dataclasses

    pg = settings.postgres
    if not pg.embedded:
        return pg
    with lock(settings, "postgres"):
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
        running = postgres_pid(settings)
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
        pid = spawn(cmd, log_path)
        answered = _answers(pg, pid)
        if answered is False:
            said = log_path.read_text(errors="replace").strip().splitlines()[-3:] if log_path.exists() else []
            raise ServiceError(f"the embedded PostgreSQL did not start (port {pg.port}): {' / '.join(said)}; "
                               f"see {log_path}")  # fmt: skip
        if answered is None:
            terminate(pid)
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


def stop_postgres(settings: Settings) -> None:
    """Stop the embedded PostgreSQL server (a fast shutdown: open sessions are ended)."""
    pid = postgres_pid(settings)
    if pid is None:
        return
    os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + 30
    while alive(pid) and time.monotonic() < deadline:
        reap(pid)
        time.sleep(0.05)
    terminate(pid)
