"""Detached processes of the embedded services: start one that outlives its caller, tell whether it
is alive, stop it, and serialise starting it across processes with a lock file."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from crm.settings import REPO_ROOT, Settings


class ServiceError(RuntimeError):
    pass


@contextlib.contextmanager
def lock(settings: Settings, name: str) -> Iterator[None]:
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.run_dir / f"{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def alive(pid: int) -> bool:
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


def spawn(cmd: list[str], log_path: Path, env: dict[str, str] | None = None) -> int:
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


def reap(pid: int) -> None:
    """Collect the exit status of a child of ours that ended, so it leaves no zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def terminate(pid: int, timeout: float = 10.0) -> None:
    if alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while alive(pid) and time.monotonic() < deadline:
            reap(pid)
            time.sleep(0.05)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
    reap(pid)
