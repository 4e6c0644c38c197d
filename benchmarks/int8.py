"""INT8 against FP32 in onnxruntime for NASNet-A mobile: what quantize_onnx's speed fixes buy.

    python benchmarks/int8.py [--rounds 40] [--size 224] [--profile] [--json results.json]

NASNet-A mobile with random weights (``nasnet_backbones.create_model("nasnet_a_mobile")``),
exported with ``export.export_classifier(..., batch=1, align_channels=...)``, unaligned and aligned
to 16 channels. Each FP32 export is quantized twice with ``export.quantize_onnx`` (QDQ, u8
activations, s8 per-channel weights, MinMax, 16 synthetic calibration inputs; the agreement gate is
off because the weights are random: tests/test_int8_accuracy.py measures agreement on a trained
model):

* ``INT8 before``: ``fold_batchnorm=False, float_ops=()``, the quantization as it was (every op
  onnxruntime can quantize; the BatchNorm behind the factorized reduction's Concat is left to the
  export, which now folds it itself, ``export.layout_folds``, so on older exports this row also
  keeps 4 FP32 BatchNorms with their transposes);
* ``INT8 float pools``: ``pool_as_conv=False``, the fallback for dynamic sizes: AveragePool
  outputs read only by Add kept float (no ``QLinearAveragePool``, but Q/DQ and transposes around);
* ``INT8 after``: the defaults (that BatchNorm folded into its convolutions, the 3x3 average pools
  rewritten as depthwise convolutions and a product, ``reduce_range`` where the host lacks VNNI).

All variants run in this process, one onnxruntime thread (``intra_op_num_threads=1``,
``inter_op_num_threads=1``: the calling thread), all graph optimizations; each run is timed with
``time.thread_time()`` (CPU time of the calling thread, robust to other load), the variants
alternating within each round, median over ``--rounds`` after three warm-up rounds. The census
lines say what onnxruntime made of each graph (``export.ort_profile.graph_census``); ``--profile``
adds the kernel time by op type (``export.ort_profile.op_profile``). Markdown to stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import nasnet_backbones as nb
from export import export_classifier
from export.ort_profile import graph_census, op_profile
from export.quantize import quantize_onnx
from nasnet_backbones.host import host_has_vnni
from nasnet_backbones.host import cpu_description, cpu_summary

OFF = {"min_agreement": 0.0, "max_rel_error": float("inf"), "min_box_iou": 0.0}
BEFORE = {"fold_batchnorm": False, "float_ops": (), "pool_as_conv": False}
FLOAT_POOLS = {"pool_as_conv": False}


def session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40, help="timed alternating rounds (median)")
    parser.add_argument("--size", type=int, default=224, help="input size")
    parser.add_argument("--profile", action="store_true", help="also print each graph's kernel time by op type")
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nb.create_model("nasnet_a_mobile").eval()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="nasnet-int8-bench-") as tmp:
        tmp = Path(tmp)
        for align in ("none", "16"):
            fp32 = tmp / f"fp32_{align}.onnx"
            export_classifier(model, fp32, input_size=args.size, batch=1, align_channels=align)
            rows.append({"label": f"FP32, align {align}", "path": fp32, "align": align})
            for label, options in (("INT8 before", BEFORE), ("INT8 float pools", FLOAT_POOLS), ("INT8 after", {})):
                path = tmp / f"{label.split(' ', 1)[1].replace(' ', '_')}_{align}.onnx"
                quantize_onnx(fp32, path, "synthetic", per_channel=True, num_calibration=16, num_held_out=4,
                              **OFF, **options)
                rows.append({"label": f"{label}, align {align}", "path": path, "align": align})
        sessions = [session(row["path"]) for row in rows]
        for row in rows:
            row["size_mb"] = row["path"].stat().st_size / 1e6
            row["census"] = graph_census(row["path"])
            if args.profile:
                row["profile"] = op_profile(row["path"], runs=10)
        feed = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size)).astype(np.float32)
        name = sessions[0].get_inputs()[0].name
        times: list[list[float]] = [[] for _ in rows]
        for r in range(args.rounds + 3):
            for i, s in enumerate(sessions):
                start = time.thread_time()
                s.run(None, {name: feed})
                if r >= 3:
                    times[i].append(time.thread_time() - start)
    medians = [statistics.median(t) * 1e3 for t in times]
    fp32_of = {row["align"]: m for row, m in zip(rows, medians) if row["label"].startswith("FP32")}
    best_fp32 = min(fp32_of.values())
    print(f"NASNet-A mobile (random weights), {args.size}x{args.size}, batch 1, onnxruntime CPU, 1 thread, "
          f"thread_time median of {args.rounds} alternating rounds; {cpu_summary()}; "
          f"VNNI: {'yes' if host_has_vnni() else 'no (reduce_range on)'}\n")
    print("| model | file (MB) | median (ms) | vs FP32 same alignment | vs fastest FP32 | QLinearConv | NCHWc convs | "
          "Q / DQ left | next to Concat/Add/pool | Transpose |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row, m in zip(rows, medians):
        c = row["census"]
        print(f"| {row['label']} | {row['size_mb']:.1f} | {m:.2f} | {m / fp32_of[row['align']]:.2f}x | "
              f"{m / best_fp32:.2f}x | {c.qlinear_convs}/{c.convs} | {c.nchwc_convs}/{c.convs} | "
              f"{c.quantize_linear} / {c.dequantize_linear} | {c.qdq_near_concat_add_pool} | {c.transposes} |")
    print()
    for row in rows:
        print(f"{row['label']}: " + row["census"].format().split("\n", 1)[1].strip().replace("\n  ", "; "))
        if args.profile:
            print("  " + row["profile"].format().replace("\n", "\n  "))
    if args.json:
        out = {"host": cpu_description(), "host_summary": cpu_summary(), "rounds": args.rounds, "size": args.size,
               "rows": [{"label": row["label"], "size_mb": row["size_mb"], "median_ms": m,
                         "census": row["census"].as_dict(),
                         **({"profile": row["profile"].as_dict()} if args.profile else {})}
                        for row, m in zip(rows, medians)]}
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
