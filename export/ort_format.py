"""``nasnet export ort``: the ORT format that onnxruntime mobile loads, verified against the ``.onnx``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from .onnx_export import ExportVerificationError, refuse_own_input, verified_output
from .quantize import calibration_inputs, load_exported, run_outputs

__all__ = ["convert_to_ort", "add_parser"]


def convert_to_ort(onnx_path: str | Path, output: str | Path | None = None) -> tuple[Path, float]:
    """The ``.ort`` format onnxruntime mobile loads; verified by loading it back and comparing its
    outputs with the ``.onnx`` file's on a generated input before it is written. Returns (path, max
    abs difference)."""
    import onnxruntime as ort

    onnx_path = Path(onnx_path)
    output = Path(output) if output else onnx_path.with_suffix(".ort")
    refuse_own_input(output, "-o/--output", {"input model": onnx_path})
    if output.suffix != ".ort":
        raise ValueError(f"{output}: ORT-format files must end in .ort (onnxruntime tells the format by the suffix)")
    model = load_exported(onnx_path)
    with verified_output(output, suffix=".tmp.ort") as tmp:  # onnxruntime tells the format by the suffix
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(tmp)
        options.add_session_config_entry("session.save_model_format", "ORT")
        try:
            ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own error types
            raise ValueError(f"onnxruntime cannot load {onnx_path}: {str(exc).strip().splitlines()[0]}") from None
        x = next(calibration_inputs(model, "synthetic", 1, seed=1))
        (reference,), (loaded,) = run_outputs(onnx_path, [x]), run_outputs(tmp, [x])
        diff = max(float(np.abs(a - b).max()) for a, b in zip(reference, loaded))
        scale = max(float(np.abs(a).max()) for a in reference)
        if not diff <= 1e-4 * max(scale, 1.0):  # NaN fails too
            raise ExportVerificationError(f"{output} not written: the .ort file computes something else "
                                          f"(max difference {diff:.3e})")
    return output, diff


def add_parser(sub: Any) -> None:
    """The ``ort`` subcommand of ``nasnet export``."""
    o = sub.add_parser("ort", help="convert to the ORT format of onnxruntime mobile (verified by loading it back)")
    o.add_argument("model", help="an .onnx file")
    o.add_argument("-o", "--output", help="the .ort file (default: next to the model)")
    o.set_defaults(func=_ort)


def _ort(args: argparse.Namespace) -> int:
    path, diff = convert_to_ort(args.model, args.output)
    print(f"{path}: loaded back in onnxruntime, max difference from the .onnx {diff:.2e}")
    return 0
