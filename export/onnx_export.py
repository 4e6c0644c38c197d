"""ONNX export of NASNet classifiers and multi-scale backbones that verifies itself.

Every export: captures the eval-mode model with PyTorch's dynamo exporter (``torch.export``, the
default) or, on request, the legacy TorchScript-based one (:mod:`export.exporters`), constant-folds
the graph (onnxruntime's basic optimisations: pad-amount and shape arithmetic the exporter leaves,
and BatchNorm into the convolutions), refuses negative pads and training-only ops, pads channel counts to onnxruntime's SIMD block with
zeros (:mod:`export.align_channels`; ``align_channels``, by default the host's block), stores metadata
(input size, mean/std, class names, source model and weights, the input conventions, which
exporter wrote it), runs ``onnx.checker`` with ``full_check``, and then compares onnxruntime with
PyTorch on *different* inputs from the traced one (other batch sizes when the batch is dynamic:
it is traced at 2 and checked at 1 and 3). Only a graph within tolerance is moved to the
requested path; otherwise nothing is left behind and :class:`ExportVerificationError` says by how
much it missed.

By default the image size is fixed in the graph: TF 'SAME' padding depends on the size's parity,
and at a fixed size its pad-and-crop is folded to static, non-negative pads inside the
convolutions and max pools (:mod:`export.graph_edits`; what mobile runtimes handle best). ``dynamic_size=True`` makes height and width dimensions of the graph (the padding
becomes shape arithmetic in it), and verifies at a second size of the other parity in each
dimension.
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import onnx
import torch
from torch import nn

from nasnet_backbones.atomic import atomic_target, refuse_own_input, same_file
from nasnet_backbones.errors import CommandError

from .align_channels import DEFAULT_ALIGNMENT, align_channels as align_graph, alignment_metadata, parse_alignment
from .conventions import InputConventions
from .exporters import DEFAULT_EXPORTER, exporter_metadata, resolve_opset, write_onnx
from .graph_edits import drop_unused_initializers, fold_pads, fold_static_dims, graph_constants, merge_pad_crops
from .layout_folds import exclusive_average_pools, fold_concat_batchnorm

__all__ = ["ExportReport", "ExportVerificationError", "export_classifier", "export_backbone", "export_module", "verify_onnx",
           "graph_constants", "graph_problems", "verified_output", "save_checked", "same_file",
           "refuse_own_input"]

logger = logging.getLogger(__name__)

_MAX_FOLD_ROUNDS = 64  # rounds of fold_static_dims; a NASNet needs about one per strided layer
# Ops that only exist when something random runs at inference (drop path, dropout in train mode).
_TRAINING_OPS = {"RandomUniform", "RandomUniformLike", "RandomNormal", "RandomNormalLike", "Bernoulli", "Dropout"}


class ExportVerificationError(CommandError, RuntimeError):
    """The exported graph is malformed or does not compute what the PyTorch model computes."""


@dataclass
class ExportReport:
    path: str
    input_shape: list[int | str]
    outputs: list[str]
    verified_inputs: list[list[int]]
    max_abs_error: float
    max_rel_error: float
    rtol: float
    atol: float
    op_counts: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    exporter: str = ""  # dynamo or torchscript (export.exporters)
    alignment: dict[str, Any] = field(default_factory=dict)  # export.align_channels.AlignmentReport, as a dict

    def summary(self) -> str:
        by = f" ({self.exporter} exporter)" if self.exporter else ""
        return (f"{self.path}{by}: verified with onnxruntime on inputs {self.verified_inputs} (not the traced one): "
                f"max abs error {self.max_abs_error:.2e}, max rel error {self.max_rel_error:.2e} "
                f"(tolerance rtol {self.rtol:g}, atol {self.atol:g})" + self._aligned())

    def _aligned(self) -> str:
        if not self.alignment.get("multiple"):
            return ""
        return (f"; channels aligned to {self.alignment['multiple']} ({self.alignment['channels_added']} zero channels "
                f"in {self.alignment['convs_padded']} convolutions)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Features(nn.Module):
    """A features_only NASNet with a tuple of outputs in stride order (ONNX needs positional outputs)."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.model, self.names = model, list(names)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.model(x)
        return tuple(features[n] for n in self.names)


def graph_problems(model: onnx.ModelProto) -> list[str]:
    """Deployment hazards in a graph: negative pads, training-only ops."""
    problems = []
    consts = graph_constants(model)
    for node in model.graph.node:
        if node.op_type in _TRAINING_OPS:
            problems.append(f"training-only op {node.op_type} ({node.name})")
        if node.op_type == "Pad":
            pads = consts.get(node.input[1]) if len(node.input) > 1 else None
            if pads is None:
                problems.append(f"Pad {node.name} has pad amounts computed at run time (not constant-folded)")
            elif (np.asarray(pads) < 0).any():
                problems.append(f"Pad {node.name} has negative pads {np.asarray(pads).tolist()}")
        for attr in node.attribute:
            if attr.name == "pads" and any(v < 0 for v in attr.ints):
                problems.append(f"{node.op_type} {node.name} has negative pads {list(attr.ints)}")
    return problems


def _fold_constants(path: Path) -> onnx.ModelProto:
    """onnxruntime's basic graph optimisations (constant folding, Conv+BatchNorm fusion, dead-node
    removal), which keep the graph standard ONNX; only the opsets the graph uses are kept."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    folded = path.with_name(path.name + ".folded")
    options.optimized_model_filepath = str(folded)
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        model = onnx.load(str(folded))
    finally:
        folded.unlink(missing_ok=True)
    used = {node.domain for node in model.graph.node}
    kept = [op for op in model.opset_import if op.domain in used or op.domain in ("", "ai.onnx")]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return model


@contextmanager
def verified_output(path: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary file beside ``path`` (:func:`nasnet_backbones.atomic.atomic_target`: a name unique
    to this process, and one a killed export left behind is removed by the next export of the same
    file). When the block finishes (its checks passed), the file becomes ``path`` with ordinary
    permissions; on any error it is removed and nothing is left. ``onnx.checker`` and
    shape-inference failures become :class:`ExportVerificationError`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_target(path, suffix=suffix) as tmp:
            yield tmp
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportVerificationError(f"onnx.checker rejected the graph: {exc}") from None


def save_checked(graph: onnx.ModelProto, metadata: dict[str, str], path: Path) -> None:
    """Add ``metadata``, run the full ``onnx.checker`` and save."""
    for key, value in metadata.items():
        graph.metadata_props.append(onnx.StringStringEntryProto(key=key, value=str(value)))
    onnx.checker.check_model(graph, full_check=True)
    onnx.save(graph, str(path))


def _rel_error(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-12))


def verify_onnx(path: str | Path, model: nn.Module, inputs: Sequence[torch.Tensor], rtol: float, atol: float,
                threads: int | None = None) -> tuple[float, float]:
    """Max (abs, rel) error of onnxruntime against PyTorch over ``inputs``; raises past tolerance.

    The relative error is the max abs error over the largest reference magnitude (per output);
    an output passes when its abs error is within ``atol`` or its relative error within ``rtol``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    worst_abs = worst_rel = 0.0
    for x in inputs:
        with torch.no_grad():
            expected = model(x)
        expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
        try:
            got = session.run(None, {input_name: x.numpy()})
        except Exception as exc:  # onnxruntime's own error types
            raise ExportVerificationError(f"onnxruntime failed on input {list(x.shape)}: {exc}") from None
        for name, ours, ref in zip([o.name for o in session.get_outputs()], got, expected):
            ref = ref.numpy()
            if ours.shape != ref.shape:
                raise ExportVerificationError(f"output {name}: onnxruntime shape {ours.shape}, PyTorch {ref.shape} "
                                              f"for input {list(x.shape)}")
            if not np.isfinite(ours).all():
                raise ExportVerificationError(f"output {name} for input {list(x.shape)}: onnxruntime gives NaN or inf")
            abs_err, rel_err = float(np.abs(ours - ref).max()), _rel_error(ours, ref)
            worst_abs, worst_rel = max(worst_abs, abs_err), max(worst_rel, rel_err)
            if not (abs_err <= atol or rel_err <= rtol):  # NaN fails too
                raise ExportVerificationError(
                    f"output {name} for input {list(x.shape)}: onnxruntime differs from PyTorch by {abs_err:.3e} "
                    f"(relative {rel_err:.3e}), over the tolerance (rtol {rtol:g}, atol {atol:g})")
    return worst_abs, worst_rel


def _export(module: nn.Module, path: str | Path, input_size: int, batch: int | str, output_names: list[str],
            opset: int | None, metadata: dict[str, str], rtol: float, atol: float, in_chans: int = 3,
            dynamic_size: bool = False, exporter: str = DEFAULT_EXPORTER,
            align_channels: int | str = DEFAULT_ALIGNMENT) -> ExportReport:
    path = Path(path)
    opset = resolve_opset(exporter, opset)
    align_channels = parse_alignment(align_channels)  # a bad value is refused before anything is traced
    dynamic_batch = batch == "dynamic"
    if not dynamic_batch and (not isinstance(batch, int) or isinstance(batch, bool) or batch < 1):
        raise ValueError(f"batch must be 'dynamic' or a positive integer, not {batch!r}")
    # A dynamic batch is traced at 2: torch.export specialises a dimension traced at 1 to the constant 1.
    traced_batch = 2 if dynamic_batch else batch
    g = torch.Generator().manual_seed(0)
    traced = torch.randn(traced_batch, in_chans, input_size, input_size, generator=g)
    # Verification inputs differ from the traced one: new values, and other batch sizes if allowed.
    checks = [torch.randn(b, in_chans, input_size, input_size, generator=g)
              for b in ((1, 3) if dynamic_batch else (traced_batch,))]
    if dynamic_size:  # another size, of the other parity in each dimension
        checks.append(torch.randn(checks[0].shape[0], in_chans, input_size + 33, input_size + 31, generator=g))
    batch_axis = {0: "batch"} if dynamic_batch else {}
    dynamic_axes = {"input": batch_axis | ({2: "height", 3: "width"} if dynamic_size else {})}
    for name in output_names:  # feature maps have their own spatial size per stride
        maps = dynamic_size and isinstance(module, _Features)
        dynamic_axes[name] = batch_axis | ({2: f"{name}_height", 3: f"{name}_width"} if maps else {})
    # torch.export assumes what the traced input shows: a feature map that could shrink to one
    # pixel would broadcast, so the deepest (stride-32) map must keep two, which the graph records.
    minimums = {}
    if dynamic_size:
        side = _min_side(module)
        if input_size < side:
            raise ValueError(f"a dynamic-size export is traced at the input size, which must be at least {side} "
                             f"(twice the deepest stride) here, not {input_size}; pass a larger --input-size")
        minimums = {"height": side, "width": side}
        metadata = {**metadata, "min_input_size": str(side)}
    metadata = {**metadata, **exporter_metadata(exporter)}
    modes = {m: m.training for m in module.modules()}  # restored afterwards: the caller's model is theirs
    module = module.eval()
    try:
        with verified_output(path) as tmp:
            write_onnx(module, (traced,), tmp, exporter=exporter, opset=opset, input_names=["input"],
                       output_names=output_names, dynamic_axes=dynamic_axes, minimums=minimums)
            graph = _fold_constants(tmp)
            # The TorchScript tracer's reads of fixed sizes: each round makes the next layer's sizes
            # known to shape inference (onnxruntime folds what they feed), until none is left.
            for _ in range(_MAX_FOLD_ROUNDS):
                if not fold_static_dims(graph):
                    break
                drop_unused_initializers(graph)
                onnx.save(graph, str(tmp))
                graph = _fold_constants(tmp)
            if merge_pad_crops(graph) + fold_pads(graph):  # static pads where the size is fixed
                drop_unused_initializers(graph)
            # Ops that break onnxruntime's NCHWc and INT8 kernel chains, folded into their neighbours.
            if exclusive_average_pools(graph) + fold_concat_batchnorm(graph):
                drop_unused_initializers(graph)
            problems = graph_problems(graph)
            if dynamic_size:  # the pads follow the size's parity: graph arithmetic, checked at both parities below
                problems = [p for p in problems if "computed at run time" not in p]
            if problems:
                raise ExportVerificationError("the exported graph is not deployable: " + "; ".join(problems[:5]))
            # Zero channels up to the runtime's SIMD block; verified below like the rest of the graph.
            alignment = align_graph(graph, align_channels)
            metadata = {**metadata, **alignment_metadata(alignment)}
            save_checked(graph, metadata, tmp)
            max_abs, max_rel = verify_onnx(tmp, module, checks, rtol, atol)
    finally:
        for m, training in modes.items():
            m.training = training
    report = ExportReport(
        path=str(path),
        input_shape=["batch" if dynamic_batch else traced_batch, in_chans,
                     *(["height", "width"] if dynamic_size else [input_size, input_size])],
        outputs=output_names, verified_inputs=[list(c.shape) for c in checks], max_abs_error=max_abs,
        max_rel_error=max_rel, rtol=rtol, atol=atol, op_counts=dict(Counter(n.op_type for n in graph.graph.node)),
        metadata=metadata, exporter=exporter, alignment=alignment.to_dict(),
    )
    logger.info("%s", report.summary())
    return report


def _min_side(module: nn.Module) -> int:
    """The smallest height or width a dynamic-size graph of ``module`` is exported for: twice its
    deepest stride (64 for an ImageNet-stem NASNet), so that every feature map has at least two pixels."""
    model = module.model if isinstance(module, _Features) else module
    strides = [f["reduction"] for f in getattr(model, "feature_info", None) or []]
    return 2 * max(strides, default=1)


def _metadata(model: nn.Module, input_size: int, extra: dict[str, Any] | None,
              dynamic_size: bool = False) -> dict[str, str]:
    cfg = getattr(model, "pretrained_cfg", None)  # where a NASNet came from (None for other modules)
    weights = cfg.weights if cfg is not None else None
    meta: dict[str, Any] = {
        "source_model": cfg.architecture if cfg is not None else type(model).__name__,
        "genotype_hash": model.genotype.hash() if hasattr(model, "genotype") else "",
        "input_size": input_size,
        "input_layout": "NCHW, RGB",
        "weights": weights.name if weights is not None else "",
    }
    if weights is not None:
        meta.update(mean=list(weights.mean), std=list(weights.std), resize_size=weights.resize_size,
                    interpolation=weights.interpolation)
    meta.update(extra or {})
    # The input record quantize and bench read: NASNet's preprocessing when the model has no weights.
    conventions = InputConventions(
        "nasnet", (0.0, 1.0), "RGB", "center_crop", dynamic_size, input_size,
        tuple(weights.mean) if weights is not None else (0.5, 0.5, 0.5),
        tuple(weights.std) if weights is not None else (0.5, 0.5, 0.5),
        weights.resize_size if weights is not None else int(input_size / 0.875),
        weights.interpolation if weights is not None else "bilinear")
    meta.update(conventions.to_metadata())
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}


def _default_input_size(model: nn.Module) -> int:
    cfg = getattr(model, "pretrained_cfg", None)
    return cfg.input_size if cfg is not None else 224


def export_classifier(model: nn.Module, path: str | Path, input_size: int | None = None, batch: int | str = "dynamic",
                      opset: int | None = None, metadata: dict[str, Any] | None = None, rtol: float = 1e-4,
                      atol: float = 1e-5, dynamic_size: bool = False, exporter: str = DEFAULT_EXPORTER,
                      align_channels: int | str = DEFAULT_ALIGNMENT) -> ExportReport:
    """Export a classifier (logits output), verified; see the module docstring. ``exporter`` is
    ``dynamo`` or ``torchscript`` (:mod:`export.exporters`); ``opset`` None is the exporter's default.
    ``align_channels`` (``"auto"``, ``"none"``, 8 or 16) pads channel counts to onnxruntime's SIMD
    block with zeros (:mod:`export.align_channels`); ``"auto"`` is this host's block."""
    if getattr(model, "features_only", False):
        raise ValueError("this model returns features; use export_backbone")
    size = input_size or _default_input_size(model)
    meta = _metadata(model, size, metadata, dynamic_size)
    if getattr(model, "num_classes", 0) == 1000 and "class_names" not in meta:
        from nasnet_backbones.imagenet import imagenet_classes

        meta["class_names"] = json.dumps([c.name for c in imagenet_classes()])
    return _export(model, path, size, batch, ["logits"], opset, meta, rtol, atol, dynamic_size=dynamic_size,
                   exporter=exporter, align_channels=align_channels)


def export_module(module: nn.Module, path: str | Path, input_size: int, in_chans: int = 3, batch: int | str = 1,
                  opset: int | None = None, rtol: float = 1e-4, atol: float = 1e-5,
                  exporter: str = DEFAULT_EXPORTER, align_channels: int | str = "none") -> ExportReport:
    """Export any module with one image input and one output (an op, a block), verified the same way
    (the graph as written unless ``align_channels`` asks for alignment)."""
    return _export(module, path, input_size, batch, ["output"], opset, {}, rtol, atol, in_chans=in_chans,
                   exporter=exporter, align_channels=align_channels)


def export_backbone(model: nn.Module, path: str | Path, input_size: int | None = None, batch: int | str = "dynamic",
                    opset: int | None = None, metadata: dict[str, Any] | None = None, rtol: float = 1e-4,
                    atol: float = 1e-5, dynamic_size: bool = False, exporter: str = DEFAULT_EXPORTER,
                    align_channels: int | str = DEFAULT_ALIGNMENT) -> ExportReport:
    """Export a ``features_only`` model: one output per stride it has, named ``stride2`` .. ``stride32``
    (each with its real channel count; ``align_channels`` as for :func:`export_classifier`)."""
    if not getattr(model, "features_only", False):
        raise ValueError("export_backbone needs a features_only model: create_model(name, features_only=True)")
    size = input_size or _default_input_size(model)
    if size % 32:
        raise ValueError(f"input size {size} is not a multiple of 32; the stride-32 features need one")
    names = [f["name"] for f in model.feature_info]
    meta = _metadata(model, size, {"feature_strides": [f["reduction"] for f in model.feature_info], **(metadata or {})},
                     dynamic_size)
    return _export(_Features(model, names), path, size, batch, names, opset, meta, rtol, atol,
                   dynamic_size=dynamic_size, exporter=exporter, align_channels=align_channels)
