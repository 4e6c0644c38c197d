"""ORT format against the ``.onnx`` it came from, FP32 and INT8, in onnxruntime on this CPU.

NASNet-A mobile (random weights) is exported at 224 with batch 1 (``export.export_classifier``, the
default channel alignment), quantized (``export.quantize_onnx``, agreement gate off: random weights
agree by chance), then converted by ``export.ort_format.convert_to_ort`` for this host's platform in
both optimization styles. The previous conversion (a session at the basic level saving its graph)
is timed beside them. One intra-op thread, CPU time of the calling thread (robust to other load on
the machine), the variants alternating round by round, medians; the host's CPU and ISA are printed
with the results.

    python benchmarks/ort_format.py [--rounds 60]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

import nasnet_backbones as nb
from export import export_classifier, quantize_onnx
from export.ort_format import convert_to_ort, ort_session_options
from nasnet_backbones.host import cpu_summary


def session(path: Path, replay: bool = False) -> ort.InferenceSession:
    options = ort_session_options(threads=1) if replay else ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def basic_level_ort(source: Path, target: Path) -> Path:
    """The conversion ``nasnet export ort`` made before: the graph a basic-level session saves."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(target)
    options.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    args = parser.parse_args()
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        export_classifier(nb.create_model("nasnet_a_mobile").eval(), d / "fp32.onnx", input_size=224, batch=1)
        quantize_onnx(d / "fp32.onnx", d / "int8.onnx", "synthetic", min_agreement=0.0)
        for name in ("fp32", "int8"):
            onnx_file = d / f"{name}.onnx"
            fixed = convert_to_ort(onnx_file, d / f"{name}.fixed.ort").path
            runtime = convert_to_ort(onnx_file, d / f"{name}.runtime.ort", optimization_style="Runtime").path
            variants = {".onnx": session(onnx_file), ".ort Fixed": session(fixed),
                        ".ort Runtime (replayed)": session(runtime, replay=True),
                        ".ort basic level (before)": session(basic_level_ort(onnx_file, d / f"{name}.basic.ort"))}
            times: dict[str, list[float]] = {k: [] for k in variants}
            for s in variants.values():
                for _ in range(3):
                    s.run(None, {"input": x})
            for _ in range(args.rounds):
                for label, s in variants.items():
                    start = time.thread_time()
                    s.run(None, {"input": x})
                    times[label].append(time.thread_time() - start)
            results[name] = {k: 1000 * statistics.median(v) for k, v in times.items()}
    print(f"host: {cpu_summary()}; onnxruntime {ort.__version__}, 1 thread, CPU time, median of {args.rounds}")
    print("| model | variant | ms | / .onnx |")
    print("|---|---|---|---|")
    for name, medians in results.items():
        for label, ms in medians.items():
            print(f"| {name.upper()} | {label} | {ms:.2f} | {ms / medians['.onnx']:.3f} |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
