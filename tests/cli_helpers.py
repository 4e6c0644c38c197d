"""Helpers for the bad-input (fuzz) tests: run ``nasnet`` in-process and check that it refused
cleanly, with one message naming what was wrong, and left the files it was given as they were."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from nasnet_backbones.cli import main

__all__ = ["Result", "run_cli", "expect_clean_error", "snapshot"]


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_cli(capsys, *argv: str) -> Result:
    """``nasnet ARGV`` in this process; argparse's ``SystemExit`` becomes the exit code. An
    exception the CLI does not catch propagates, so the test shows it as the traceback a user would see."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def expect_clean_error(capsys, *argv: str, names: tuple[str, ...] | list[str] = (), code: int = 2) -> str:
    """Run the command, assert it failed with ``code``, printed no traceback, and that its stderr
    names every string in ``names`` (a file, a flag, the cause). Returns stderr."""
    result = run_cli(capsys, *argv)
    assert result.code == code, f"exit {result.code}, stderr: {result.err}"
    assert "Traceback" not in result.err and "Traceback" not in result.out, result.err
    for name in names:
        assert str(name) in result.err, f"{name!r} not in: {result.err}"
    return result.err


def snapshot(folder: str | Path) -> dict[str, str]:
    """Every file below ``folder`` with its sha256, to assert that a refused command lost or
    changed nothing (and left no temporary behind)."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}
