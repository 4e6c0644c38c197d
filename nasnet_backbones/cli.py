"""The ``nasnet`` command: one subcommand per job, each defined next to the code it drives."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from . import demo, draw, evaluate, info, predict
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, ExportVerificationError, FloatingPointError) as exc:
        # bad input, a failed check, or training that diverged (the message says which)
        if args.verbose:
            raise
        print(f"nasnet {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
