"""Read JSON written by people and tools (genotypes, COCO annotations) with one clear error.

A file that is not UTF-8, not JSON, or nested deeper than Python's parser goes becomes a single
error naming the file and, for a syntax error, the line and column, instead of a traceback
from :mod:`json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["parse_json", "read_json"]


def parse_json(text: str, *, origin: str, what: str, error: type[Exception] = ValueError) -> Any:
    """``json.loads(text)``; ``origin`` names the source and ``what`` what it should be (e.g.
    ``"a COCO json file"``) in the ``error`` raised for text that is not JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{origin} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise error(f"{origin} is not {what}: nested too deeply to read") from None


def read_json(path: str | Path, *, what: str, error: type[Exception] = ValueError, encoding: str = "utf-8") -> Any:
    """Read and parse the JSON file ``path`` (see :func:`parse_json`); bytes that are not text in
    ``encoding`` are the same kind of error."""
    path = Path(path)
    try:
        text = path.read_text(encoding=encoding)
    except UnicodeDecodeError as exc:
        raise error(f"{path} is not {what}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return parse_json(text, origin=str(path), what=what, error=error)
