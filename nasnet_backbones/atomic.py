"""Write a file so that readers see the old version or the new one, never half of one."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

__all__ = ["write_atomic"]


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a sibling temporary path, then rename it over ``path`` (atomic on POSIX),
    so a crash or ``kill -9`` mid-write leaves the previous file intact."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    tmp.replace(path)
