"""Stop the Ray processes of a search's local cluster when the search dies, however it dies.

``ray.init()`` without an address starts a local cluster as children of the search process (GCS
server, raylet, monitor, log monitor, dashboard), and the raylet starts the agents
(``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) and the workers. Ray ties the first ones to the
search (they exit with it), but after a ``kill -9`` of the search the agents outlive it for about a
minute (Ray 2.60: they notice the dead raylet within seconds, then wait up to 60 s trying to report
it to the GCS, which is gone too).

The watchdog is a small process of its own session (so that a terminal's Ctrl-C or hang-up does
not reach it first), started right after ``ray.init()`` with the PIDs of the processes Ray
started. Every ``interval`` seconds it records those processes and their descendants (PID and
start time, so that a reused PID is never mistaken for one of them). When the search process is
gone, it sends SIGTERM to every recorded process still alive, SIGKILL to those still there
``grace`` seconds later, and exits. A search that ends normally stops Ray itself
(``ray.shutdown()``) and then the watchdog (SIGTERM), which then exits without touching anything.
Linux only (it reads ``/proc``); elsewhere no watchdog is started.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable

__all__ = ["supported", "process_table", "descendants", "start_watchdog", "watch", "alive"]

logger = logging.getLogger(__name__)

PROC = Path("/proc")


def supported() -> bool:
    """True where the watchdog can see processes (a Linux ``/proc``)."""
    return sys.platform.startswith("linux") and (PROC / "self" / "stat").is_file()


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(parent PID, start time in clock ticks, state letter) of ``pid``, or None when it is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, ..., starttime (field 22)
    return int(fields[1]), int(fields[19]), fields[0]


def process_table() -> dict[int, tuple[int, int]]:
    """Every live process: PID -> (parent PID, start time); zombies count as gone."""
    table = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            info = _stat(int(entry.name))
            if info is not None and info[2] not in ("Z", "X"):
                table[int(entry.name)] = info[:2]
    return table


def descendants(roots: Iterable[int], table: dict[int, tuple[int, int]]) -> set[int]:
    """``roots`` that are alive in ``table`` and all their live descendants."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, stack = set(), [pid for pid in roots if pid in table]
    while stack:
        pid = stack.pop()
        if pid not in found:
            found.add(pid)
            stack.extend(children.get(pid, ()))
    return found


def alive(pid: int, start_time: int) -> bool:
    """Whether the process that had ``pid`` and ``start_time`` still runs (not a zombie, not a reuse)."""
    info = _stat(pid)
    return info is not None and info[1] == start_time and info[2] not in ("Z", "X")


def _stop(recorded: dict[int, int], grace: float) -> None:
    """SIGTERM every recorded process still alive; SIGKILL those left after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        left = [pid for pid, start in recorded.items() if alive(pid, start)]
        for pid in left:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + grace
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = [pid for pid in left if alive(pid, recorded[pid])]
        if not left:
            return


def watch(parent: int, roots: Iterable[int], interval: float = 0.2, grace: float = 2.0) -> None:
    """Record ``roots`` and their descendants until ``parent`` is gone, then stop them."""
    parent_info = _stat(parent)
    if parent_info is None:
        return
    parent_start = parent_info[1]
    roots = set(roots)
    recorded: dict[int, int] = {}
    while True:
        table = process_table()
        for pid in descendants(roots | set(recorded), table):
            recorded.setdefault(pid, table[pid][1])
        roots = {pid for pid in roots if pid in recorded}
        if not alive(parent, parent_start):
            _stop({pid: start for pid, start in recorded.items() if pid != os.getpid()}, grace)
            return
        time.sleep(interval)


def start_watchdog(roots: Iterable[int]) -> subprocess.Popen | None:
    """Start the watchdog for this process and the Ray processes ``roots`` (None where unsupported)."""
    roots = sorted(set(roots))
    if not supported() or not roots:
        return None
    # a script in isolated mode (-I: the standard library only, not search/'s own modules), not ``-m search...``,
    # which would import torch for nothing
    return subprocess.Popen([sys.executable, "-I", str(Path(__file__).resolve()), str(os.getpid()), *map(str, roots)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True)


def _main(argv: list[str]) -> int:
    """``python search/ray_watchdog.py PARENT_PID RAY_PID...`` (started by :func:`start_watchdog`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the search ended normally and stopped Ray itself
    watch(int(argv[0]), [int(a) for a in argv[1:]])
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
