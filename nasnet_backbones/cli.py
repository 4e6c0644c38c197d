"""The ``nasnet`` command: one subcommand per job, each defined next to the code it drives."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from typing import Sequence

from . import demo, draw, evaluate, info, predict
from .runlock import RunDirectoryLocked
from .training import command as train

__all__ = ["main", "build_parser"]

# Each module contributes ``add_parser(subparsers)``; the search, detection and export packages
# add theirs here as they land.
_COMMAND_MODULES = [info, predict, evaluate, train, draw]
try:  # the detectron2 commands; the core package works without detectron2
    from detection import command as detect
except ImportError as exc:  # pragma: no cover - detectron2 is a declared dependency
    logging.getLogger(__name__).debug("nasnet detect unavailable: %s", exc)
else:
    _COMMAND_MODULES.append(detect)
from search import command as search_command  # noqa: E402
from export import bench as bench_command  # noqa: E402
from export import command as export_command  # noqa: E402
from export.onnx_export import ExportVerificationError  # noqa: E402

_COMMAND_MODULES += [search_command, export_command, bench_command, demo]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nasnet", description="NASNet models, search, detection and export.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in _COMMAND_MODULES:
        module.add_parser(sub)
    return parser


def _describe_os_error(exc: OSError) -> str:
    """One line naming the path(s) and the cause: a full disk, a read-only or missing directory,
    a directory where a file was expected."""
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    cause = exc.strerror or str(exc)
    hints = {errno.ENOSPC: "free some space or write elsewhere", errno.EROFS: "write somewhere writable",
             errno.EACCES: "check the permissions or write elsewhere", errno.EISDIR: "give a file name, not a directory",
             errno.ENOTDIR: "a part of the path is a file, not a directory", errno.EDQUOT: "free some space"}
    hint = hints.get(exc.errno)
    if exc.errno == errno.EEXIST and exc.filename is not None and os.path.isfile(exc.filename):
        cause, hint = "is a file, not a directory", "a folder was expected here; remove or rename the file"
    where = " -> ".join(paths)
    return f"{where + ': ' if where else ''}{cause}{' (' + hint + ')' if hint else ''}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    try:
        return int(args.func(args) or 0)
    except (ValueError, ExportVerificationError, FloatingPointError, RunDirectoryLocked) as exc:
        # bad input, a failed check, a run directory in use, or training that diverged (the message says which)
        if args.verbose:
            raise
        print(f"nasnet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the file system said no: full disk, read-only, a directory given as a file...
        if args.verbose:
            raise
        # our own messages (a missing dataset, say) carry no errno and are printed as they are
        text = str(exc) if exc.errno is None else f"{_describe_os_error(exc)} (run with -v for the traceback)"
        print(f"nasnet {args.command}: error: {text}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
