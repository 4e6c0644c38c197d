"""Errors every floor may raise and the ``nasnet`` command reports as one line.

The model package sits on the lowest floor, so the command line (:mod:`nasnet_backbones.cli`) can
catch these without importing the packages above it (``detection``, ``export``, ``search``): a
package up there derives its own check failures from :class:`CommandError`, and ``nasnet``
prints their message and exits with status 2 (``-v`` shows the traceback instead).
"""

from __future__ import annotations

__all__ = ["CommandError", "first_line", "missing_dependency"]


class CommandError(Exception):
    """A failed check or an impossible request, explained by its message alone.

    Bad input is a :class:`ValueError` and the file system's refusals are :class:`OSError`; both
    are reported the same way. Derive from this class for the failures that are neither, such as an
    exported graph that does not compute what the model computes.
    """


def missing_dependency(exc: ImportError, *, extra: str, needed_for: str) -> ModuleNotFoundError:
    """``exc`` (an optional dependency that is not installed) with a message naming the extra of
    nasnet-backbones that installs it::

        try:
            import matplotlib
        except ImportError as exc:
            raise missing_dependency(exc, extra="tools", needed_for="drawing cells") from None
    """
    return ModuleNotFoundError(f"{exc} ({needed_for} needs it: pip install 'nasnet-backbones[{extra}]')",
                               name=exc.name, path=exc.path)


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its type's name when it has none: what a one-line
    error can quote of a library's multi-line report (onnxruntime's, torch.load's)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
