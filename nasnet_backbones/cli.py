"""The ``nasnet`` command: one subcommand per job, each defined next to the code it drives.

The subcommands are not imported here: every package registers the ``add_parser(subparsers)`` of
the commands it owns in the ``nasnet.commands`` entry-point group (``pyproject.toml``), and
:func:`build_parser` finds them with :func:`importlib.metadata.entry_points`. So this module, on the
lowest floor, imports nothing from ``detection``, ``export`` or ``search``; a command whose package
fails to import is still listed, and running it says why in one line, exit status 2: the missing
module and what to install, ``pip install 'nasnet-backbones[detection]'`` (:func:`install_hint` reads
the extras from the installed metadata). A command whose optional dependency is imported only when
it runs (``info``'s fvcore, ``draw``'s matplotlib, ``search``'s Ray) ends the same way.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import re
import sys
import warnings
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Callable, Sequence

from .errors import CommandError
from .runlock import RunDirectoryLocked

__all__ = ["COMMAND_GROUP", "IMPORT_NAME_TO_DISTRIBUTION", "main", "build_parser", "command_entry_points",
           "extras_providing", "install_hint"]

logger = logging.getLogger(__name__)

COMMAND_GROUP = "nasnet.commands"


def command_entry_points() -> list[EntryPoint]:
    """Every registered subcommand, sorted by name (the first registration of a name wins)."""
    found: dict[str, EntryPoint] = {}
    for ep in sorted(entry_points(group=COMMAND_GROUP), key=lambda e: e.name):
        if ep.name in found:
            logger.debug("nasnet %s: %s ignored, %s registered it first", ep.name, ep.value, found[ep.name].value)
            continue
        found[ep.name] = ep
    return list(found.values())


# Import names that differ from the name of the distribution that installs them (for install hints).
IMPORT_NAME_TO_DISTRIBUTION = {
    "cv2": "opencv-python-headless",
    "detectron2": "sal-detectron2",
    "panopticapi": "panopticapi-lite",
    "PIL": "pillow",
    "pkg_resources": "setuptools",
    "skimage": "scikit-image",
    "yaml": "pyyaml",
}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _split_requirement(requirement: str) -> tuple[str, set[str], str, str | None]:
    """``"ray[default]>=2.30; extra == 'search'"`` -> ``("ray", {"default"}, "ray[default]>=2.30", "search")``."""
    spec, _, marker = requirement.partition(";")
    head = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?", spec)
    name = _normalise(head.group(1)) if head else ""
    extras = {_normalise(e) for e in (head.group(2) or "").split(",") if e.strip()} if head else set()
    extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
    return name, extras, spec.strip().replace(" ", ""), _normalise(extra.group(1)) if extra else None


def extras_providing(dist: Any, distribution: str) -> list[str]:
    """The extras of ``dist`` that install ``distribution`` (directly, or through an extra of ``dist``
    itself, ``"nasnet-backbones[export]"``), sorted by size: the smallest first."""
    own = _normalise(dist.metadata["Name"])
    direct: dict[str, set[str]] = {}
    nested: dict[str, set[str]] = {}
    for requirement in dist.requires or []:
        name, extras, _, extra = _split_requirement(requirement)
        if extra is None:
            continue
        direct.setdefault(extra, set())
        if name == own:
            nested.setdefault(extra, set()).update(extras)
        else:
            direct[extra].add(name)

    def closure(extra: str, seen: frozenset[str] = frozenset()) -> set[str]:
        found = set(direct.get(extra, ()))
        for inner in nested.get(extra, set()) - seen - {extra}:
            found |= closure(inner, seen | {extra})
        return found

    contents = {extra: closure(extra) for extra in direct}
    return sorted((e for e, names in contents.items() if distribution in names), key=lambda e: (len(contents[e]), e))


def install_hint(ep: EntryPoint, exc: ImportError) -> str:
    """What to install for ``exc`` raised by ``ep``'s command: ``pip install 'DIST[EXTRA]'`` naming the
    extra of the registering distribution that provides the missing module (the extra named after the
    command's package when it has one, else the smallest), or the plain requirement when it is a base
    dependency."""
    missing = (exc.name or "").split(".")[0]
    dist = getattr(ep, "dist", None)
    if missing and dist is not None:
        wanted = _normalise(IMPORT_NAME_TO_DISTRIBUTION.get(missing, missing))
        for requirement in dist.requires or []:
            name, _, spec, extra = _split_requirement(requirement)
            if name == wanted and extra is None:
                return f"pip install '{spec}'"
        extras = extras_providing(dist, wanted)
        if extras:
            package = _normalise(ep.module.split(".")[0])
            extra = package if package in extras else extras[0]
            return f"pip install '{dist.metadata['Name']}[{extra}]'"
    owner = dist.metadata["Name"] if dist is not None else "the package that registers it"
    return f"reinstall {owner} with its dependencies"


def _add_unavailable(subparsers: Any, ep: EntryPoint, exc: ImportError) -> None:
    """List ``ep`` with a note; running it prints why it cannot run and exits 2."""
    reason = f"{type(exc).__name__}: {exc}"
    line = f"unavailable, {reason} ({install_hint(ep, exc)})"
    p = subparsers.add_parser(ep.name, help=f"(unavailable: {exc})", description=f"nasnet {ep.name} is {line}.")

    def unavailable(args: argparse.Namespace) -> int:
        print(f"nasnet {ep.name}: error: {line}", file=sys.stderr)
        return 2

    p.set_defaults(func=unavailable, unavailable=True)


def _requested(argv: Sequence[str], names: set[str]) -> str | None:
    """The subcommand ``argv`` names, if its first word is one (so that only it is imported)."""
    for word in argv:
        if word in ("-v", "--verbose"):
            continue
        return word if word in names else None
    return None


def build_parser(*, argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``nasnet`` parser with every registered subcommand, or, when ``argv`` names one, that
    subcommand alone (the others' packages are then not imported)."""
    parser = argparse.ArgumentParser(prog="nasnet", description="NASNet models, search, detection and export.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    commands = command_entry_points()
    if not commands:
        logger.warning("no %s entry points: is nasnet-backbones installed (pip install -e .)? A stale "
                       "*.egg-info in the current directory hides the installed metadata.", COMMAND_GROUP)
    wanted = _requested(argv, {ep.name for ep in commands}) if argv is not None else None
    for ep in commands:
        if wanted is not None and ep.name != wanted:
            continue
        try:
            add_parser: Callable[[Any], None] = ep.load()
        except ImportError as exc:  # a package whose dependency is missing: listed, and says why when run
            logger.debug("nasnet %s unavailable: %s", ep.name, exc)
            _add_unavailable(sub, ep, exc)
        else:
            add_parser(sub)
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


# fvcore (imported by detectron2) scripts a function at import and torch 2.9+ warns about it on every
# start; that warning is not ours to act on and would stand before every error message.
_FOREIGN_WARNINGS = [(r"`torch\.jit\.script` is deprecated", FutureWarning)]


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    for message, category in _FOREIGN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    parser = build_parser(argv=argv)
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "unavailable", False):  # an unavailable command takes any arguments
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    try:
        return int(args.func(args) or 0)
    except (ValueError, CommandError, FloatingPointError, RunDirectoryLocked) as exc:
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
    except ImportError as exc:  # an optional dependency imported only when the command runs
        if args.verbose:
            raise
        ep = next((e for e in command_entry_points() if e.name == args.command), None)
        hint = "" if ep is None or "pip install" in str(exc) else f" ({install_hint(ep, exc)})"
        print(f"nasnet {args.command}: error: {type(exc).__name__}: {exc}{hint}", file=sys.stderr)
        return 2
    except MemoryError:
        if args.verbose:
            raise
        print(f"nasnet {args.command}: error: out of memory; use smaller sizes (input size, batch, cells, "
              "filters) or a machine with more memory", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: whatever saves state on it (train's last.pth, search's log) has run
        if args.verbose:
            raise
        print(f"nasnet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
