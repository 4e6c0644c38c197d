"""One writer per run directory.

A search run, a training output directory and a detection output directory are each written by
one process at a time. :func:`run_lock` holds an exclusive ``flock`` on ``DIR/.lock`` for as long
as the run lives; a second process is refused at once with the holder's PID, host and start time.
The kernel releases the lock when its holder exits, however it exits (``kill -9`` included), so a
dead holder never leaves a directory stuck, and the lock file's contents are only a description.
While the lock is held nobody else writes the directory, so temporaries that killed writers left
behind there are removed.
"""

from __future__ import annotations

import datetime
import fcntl
import logging
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .atomic import remove_stale_temporaries

__all__ = ["LOCK_FILE", "RunDirectoryLocked", "run_lock"]

logger = logging.getLogger(__name__)
LOCK_FILE = ".lock"


class RunDirectoryLocked(RuntimeError):
    """Another live process is writing this run directory."""


@contextmanager
def run_lock(directory: str | Path) -> Iterator[Path]:
    """Hold the run directory ``directory`` (created if missing) for the block; raise
    :class:`RunDirectoryLocked` naming the holder when another process holds it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lock_path = directory / LOCK_FILE
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "another process"
            raise RunDirectoryLocked(
                f"{directory} is in use: held by {holder}. Wait for that run to finish or stop it, "
                "or choose another directory") from None
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"PID {os.getpid()} on {socket.gethostname()} since {started}\n".encode(), 0)
        for stale in remove_stale_temporaries(directory):
            logger.info("removed %s, left by a writer that was killed", stale)
        yield directory
    finally:
        os.close(fd)  # closing the descriptor releases the lock
