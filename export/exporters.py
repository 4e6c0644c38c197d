"""PyTorch's two ONNX exporters behind one call: which one writes a graph, and how it is asked.

``dynamo`` (the default, :data:`DEFAULT_EXPORTER`): ``torch.export.export`` (non-strict) captures
the model with dynamic dimensions given as ``torch.export.Dim``; ``torch.onnx.export`` then
translates the ``ExportedProgram`` (opset 18 or later, optimised by onnxscript). This is the
exporter PyTorch develops; classifiers, backbones and single modules use it.

``torchscript``: the legacy TorchScript-based exporter, deprecated since PyTorch 2.9. It remains
for what the dynamo exporter cannot capture yet (whole detectron2 detectors, see
:mod:`export.detectron2_detector`), and by request (``--exporter torchscript``). Its deprecation
notice is not something a user of this package can act on, so it is silenced at the one call
site; every other warning passes.

Both are called with the same arguments: input and output names, and dynamic axes as the legacy
exporter takes them (``{tensor name: {axis: dimension name}}``). The graph's inputs and outputs
carry those dimension names whichever exporter wrote it, so a user sees ``batch``, ``height``,
``stride8_height`` and so on either way. The choice is recorded in the graph's metadata
(:func:`exporter_metadata`, key :data:`EXPORTER_KEY`) next to the input conventions.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import onnx
import torch

from nasnet_backbones.errors import CommandError

__all__ = ["DEFAULT_EXPORTER", "DEFAULT_OPSETS", "EXPORTERS", "EXPORTER_KEY", "MIN_OPSETS", "ExportTraceError",
           "check_opset", "exporter_metadata", "resolve_opset", "write_onnx"]

logger = logging.getLogger(__name__)

EXPORTERS = ("dynamo", "torchscript")
DEFAULT_EXPORTER = "dynamo"
EXPORTER_KEY = "exporter"
# The dynamo exporter's operator library is written for opset 18; older opsets need ONNX's version
# converter, which cannot convert Pad (and then leaves the graph at 18 with only a log line).
MIN_OPSETS = {"dynamo": 18, "torchscript": 13}
DEFAULT_OPSETS = {"dynamo": 18, "torchscript": 17}

DynamicAxes = Mapping[str, Mapping[int, str]]
# The dynamo exporter's passes log each step at INFO (over a hundred lines for a small model).
_CHATTY_LOGGERS = ("onnxscript", "onnx_ir")


class ExportTraceError(CommandError, RuntimeError):
    """The exporter could not capture the model (it is not written)."""


def _check_exporter(exporter: str) -> None:
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r}; use one of {', '.join(EXPORTERS)}")


def resolve_opset(exporter: str, opset: int | None) -> int:
    """``opset``, or the exporter's default when None; refused (``ValueError``) when the exporter cannot write it."""
    _check_exporter(exporter)
    chosen = DEFAULT_OPSETS[exporter] if opset is None else opset
    check_opset(exporter, chosen)
    return chosen


def check_opset(exporter: str, opset: int) -> None:
    """Refuse an opset the exporter cannot write, naming the flags that fix it."""
    _check_exporter(exporter)
    if opset < MIN_OPSETS[exporter]:
        hint = " (or --exporter torchscript for older opsets)" if exporter == "dynamo" else ""
        raise ValueError(f"--opset {opset}: the {exporter} exporter writes opset {MIN_OPSETS[exporter]} or later; "
                         f"pass --opset {MIN_OPSETS[exporter]} or later{hint}")


def exporter_metadata(exporter: str) -> dict[str, str]:
    """The metadata entries recording which exporter wrote a graph, and with which PyTorch."""
    _check_exporter(exporter)
    return {EXPORTER_KEY: exporter, "torch_version": torch.__version__}


def write_onnx(module: torch.nn.Module, args: tuple[torch.Tensor, ...], path: str | Path, *, exporter: str,
               opset: int, input_names: Sequence[str], output_names: Sequence[str],
               dynamic_axes: DynamicAxes | None = None, minimums: Mapping[str, int] | None = None) -> None:
    """Export ``module`` called on ``args`` to ``path`` with ``exporter`` (see the module doc).

    ``dynamic_axes`` names the dimensions that vary, per input and output; inputs sharing a name
    share one dimension. ``minimums`` gives the smallest value of a named input dimension that the
    dynamo exporter may assume (``torch.export.Dim(min=...)``; a dimension without one may be any
    size, or be refused by torch.export when the model needs more). The dynamo exporter derives the
    outputs' dimensions itself; they are then renamed as ``dynamic_axes`` says. A model the
    exporter cannot capture raises :class:`ExportTraceError` with the exporter's first line of
    explanation."""
    check_opset(exporter, opset)
    axes = {name: dict(value) for name, value in (dynamic_axes or {}).items()}
    with torch.no_grad():
        if exporter == "torchscript":
            _torchscript(module, args, path, opset, input_names, output_names, axes)
            return
        graph = _dynamo(module, args, opset, input_names, output_names, axes, dict(minimums or {}))
    onnx.save(graph, str(path))


def _torchscript(module: torch.nn.Module, args: tuple, path: str | Path, opset: int, input_names: Sequence[str],
                 output_names: Sequence[str], axes: dict[str, dict[int, str]]) -> None:
    with warnings.catch_warnings():
        # PyTorch >= 2.9 warns on every use of the legacy exporter, and its own code inside calls a
        # helper it deprecated ("The feature will be removed"). This package uses it only where the
        # dynamo exporter cannot go yet, or when the user chose it: the notice is not theirs to act on.
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export",
                                category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="The feature will be removed", category=DeprecationWarning)
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=opset, input_names=list(input_names),
                          output_names=list(output_names), dynamic_axes=axes or None, do_constant_folding=True)


def _first_line(exc: BaseException) -> str:
    """The explanation's first line, and where in the model it happened when torch says so."""
    lines = [line.strip() for line in str(exc).strip().splitlines()]
    if not lines:
        return type(exc).__name__
    where = next((line for line in lines if line.startswith("Caused by:")), "")
    return f"{lines[0]} {where}".strip()


def _takes_varargs(module: torch.nn.Module) -> bool:
    """Whether ``forward`` takes ``*args`` (detectron2's TracingAdapter): torch.export then sees one
    tuple argument, and the dynamic shapes nest one level deeper."""
    params = list(inspect.signature(module.forward).parameters.values())
    return len(params) == 1 and params[0].kind is inspect.Parameter.VAR_POSITIONAL


def _dynamo(module: torch.nn.Module, args: tuple, opset: int, input_names: Sequence[str],
            output_names: Sequence[str], axes: dict[str, dict[int, str]], minimums: dict[str, int]) -> onnx.ModelProto:
    dims: dict[str, torch.export.Dim] = {}

    def dim(name: str) -> torch.export.Dim:
        if name not in dims:
            dims[name] = torch.export.Dim(name, min=minimums[name]) if name in minimums else torch.export.Dim(name)
        return dims[name]

    shapes: tuple = tuple({axis: dim(d) for axis, d in axes.get(name, {}).items()} or None for name in input_names)
    if _takes_varargs(module):
        shapes = (shapes,)
    with _quiet(_CHATTY_LOGGERS):
        return _capture_and_translate(module, args, shapes, dims, opset, input_names, output_names, axes)


@contextmanager
def _quiet(names: Sequence[str]) -> Iterator[None]:
    """Within the block, the named loggers pass warnings and errors only, unless debug logging is on
    (``nasnet -v``), which shows their progress too."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    debug = logging.getLogger().isEnabledFor(logging.DEBUG)
    for logger in loggers:
        if not debug:
            logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _capture_and_translate(module: torch.nn.Module, args: tuple, shapes: tuple, dims: dict, opset: int,
                           input_names: Sequence[str], output_names: Sequence[str],
                           axes: dict[str, dict[int, str]]) -> onnx.ModelProto:
    try:
        program = torch.export.export(module, tuple(args), dynamic_shapes=shapes, strict=False)
    except Exception as exc:  # torch.export's UserError, guard and data-dependence errors, unsupported ops
        raise ExportTraceError(f"torch.export could not capture {type(module).__name__} with dimensions "
                               f"{sorted(dims) or 'all fixed'}: {_first_line(exc)}; export with --exporter "
                               "torchscript instead") from None
    try:
        onnx_program = torch.onnx.export(program, tuple(args), dynamo=True, opset_version=opset, verbose=False,
                                         input_names=list(input_names), output_names=list(output_names))
    except Exception as exc:  # torch.onnx's ConversionError (an op without an ONNX translation)
        raise ExportTraceError(f"the dynamo ONNX exporter could not translate {type(module).__name__}: "
                               f"{_first_line(exc)}; export with --exporter torchscript instead") from None
    graph = onnx_program.model_proto
    _strip_debug_metadata(graph)
    _name_dimensions(graph, axes)
    return graph


def _strip_debug_metadata(graph: onnx.ModelProto) -> None:
    """Drop the dynamo exporter's per-node and per-value records (source stack traces with the
    exporting machine's paths, FX node text): debugging aids that would ship in every file."""
    for node in graph.graph.node:
        del node.metadata_props[:]
    for values in (graph.graph.input, graph.graph.output, graph.graph.value_info):
        for value in values:
            del value.metadata_props[:]
    for init in graph.graph.initializer:
        del init.metadata_props[:]
    del graph.graph.metadata_props[:]


def _name_dimensions(graph: onnx.ModelProto, axes: dict[str, dict[int, str]]) -> None:
    """Give the graph's inputs and outputs the dimension names ``axes`` asks for (the dynamo
    exporter names outputs' dimensions by expressions of the inputs', such as ``batch`` or
    ``((height - 1)//2 + 1)``)."""
    for value in (*graph.graph.input, *graph.graph.output):
        dims = value.type.tensor_type.shape.dim
        for axis, name in axes.get(value.name, {}).items():
            if axis < len(dims):
                dims[axis].dim_param = name  # clears dim_value: they are one field of a oneof
