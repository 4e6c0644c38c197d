"""``nasnet export ort``: the ORT format that onnxruntime mobile loads, optimized for a named target
and verified against the ``.onnx`` before it is written.

A session that loads an ``.ort`` file runs only the graph optimizations saved in it (it skips the
layout transforms, NCHWc and NHWC, that a session applies to an ``.onnx``). Saving the file from a
session at the basic level, as this command once did, made it 2.0-2.7x slower than the ``.onnx``
on x86. The conversion is therefore onnxruntime's own ``convert_onnx_models_to_ort`` with its
``--optimization_style`` and ``--target_platform``:

- ``Fixed`` (the default here) runs every optimization for the target before saving: for
  ``amd64`` that includes the NCHWc layout, so the file runs as fast as the ``.onnx`` on x86-64 (and
  only there); for ``arm`` it leaves NCHWc out and allows int8 activations in QDQ fusions.
- ``Runtime`` saves basic optimizations plus records of the others, replayed at load time only
  when the session sets ``session.enable_saved_runtime_optimizations`` to ``1``; onnxruntime
  recommends it with NNAPI or CoreML, which take an unknown share of the nodes.

Exports meant for mobile use a fixed batch of 1: with a dynamic batch onnxruntime's mobile
usability checker gives NNAPI and CoreML no nodes at all. A dynamic batch is fixed to 1 (unless
asked not to) with onnxruntime's ``onnx_model_utils``, recorded in the file's metadata, and the
coverage NNAPI and CoreML would get is reported (:func:`mobile_coverage`, onnxruntime's
``usability_checker``).

Verification compares the ``.ort`` with the ``.onnx`` (each in the session its format gets) on
generated inputs. FP32 outputs agree to 1e-5 of their scale (the amd64 ``Fixed`` file is
bit-exact; other targets reorder float sums). An output that a ``DequantizeLinear`` produces may
differ by one step of its quantization grid: the same QDQ graph computed by fused integer kernels
and by float simulation rounds some values to neighbouring grid points. That, not a different
computation, is why an INT8 ``.ort`` saved at the basic level "computed something else": on
NASNet-A mobile 21% of its logits were exactly one output step (13.2) away from the ``.onnx``'s,
never more, against a tolerance of 1e-4 of the output scale (0.17, 1.3% of a step).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import platform
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import onnx

from nasnet_backbones.errors import first_line

from .onnx_export import ExportVerificationError, refuse_own_input, verified_output
from .quantize import calibration_inputs, load_exported

__all__ = ["TARGET_PLATFORMS", "OPTIMIZATION_STYLES", "METADATA_KEY", "RUNTIME_REPLAY_ENTRY", "EpCoverage",
           "MobileCoverage", "OrtReport", "host_platform", "mobile_coverage", "ort_session_options",
           "convert_to_ort", "add_parser"]

logger = logging.getLogger(__name__)

TARGET_PLATFORMS = ("amd64", "arm")
OPTIMIZATION_STYLES = ("Fixed", "Runtime")
METADATA_KEY = "ort_format"  # the conversion's record in the .ort file's metadata (JSON)
# The session option that replays a Runtime-style file's saved optimizations; without it such a
# file runs with basic optimizations only. It has no effect on a Fixed-style file.
RUNTIME_REPLAY_ENTRY = "session.enable_saved_runtime_optimizations"

FP32_RTOL = 1e-5  # of the output's scale (at least 1): float sums reordered by layout transforms
INT8_STEPS = 1.0  # output quantization steps: two valid roundings of the same QDQ graph

# onnxruntime's usability checker: (name, check function, its supported-ops list; None = NNAPI's).
_EPS = (("NNAPI", None), ("CoreML NeuralNetwork", "coreml_supported_neuralnetwork_ops.md"),
        ("CoreML MLProgram", "coreml_supported_mlprogram_ops.md"))


@dataclass
class EpCoverage:
    """What onnxruntime's mobile usability checker expects one execution provider to take: nodes it
    supports out of all (after the basic optimizations the ORT conversion applies), the partitions
    they form (each one a hand-over between the CPU and the accelerator), and the checker's verdict
    (YES, MAYBE or NO: one partition with most nodes is what pays)."""

    provider: str
    supported_nodes: int
    total_nodes: int
    partitions: int
    suitability: str
    unsupported_ops: list[str] = field(default_factory=list)
    nodes_with_dynamic_shapes: int = 0  # nodes refused only because an input shape is not fixed

    def summary(self) -> str:
        share = self.supported_nodes / self.total_nodes if self.total_nodes else 0.0
        extra = f"; not supported: {', '.join(self.unsupported_ops)}" if self.unsupported_ops else ""
        dynamic = (f"; {self.nodes_with_dynamic_shapes} nodes refused for dynamic shapes"
                   if self.nodes_with_dynamic_shapes else "")
        return (f"{self.provider}: {self.supported_nodes} of {self.total_nodes} nodes ({share:.0%}) in "
                f"{self.partitions} partition{'s' if self.partitions != 1 else ''}, "
                f"worth trying: {self.suitability}{extra}{dynamic}")


@dataclass
class MobileCoverage:
    """NNAPI and CoreML coverage of one ONNX graph (:func:`mobile_coverage`)."""

    path: str
    fixed_input_shape: bool
    providers: list[EpCoverage]

    def summary(self) -> str:
        head = f"mobile coverage of {self.path}" + ("" if self.fixed_input_shape else
                                                    " (its input shape is dynamic: fix it for NNAPI/CoreML)")
        return "\n".join([head + ":"] + [f"  {p.summary()}" for p in self.providers])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class OrtReport:
    """What :func:`convert_to_ort` wrote and how it was checked."""

    path: str
    source: str
    target_platform: str
    optimization_style: str
    batch: int | str  # the .ort's batch: an int, or the name of a dynamic dimension kept
    batch_fixed: bool  # a dynamic batch was fixed to 1 by this conversion
    quantized: bool
    verified_inputs: list[list[int]]
    max_abs_diff: float
    tolerance: float
    tolerance_rule: str
    onnx_bytes: int
    ort_bytes: int
    coverage: MobileCoverage
    session_config: dict[str, str] = field(default_factory=dict)  # entries a session loading it needs

    def summary(self) -> str:
        batch = f"batch {self.batch}" + (" (was dynamic, fixed to 1)" if self.batch_fixed else "")
        load = (f"; load it with the session option {RUNTIME_REPLAY_ENTRY}=1" if self.session_config else "")
        where = (" (x86's NCHWc layout baked in: runs on x86-64 only)"
                 if self.target_platform == "amd64" and self.optimization_style == "Fixed" else "")
        return (f"{self.path}: ORT format, {self.optimization_style} optimizations for {self.target_platform}{where}, "
                f"{batch}; verified against {self.source} in onnxruntime on inputs {self.verified_inputs}: "
                f"max difference {self.max_abs_diff:.2e} (tolerance {self.tolerance:.2e}, {self.tolerance_rule})"
                f"{load}\n{self.coverage.summary()}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def host_platform() -> str:
    """This machine's target platform in onnxruntime's terms: ``amd64`` (x86-64) or ``arm``."""
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "x64"):
        return "amd64"
    if machine in ("arm64", "aarch64") or machine.startswith("arm"):
        return "arm"
    raise ValueError(f"this machine ({platform.machine() or 'unknown'}) is neither x86-64 nor ARM; pass "
                     f"--target-platform ({' or '.join(TARGET_PLATFORMS)})")


def ort_session_options(*, threads: int | None = None) -> Any:
    """``onnxruntime.SessionOptions`` for loading an ``.ort`` file written here: saved runtime
    optimizations replayed (needed by Runtime-style files, no effect on Fixed ones; onnxruntime
    advises it only for trusted models, as files this package wrote are), and ``threads`` intra-op
    threads (and one inter-op thread) when given."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry(RUNTIME_REPLAY_ENTRY, "1")
    if threads is not None:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return options


def _coverage_of(model: onnx.ModelProto, path: str) -> MobileCoverage:
    from onnxruntime.tools.mobile_helpers import usability_checker as checker
    from onnxruntime.tools.onnx_model_utils import is_fixed_size_tensor

    weights = {i.name for i in model.graph.initializer}
    fixed = all(is_fixed_size_tensor(i) for i in model.graph.input if i.name not in weights)
    providers = []
    for name, ops_file in _EPS:
        # require_fixed_input_sizes=True: what the provider gets from this graph as it is (the
        # checker's own first pass); False would count nodes it could take after fixing shapes.
        info = (checker.check_nnapi_partitions(model, True) if ops_file is None
                else checker.check_coreml_partitions(model, True, ops_file))
        providers.append(EpCoverage(name, info.num_supported_nodes, info.num_nodes, info.num_partitions,
                                    info.suitability().name, sorted(info.unsupported_ops),
                                    info.nodes_unsupported_due_to_dynamic_input))
    return MobileCoverage(path, fixed, providers)


def mobile_coverage(path: str | Path) -> MobileCoverage:
    """NNAPI and CoreML (NeuralNetwork and MLProgram) coverage of the ``.onnx`` at ``path`` as
    onnxruntime's mobile usability checker (``check_onnx_model_mobile_usability``) estimates it:
    the graph is optimized at the basic level first, as the ORT conversion does, then shape
    inference runs and each provider's supported-op list is matched. A dynamic batch or image size
    leaves the providers (nearly) nothing: fix it before deploying to them. ``.ort`` files cannot
    be checked (the checker reads ONNX): check the ``.onnx`` they came from."""
    path = Path(path)
    if path.suffix.lower() == ".ort":
        raise ValueError(f"{path}: mobile coverage is checked on the .onnx file (onnxruntime's usability checker "
                         "reads ONNX, not the ORT format); pass the .onnx the .ort was converted from")
    load_exported(path)  # one clear error for a file that is not a readable ONNX model
    return _coverage_of_file(path, str(path))


def _coverage_of_file(path: Path, label: str) -> MobileCoverage:
    from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo, optimize_model

    with tempfile.TemporaryDirectory(prefix="nasnet-coverage-") as tmp:
        optimized = Path(tmp) / "basic.onnx"
        try:
            optimize_model(path, optimized)
            model = ModelProtoWithShapeInfo(optimized).model_with_shape_info
        except Exception as exc:  # onnxruntime's and onnx's own error types
            raise ValueError(f"onnxruntime cannot optimize {label} for the usability check: "
                             f"{first_line(exc)}") from None
        return _coverage_of(model, label)


def _image_input(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    weights = {i.name for i in model.graph.initializer}
    return next(i for i in model.graph.input if i.name not in weights)  # load_exported checked there is one


def _fix_batch(model: onnx.ModelProto) -> tuple[int | str | None, bool]:
    """Fix a dynamic batch (the first of four input dimensions) to 1 with onnxruntime's
    ``onnx_model_utils``, through the whole graph and into the output shapes. Returns (the
    batch before, whether it was fixed); a whole detector's C x H x W input has no batch."""
    from onnxruntime.tools.onnx_model_utils import fix_output_shapes, make_dim_param_fixed

    dims = _image_input(model).type.tensor_type.shape.dim
    if len(dims) != 4 or dims[0].dim_value > 0:
        return (dims[0].dim_value if len(dims) == 4 else None), False
    before = dims[0].dim_param or "?"
    if dims[0].dim_param:
        make_dim_param_fixed(model.graph, dims[0].dim_param, 1)  # every value that shares the name
    else:  # an unnamed dynamic dimension
        dims[0].Clear()
        dims[0].dim_value = 1
    fix_output_shapes(model)
    return before, True


def _output_steps(model: onnx.ModelProto) -> list[float | None]:
    """For each graph output, the step of its quantization grid when a ``DequantizeLinear``
    produces it (the largest, for per-channel scales), else None."""
    from onnx import numpy_helper

    weights = {i.name: i for i in model.graph.initializer}
    constants = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant"}
    producers = {out: n for n in model.graph.node for out in n.output}
    steps: list[float | None] = []
    for output in model.graph.output:
        node = producers.get(output.name)
        scale = None
        if node is not None and node.op_type == "DequantizeLinear":
            name = node.input[1]
            if name in weights:
                scale = float(np.abs(numpy_helper.to_array(weights[name])).max())
            elif name in constants:
                scale = float(np.abs(numpy_helper.to_array(constants[name].attribute[0].t)).max())
        steps.append(scale)
    return steps


def _run(path: Path, inputs: list[np.ndarray], options: Any = None) -> list[list[np.ndarray]]:
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return [session.run(None, {name: x}) for x in inputs]
    except Exception as exc:  # onnxruntime's own error types
        raise ExportVerificationError(f"onnxruntime cannot run {path}: {first_line(exc)}") from None


@contextlib.contextmanager
def _quiet_onnxruntime() -> Iterator[None]:
    """Send the converter's prints to the debug log, and silence onnxruntime's warning that an
    amd64 file holds NCHWc nodes (that is what an amd64 target asks for; the report says it)."""
    import onnxruntime as ort

    out = io.StringIO()
    tool_logger = logging.getLogger("ort_format_model.utils")  # "Created config in <temporary folder>"
    level = tool_logger.level
    ort.set_default_logger_severity(3)
    tool_logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(out):
            yield
    finally:
        ort.set_default_logger_severity(2)  # onnxruntime's default (warnings)
        tool_logger.setLevel(level)
        for line in out.getvalue().splitlines():
            logger.debug("convert_onnx_models_to_ort: %s", line)


def convert_to_ort(onnx_path: str | Path, output: str | Path | None = None, *, target_platform: str | None = None,
                   optimization_style: str = "Fixed", fix_batch: bool = True) -> OrtReport:
    """Convert ``onnx_path`` to the ORT format with onnxruntime's ``convert_onnx_models_to_ort``,
    its optimizations saved for ``target_platform`` (``amd64`` or ``arm``; default: this machine's)
    in ``optimization_style`` (``Fixed``: all of them applied before saving, fastest on the CPU;
    ``Runtime``: replayed at load time, for NNAPI/CoreML). A dynamic batch becomes 1 unless
    ``fix_batch`` is False; the metadata key :data:`METADATA_KEY` records the choices. The result is
    written to ``output`` (default: beside the model, ``.ort``) only after it was loaded back and
    agreed with the ``.onnx`` (module doc: FP32 within 1e-5 of the output scale, dequantized
    outputs within one quantization step). FP32 and INT8 (QDQ) graphs both convert. Returns an
    :class:`OrtReport` with the NNAPI and CoreML coverage of the converted graph."""
    import onnxruntime as ort
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    onnx_path = Path(onnx_path)
    output = Path(output) if output else onnx_path.with_suffix(".ort")
    if target_platform is not None and target_platform not in TARGET_PLATFORMS:
        raise ValueError(f"--target-platform {target_platform!r} is not one onnxruntime converts for; choose "
                         f"{' or '.join(TARGET_PLATFORMS)}")
    if optimization_style not in OPTIMIZATION_STYLES:
        raise ValueError(f"--optimization-style {optimization_style!r} is not one of {', '.join(OPTIMIZATION_STYLES)}")
    target = target_platform or host_platform()
    refuse_own_input(output, "-o/--output", {"input model": onnx_path})
    if output.suffix != ".ort":
        raise ValueError(f"{output}: ORT-format files must end in .ort (onnxruntime tells the format by the suffix)")
    model = load_exported(onnx_path, "input model")

    batch_before, fixed = _fix_batch(model) if fix_batch else (None, False)
    dims = _image_input(model).type.tensor_type.shape.dim
    batch: int | str | None = (dims[0].dim_value or dims[0].dim_param or "?") if len(dims) == 4 else None
    quantized = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
    record = {"target_platform": target, "optimization_style": optimization_style, "optimization_level": "all",
              "batch": batch, "batch_fixed_from": batch_before if fixed else None,
              "converter": "onnxruntime.tools.convert_onnx_models_to_ort", "onnxruntime": ort.__version__}
    model.metadata_props.append(onnx.StringStringEntryProto(key=METADATA_KEY, value=json.dumps(record)))

    with tempfile.TemporaryDirectory(prefix="nasnet-ort-") as tmp:
        prepared = Path(tmp) / "model.onnx"  # the converter takes files named *.onnx
        onnx.save(model, str(prepared))
        coverage = _coverage_of_file(prepared, str(output))  # the graph the .ort holds
        try:
            with _quiet_onnxruntime():
                convert_onnx_models_to_ort(prepared, output_dir=Path(tmp) / "out",
                                           optimization_styles=[OptimizationStyle[optimization_style]],
                                           target_platform=target)
        except Exception as exc:  # onnxruntime's own error types
            raise ValueError(f"onnxruntime cannot convert {onnx_path} to the ORT format: {first_line(exc)}") from None
        (converted,) = (Path(tmp) / "out").glob("*.ort")

        inputs = list(calibration_inputs(model, "synthetic", 2, seed=1))
        if batch is not None and not isinstance(batch, int):  # a dynamic batch kept: check a second size
            inputs.append(np.concatenate(inputs))
        options = ort_session_options()
        reference, loaded = _run(onnx_path, inputs), _run(converted, inputs, options)
        steps = _output_steps(model)
        worst, worst_tol, rule = 0.0, 0.0, ""
        for ref_out, ort_out in zip(reference, loaded):
            for i, (a, b) in enumerate(zip(ref_out, ort_out)):
                if a.shape != b.shape:
                    raise ExportVerificationError(f"{output} not written: output {i} of the .ort file has shape "
                                                  f"{list(b.shape)}, the .onnx's {list(a.shape)}")
                if steps[i] is not None:
                    tol, why = INT8_STEPS * steps[i] * (1 + 1e-5), f"{INT8_STEPS:g} step of the output's quantization"
                else:
                    tol, why = FP32_RTOL * max(float(np.abs(a).max()), 1.0), f"{FP32_RTOL:g} of the output scale"
                diff = float(np.abs(a.astype(np.float64) - b).max()) if a.size else 0.0
                if not diff <= tol:  # NaN fails too
                    raise ExportVerificationError(
                        f"{output} not written: output {i} of the .ort file differs from the .onnx's by {diff:.3e}, "
                        f"more than {tol:.3e} ({why}); the conversion for {target} ({optimization_style}) "
                        "changed what the graph computes")
                if diff >= worst:
                    worst, worst_tol, rule = diff, tol, why
        with verified_output(output, suffix=".tmp.ort") as target_tmp:  # onnxruntime tells the format by the suffix
            shutil.copyfile(converted, target_tmp)
    session_config = {RUNTIME_REPLAY_ENTRY: "1"} if optimization_style == "Runtime" else {}
    report = OrtReport(str(output), str(onnx_path), target, optimization_style, batch if batch is not None else "none",
                       fixed, quantized, [list(x.shape) for x in inputs], worst, worst_tol, rule,
                       onnx_path.stat().st_size, output.stat().st_size, coverage, session_config)
    logger.debug("%s", report.summary())
    return report


def add_parser(sub: Any) -> None:
    """The ``ort`` subcommand of ``nasnet export``."""
    o = sub.add_parser("ort", help="convert to the ORT format of onnxruntime mobile, optimized for a target "
                                   "(verified against the .onnx before it is written)")
    o.add_argument("model", help="an .onnx file (FP32 or INT8 QDQ)")
    o.add_argument("-o", "--output", help="the .ort file (default: next to the model)")
    o.add_argument("--target-platform", choices=TARGET_PLATFORMS, default=None,
                   help="the CPU the file is for: amd64 bakes in x86's NCHWc layout (runs on x86-64 only), arm "
                        "leaves it out (default: this machine's)")
    o.add_argument("--optimization-style", choices=OPTIMIZATION_STYLES, default="Fixed",
                   help="Fixed (default): every optimization applied before saving, the fastest with the CPU "
                        "provider; Runtime: some saved to replay at load time (session option "
                        f"{RUNTIME_REPLAY_ENTRY}=1), onnxruntime's advice with NNAPI or CoreML")
    o.add_argument("--keep-dynamic-batch", action="store_true",
                   help="keep a dynamic batch (default: fixed to 1, which NNAPI and CoreML need)")
    o.add_argument("--json", action="store_true", help="print the report as JSON")
    o.set_defaults(func=_ort)


def _ort(args: argparse.Namespace) -> int:
    report = convert_to_ort(args.model, args.output, target_platform=args.target_platform,
                            optimization_style=args.optimization_style, fix_batch=not args.keep_dynamic_batch)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0
