"""One writer per results folder: `<results_dir>/.sweep.lock`, an flock naming its pid and host.

Two sweeps writing one folder would time their cells on the same cores and measure each cell
twice. The lock is freed by the OS when its process dies (even by SIGKILL), so a stale file never
blocks; the file is removed on release.
"""

import fcntl
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_ENV = "STUDY_SWEEP_LOCK"  # the lock file a launching sweep holds for its job processes


class LockBusy(RuntimeError):
    """Another sweep is writing the same results folder."""


_held_locks: dict[str, int] = {}  # lock path -> file descriptor, for locks this process holds


def lock_path(results_dir: str | Path) -> Path:
    return Path(results_dir).resolve() / ".sweep.lock"


def _try_lock(path: Path) -> int | None:
    """A descriptor holding an exclusive flock on `path`, or None if another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:  # the holder before us may have removed the file after we opened it: lock the new one
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextmanager
def results_lock(results_dir: str | Path, wait_s: float = 0.0) -> Iterator[None]:
    """Hold `<results_dir>/.sweep.lock` (an flock, freed by the OS if the process dies).

    Re-entrant: jobs of one multirun in one process share the lock, and job processes of a
    launcher (joblib, submitit) share the one their launching sweep holds ($STUDY_SWEEP_LOCK).
    Raises LockBusy, naming the holder's pid and host, if another sweep holds it after `wait_s`.
    """
    path = lock_path(results_dir)
    key = str(path)
    if key in _held_locks or os.environ.get(LOCK_ENV) == key:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while (fd := _try_lock(path)) is None:
        if time.monotonic() >= deadline:
            try:
                holder = path.read_text().strip() or "a process that has not named itself yet"
            except OSError:
                holder = "a process that just left"
            raise LockBusy(
                f"{results_dir} is being written by another sweep ({holder}; lock file {path}); "
                "wait for it to finish, set lock_wait_s=SECONDS to wait, or use another "
                "results_dir="
            )
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode())
    _held_locks[key] = fd
    try:
        yield
    finally:
        del _held_locks[key]
        path.unlink(missing_ok=True)  # before closing: a waiter then locks a fresh file
        os.close(fd)
