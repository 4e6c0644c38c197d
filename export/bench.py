"""``nasnet bench``: PyTorch eager against onnxruntime FP32 and INT8, on this machine.

Each backend runs in its own subprocess, so the peak resident memory reported is that backend's
alone (model, runtime and activations). Warm-up runs are excluded; latency is per batch
(median and 90th percentile), throughput is images per second at the median.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


__all__ = ["BenchRun", "add_parser", "check_target", "measure", "run_backends", "timed"]


def peak_rss_mb() -> float:
    """This process's peak resident memory. /proc's VmHWM starts afresh at exec; ru_maxrss (the
    fallback off Linux) keeps the parent's high-water mark across fork and exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def measure(backend: str, target: str, batch: int, size: int, threads: int, runs: int, warmup: int,
            pixel_max: float = 255.0) -> dict[str, Any]:
    """Time one backend in this process: ``eager`` (target: model name[:weights]) or ``ort`` (target:
    .onnx/.ort). A whole detector (one C x H x W image) gets uniform pixels up to ``pixel_max``, its
    input conventions' value range (the parent reads them: this child imports neither onnx nor torch)."""
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    if backend == "eager":
        import torch

        import nasnet_backbones as nb

        torch.set_num_threads(threads)
        name, _, weights = target.partition(":")
        model = nb.create_model(name, pretrained=weights or False).eval()
        tensor = torch.from_numpy(x)

        def step() -> None:
            with torch.inference_mode():
                model(tensor)
    else:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(target, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        if len(session.get_inputs()[0].shape) == 3:  # a whole detector: one image per call
            x = np.random.default_rng(0).uniform(0, pixel_max, (3, size, size)).astype(np.float32)

        def step() -> None:
            session.run(None, {name: x})

    times = timed(step, runs, warmup)
    median = statistics.median(times)
    return {"median_ms": 1000 * median, "p90_ms": 1000 * float(np.percentile(times, 90)),
            "images_per_s": batch / median, "peak_rss_mb": peak_rss_mb()}


def _child(backend: str, target: str, *, batch: int, input_size: int, threads: int, runs: int, warmup: int,
           pixel_max: float = 255.0) -> dict[str, Any]:
    # Run as a plain script, so an onnxruntime child never imports torch (it would count in its memory).
    cmd = [sys.executable, str(Path(__file__).resolve()), backend, target, str(batch), str(input_size),
           str(threads), str(runs), str(warmup), repr(float(pixel_max))]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=max(600, 20 * runs))
    except subprocess.TimeoutExpired:
        raise ValueError(f"benchmarking {backend} {target} did not finish in time") from None
    if out.returncode != 0:
        tail = " | ".join(out.stderr.strip().splitlines()[-3:])
        raise ValueError(f"benchmarking {backend} {target} failed: {tail}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _conventions(path: str) -> Any:
    """The input conventions of an .onnx or .ort file (read through onnxruntime, which reads both)."""
    import onnxruntime as ort

    from .conventions import conventions_from_metadata

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    try:
        return conventions_from_metadata(session.get_modelmeta().custom_metadata_map, session.get_inputs()[0].shape)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}; re-export the model with `nasnet export`") from None


def _recorded_size(path: str) -> int:
    """The square input size of an .onnx or .ort file: its fixed height, or the size its export recorded."""
    size = _conventions(path).input_size
    if not size:
        raise ValueError(f"{path} takes any input size and records none; pass --input-size")
    return size


@dataclass(frozen=True)
class BenchRun:
    """What :func:`run_backends` measured: one row per backend, at ``input_size``."""

    rows: list[dict[str, Any]]
    input_size: int


def run_backends(*, model: str | None = None, weights: str | None = None, onnx: str | None = None,
                 int8: str | None = None, quantize: bool = True, calib: str = "synthetic",
                 input_size: int | None = None, threads: int = 2, batch: int = 1, runs: int = 20,
                 warmup: int = 3) -> BenchRun:
    """Time PyTorch eager (a registered ``model`` with ``weights``: a tag, a file, or None for
    random weights), then onnxruntime FP32 (``onnx``, or the model exported here) and INT8
    (``int8``, or the model quantized here on ``calib`` unless ``quantize`` is false), each in its
    own process. ``input_size`` defaults to the model's, or the size ``onnx`` records. Each row:
    ``backend``, ``median_ms``, ``p90_ms``, ``images_per_s``, ``peak_rss_mb`` and ``vs_first``
    (its latency over the first row's)."""
    if not (model or onnx):
        raise ValueError("nothing to time: pass model or onnx")
    rows = []
    timing = dict(batch=batch, threads=threads, runs=runs, warmup=warmup)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = onnx
        if model:
            import nasnet_backbones as nb

            from .onnx_export import export_classifier
            from .quantize import quantize_onnx

            network = nb.create_model(model, pretrained=weights or False).eval()
            input_size = input_size or network.pretrained_cfg.input_size
            rows.append({"backend": "PyTorch eager",
                         **_child("eager", f"{model}:{weights or ''}", input_size=input_size, **timing)})
            if not fp32:  # (callers in Python may pass the model's own exports, as the demo does)
                fp32 = str(Path(tmp) / "fp32.onnx")
                export_classifier(network, fp32, input_size=input_size)
                if quantize:
                    int8 = str(Path(tmp) / "int8.onnx")
                    # Timing only; random weights (the default) agree with FP32 by chance, so only
                    # trained weights are held to the agreement threshold.
                    gate = {} if weights else {"min_agreement": 0.0}
                    quantize_onnx(fp32, int8, calib, per_channel=True, num_calibration=16, num_held_out=8, **gate)
        if fp32:
            if not input_size:
                input_size = _recorded_size(fp32)
            rows.append({"backend": "onnxruntime FP32",
                         **_child("ort", fp32, input_size=input_size, pixel_max=_conventions(fp32).pixel_max,
                                  **timing)})
        if int8:
            rows.append({"backend": "onnxruntime INT8",
                         **_child("ort", int8, input_size=input_size, pixel_max=_conventions(int8).pixel_max,
                                  **timing)})
    base = rows[0]["median_ms"]
    for row in rows:
        row["vs_first"] = row["median_ms"] / base
    return BenchRun(rows, input_size)


def add_parser(subparsers: Any) -> None:
    # here, not at the top: the per-backend child runs this file and must not load torch
    from nasnet_backbones.argtypes import image_size, nonnegative_int, positive_int

    p = subparsers.add_parser("bench", help="latency: PyTorch eager vs onnxruntime FP32 vs INT8",
                              description="Median/p90 latency, throughput and peak memory per backend, each in its "
                                          "own process, warm-up excluded.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="registered model: eager, then exported (FP32) and quantized (INT8) here")
    source.add_argument("--onnx", help="an exported .onnx (or .ort) file")
    p.add_argument("--weights", help="with --model: weights tag or file (default: random weights)")
    p.add_argument("--int8", help="with --onnx: its INT8 version, timed too")
    p.add_argument("--no-int8", action="store_true", help="with --model: skip quantization")
    p.add_argument("--calib", default="synthetic", help="with --model: calibration images for INT8 (folder or 'synthetic')")
    p.add_argument("--input-size", type=image_size, help="square input size (default: the model's)")
    p.add_argument("--threads", type=positive_int, default=2)
    p.add_argument("--batch", type=positive_int, default=1)
    p.add_argument("--runs", type=positive_int, default=20)
    p.add_argument("--warmup", type=nonnegative_int, default=3)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run)


def check_target(path: str, flag: str) -> None:
    """Refuse (``ValueError`` naming ``flag`` and the file) a file to time that onnxruntime cannot
    run as one of this package's graphs: an .onnx is checked as :func:`export.quantize.load_exported`
    does, an .ort (which onnx cannot read) by loading it in onnxruntime."""
    if Path(path).suffix != ".ort":
        from .quantize import load_exported

        load_exported(path, what=flag)
        return
    import onnxruntime as ort

    if not Path(path).is_file():
        raise FileNotFoundError(f"{flag} {path}: no such file")
    try:
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own error types
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{flag} {path} is not a model onnxruntime can load ({cause})") from None
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) not in (3, 4):
        raise ValueError(f"{flag} {path} has {len(inputs)} inputs of shapes {[i.shape for i in inputs]}; only "
                         "graphs with one image input (as `nasnet export` writes them) are supported")


def _run(args: argparse.Namespace) -> int:
    from nasnet_backbones.argtypes import refuse_together

    refuse_together(args, "--model", "--int8")  # --int8 is --onnx's quantized version
    refuse_together(args, "--onnx", "--no-int8")
    refuse_together(args, "--onnx", "--weights")
    for flag, path in (("--onnx", args.onnx), ("--int8", args.int8)):
        if path:
            check_target(path, flag)
    run = run_backends(model=args.model, weights=args.weights, onnx=args.onnx, int8=args.int8,
                       quantize=not args.no_int8, calib=args.calib, input_size=args.input_size, threads=args.threads,
                       batch=args.batch, runs=args.runs, warmup=args.warmup)
    rows = run.rows
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
        return 0
    print(f"batch {args.batch}, {run.input_size}x{run.input_size}, {args.threads} threads, median of {args.runs} "
          f"after {args.warmup} warm-up runs")
    print("| backend | median (ms) | p90 (ms) | images/s | peak RSS (MB) | vs first |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['backend']} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | {r['images_per_s']:.1f} | "
              f"{r['peak_rss_mb']:.0f} | {r['vs_first']:.2f}x |")
    return 0


if __name__ == "__main__":  # the per-backend child process
    backend, target, batch, size, threads, runs, warmup, pixel_max = sys.argv[1:9]
    print(json.dumps(measure(backend, target, int(batch), int(size), int(threads), int(runs), int(warmup),
                             float(pixel_max))))
