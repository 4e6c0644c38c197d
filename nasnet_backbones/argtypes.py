"""argparse ``type=`` checks shared by every ``nasnet`` subcommand.

A number that makes no sense (a batch of -1, zero epochs, a NaN learning rate) is refused by the
parser, before a command reads or writes anything, with argparse's usual one-line error naming the
flag: ``nasnet train: error: argument --epochs: must be a positive integer, got '-1'``.
"""

from __future__ import annotations

import argparse
import math

__all__ = ["positive_int", "nonnegative_int", "positive_float", "nonnegative_float", "finite_float", "probability",
           "fraction", "refuse_together"]


def _number(kind, text: str, what: str):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (sizes, batches, epochs, steps, counts)."""
    value = _number(int, text, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def nonnegative_int(text: str) -> int:
    """An integer >= 0 (seeds, workers, warm-up runs)."""
    value = _number(int, text, "an integer >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def finite_float(text: str) -> float:
    """Any finite number (no NaN, no infinity)."""
    return _number(float, text, "a finite number")


def positive_float(text: str) -> float:
    """A finite number > 0 (learning rates, time limits, targets)."""
    value = _number(float, text, "a finite number > 0")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    """A finite number >= 0 (weight decay, clipping norms, smoothing)."""
    value = _number(float, text, "a finite number >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def probability(text: str) -> float:
    """A number in [0, 1] (dropout and drop-path rates, thresholds, agreements)."""
    value = _number(float, text, "a number in [0, 1]")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text!r}")
    return value


def fraction(text: str) -> float:
    """A number in (0, 1] (keep probabilities, shares of a data set)."""
    value = _number(float, text, "a number in (0, 1]")
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {text!r}")
    return value


def refuse_together(args: argparse.Namespace, *flags: str) -> None:
    """Raise ``ValueError`` when more than one of ``flags`` (spelled as on the command line, e.g.
    ``--scratch``) was given: a value that is neither ``None`` nor ``False``."""
    given = [flag for flag in flags if getattr(args, flag.lstrip("-").replace("-", "_")) not in (None, False)]
    if len(given) > 1:
        raise ValueError(f"{' and '.join(given)} cannot be used together: choose one")
