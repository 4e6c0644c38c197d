"""argparse ``type=`` checks and option spellings shared by every ``nasnet`` subcommand.

A number that makes no sense (a batch of -1, zero epochs, a NaN learning rate) is refused by the
parser, before a command reads or writes anything, with argparse's usual one-line error naming the
flag: ``nasnet train: error: argument --epochs: must be a positive integer, got '-1'``.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any, Callable

from .transforms import SIZE_RANGE

__all__ = ["number", "cells_per_stack", "base_width", "image_size", "positive_int", "nonnegative_int", "positive_float", "nonnegative_float", "finite_float", "probability",
           "fraction", "refuse_together", "add_renamed"]


def number(kind: Callable[[str], Any], what: str, ok: Callable[[Any], bool] = lambda value: True
           ) -> Callable[[str], Any]:
    """An argparse ``type=`` that parses with ``kind`` (``int`` or ``float``) and accepts only
    finite values for which ``ok`` holds; anything else is "must be WHAT, got 'TEXT'"."""

    def parse(text: str):
        try:
            value = kind(text)
        except (TypeError, ValueError):
            value = None
        if value is None or (isinstance(value, float) and not math.isfinite(value)) or not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    parse.__name__ = f"number({what})"
    return parse


positive_int = number(int, "a positive integer", lambda v: v >= 1)
"""An integer >= 1 (sizes, batches, epochs, steps, counts)."""
nonnegative_int = number(int, "an integer >= 0", lambda v: v >= 0)
"""An integer >= 0 (seeds, workers, warm-up runs)."""
finite_float = number(float, "a finite number")
"""Any finite number (no NaN, no infinity)."""
positive_float = number(float, "a finite number > 0", lambda v: v > 0)
"""A finite number > 0 (learning rates, time limits, targets)."""
nonnegative_float = number(float, "a finite number >= 0", lambda v: v >= 0)
"""A finite number >= 0 (weight decay, clipping norms, smoothing)."""
probability = number(float, "a number in [0, 1]", lambda v: 0.0 <= v <= 1.0)
"""A number in [0, 1] (dropout and drop-path rates, thresholds, agreements)."""
fraction = number(float, "a number in (0, 1]", lambda v: 0.0 < v <= 1.0)
"""A number in (0, 1] (keep probabilities, shares of a data set)."""
cells_per_stack = number(int, "an integer in 1..64", lambda v: 1 <= v <= 64)
"""N, normal cells per stack (the paper's largest is 7; 64 already builds a network few machines hold)."""
base_width = number(int, "an integer in 1..2048", lambda v: 1 <= v <= 2048)
"""A base width (``num_filters``; the paper's largest is 168, F = 24 x 168 = 4032)."""
image_size = number(int, f"a size in {SIZE_RANGE[0]}..{SIZE_RANGE[1]} pixels", lambda v: SIZE_RANGE[0] <= v <= SIZE_RANGE[1])
"""A square input size in ``transforms.SIZE_RANGE`` (0 used to be ignored; 100000 would build
activations no machine holds)."""


def refuse_together(args: argparse.Namespace, *flags: str) -> None:
    """Raise ``ValueError`` when more than one of ``flags`` (spelled as on the command line, e.g.
    ``--scratch``) was given: a value that is neither ``None`` nor ``False``."""
    given = [flag for flag in flags if getattr(args, flag.lstrip("-").replace("-", "_")) not in (None, False)]
    if len(given) > 1:
        raise ValueError(f"{' and '.join(given)} cannot be used together: choose one")


# -- one vocabulary across subcommands ------------------------------------------------------------
# -o/--output names a file, --output-dir a directory, --input-size a model's input size. Spellings
# used before 0.1.0 (--out, --img-size, --image-size, -o for a folder) stay accepted for this
# release, with a warning, through add_renamed.


class _Renamed(argparse.Action):
    """Stores the value like the new option, after one line on stderr saying what to type instead."""

    def __init__(self, option_strings, dest, new: str = "", **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: warning: {option_string} is deprecated and will be removed after 0.1; "
              f"use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_renamed(parser: argparse.ArgumentParser, *flags: str, old: tuple[str, ...] | list[str] = (),
                **kwargs: Any) -> argparse.Action:
    """``parser.add_argument(*flags, **kwargs)``, plus each spelling in ``old`` as a hidden alias
    that warns (``--out`` -> ``--output-dir``). ``kwargs`` must not use ``action`` (plain stores only)."""
    kwargs.setdefault("metavar", flags[-1].lstrip("-").upper().replace("-", "_"))  # not the old dest's name
    target: Any = parser
    if kwargs.pop("required", False) and old:  # either spelling satisfies "required"
        target = parser.add_mutually_exclusive_group(required=True)
    elif old:
        kwargs["required"] = False
    action = target.add_argument(*flags, **kwargs)
    alias = {key: kwargs[key] for key in ("type", "nargs", "metavar", "choices") if key in kwargs}
    for spelling in old:
        target.add_argument(spelling, dest=action.dest, action=_Renamed, new=flags[-1], default=argparse.SUPPRESS,
                            help=argparse.SUPPRESS, **alias)
    return action
