"""Advisory locks: one process per run directory, and one GPU slot per job.

A run directory is trained under an exclusive, non-blocking ``flock`` on ``run_dir/.lock``.
The kernel drops the lock when its process dies (also on SIGKILL), so a killed sweep
leaves no stale lock behind, and the lock file itself is never deleted (deleting a lock
file lets two processes hold "the same" lock). The holder writes its pid, host and start
time into the file, for ``srr-status``. On NFS, Linux clients map ``flock`` to POSIX
byte-range locks (since 2.6.12), so the lock also holds across the nodes of a cluster.

GPU slots: on a machine with several GPUs, each job takes the lowest free slot
``(slot, gpu)`` in round-robin order, so n jobs on n GPUs get one GPU each, and 2n jobs
get two each. Slot locks live in the local temporary directory: GPUs are per machine.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Union

LOCK_NAME = ".lock"
PathLike = Union[str, os.PathLike]


class Lock:
    """An exclusive ``flock`` on a file, taken without waiting (``acquire`` returns False when held)."""

    def __init__(self, path: PathLike):
        self.path = Path(path)
        self._fd: Optional[int] = None

    def acquire(self, tries: int = 1, wait_s: float = 0.2) -> bool:
        """Take the lock; ``tries`` > 1 rides out a momentary probe by ``is_locked``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        for i in range(tries):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if i + 1 < tries:
                    time.sleep(wait_s)
                continue
            self._fd = fd
            return True
        os.close(fd)
        return False

    def write_holder(self, **extra: Any) -> None:
        """Record who holds the lock (pid, host, since); only while holding it."""
        assert self._fd is not None
        blob = json.dumps(dict(pid=os.getpid(), host=socket.gethostname(), since=time.time(), **extra)).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, blob, 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "Lock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def run_lock(run_dir: PathLike) -> Lock:
    return Lock(Path(run_dir) / LOCK_NAME)


def is_locked(path: PathLike) -> bool:
    """Whether another process holds the lock on ``path`` (creates nothing; a brief shared probe)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return True
        raise
    finally:
        os.close(fd)
    return False


def holder(path: PathLike) -> Optional[dict[str, Any]]:
    """The pid/host/since recorded in a lock file, if readable."""
    try:
        data = json.loads(Path(path).read_text() or "null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def slot_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"srr-bench-gpu-slots-{os.getuid()}"


def claim_gpu(n_gpus: int, first: int = 0, max_slots: int = 64, where: Optional[PathLike] = None) -> tuple[int, Lock]:
    """Lock the lowest free (slot, gpu), GPUs tried from ``first`` on; returns (gpu index, lock)."""
    where = Path(where) if where is not None else slot_dir()
    for slot in range(max_slots):
        for k in range(n_gpus):
            gpu = (first + k) % n_gpus
            lock = Lock(where / f"gpu{gpu}.slot{slot}.lock")
            if lock.acquire():
                return gpu, lock
    raise RuntimeError(f"no free GPU slot among {n_gpus} GPUs x {max_slots} slots in {where}")
