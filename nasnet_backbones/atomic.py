"""Write a file so that readers see the old version or the new one, never half of one.

Every write goes to a sibling temporary file whose name is unique to the writing process
(``NAME.<pid>-<random>.tmp``), so two processes writing the same file never share a temporary,
and is renamed over the target only when it is complete (atomic on POSIX). A failed write removes
its temporary; a temporary left by a process that was killed (``kill -9``) is removed by the next
write of the same file, once its process is gone.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from .errors import first_line

__all__ = ["atomic_target", "write_atomic", "remove_stale_temporaries", "same_file", "refuse_own_input"]

_TEMP = re.compile(r"^(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]{6}\.tmp(\.[A-Za-z0-9]+)?$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(folder: str | Path, name: str | None = None) -> list[Path]:
    """Remove the temporaries in ``folder`` (of the file ``name`` only, if given) whose writing
    process no longer exists; return what was removed."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TEMP.match(entry.name)
        if match is None or (name is not None and match["name"] != name) or _alive(int(match["pid"])):
            continue
        try:
            entry.unlink()
        except FileNotFoundError:  # another process cleaned it first
            continue
        removed.append(entry)
    return removed


@contextmanager
def atomic_target(path: str | Path, *, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without an error it is renamed
    over ``path``, otherwise it is removed and ``path`` is untouched. ``suffix`` must start with
    ``.tmp`` (``.tmp.ort`` for tools that tell the format by the suffix)."""
    if not suffix.startswith(".tmp"):
        raise ValueError(f"suffix must start with '.tmp', got {suffix!r}")
    path = Path(path)
    remove_stale_temporaries(path.parent, path.name)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(3)}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:  # onnx, PIL and friends raise ENOSPC without a path
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it over ``path``, so a
    crash or ``kill -9`` mid-write leaves the previous file intact (see :func:`atomic_target`)."""
    with atomic_target(path) as tmp:
        try:
            write(tmp)
        except RuntimeError as exc:  # torch.save reports a short write (a full disk) as a RuntimeError
            reason = first_line(exc)
            raise OSError(errno.EIO, f"writing it failed, is the disk full? ({reason})", str(path)) from exc


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file: :func:`os.path.samefile` when both exist (hard links,
    symbolic links), else the same resolved path."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def refuse_own_input(output: str | Path, output_flag: str, inputs: dict[str, str | Path | None]) -> None:
    """Raise ``ValueError`` before anything is written when ``output`` is one of ``inputs`` (flag ->
    path; ``None`` for a flag not given): writing it would replace the very file being read."""
    for flag, source in inputs.items():
        if source and same_file(output, source):
            raise ValueError(f"{output_flag} {output} is the {flag} file itself: writing it would replace "
                             f"its input; choose another {output_flag}")
