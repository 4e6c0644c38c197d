"""onnxruntime latency of NASNet-A mobile: this package's verified export against a naive export of
``pretrainedmodels``' nasnetamobile, and INT8 against FP32.

    python benchmarks/onnx_latency.py [--runs 50] [--threads 2]

Same (converted) random weights in both models, 224x224, batch 1. The naive export is
``torch.onnx.export(model, x, dynamo=False)`` of Cadene's port, as a user would do it: the
baseline, so it stays a plain call of PyTorch's exporter. Ours is what ``nasnet export classifier``
writes: ``export.export_classifier`` with its defaults (dynamo exporter, constant-folded, BatchNorm
fused, static non-negative pads, channels aligned to this host's block: ``--align-channels auto``),
batch 1. INT8 is ``export.quantize_onnx`` of it (QDQ, per-channel, synthetic calibration). Each model
is timed in its own process (:func:`export.bench.measure_in_child`), median of ``--runs`` after 3
warm-up runs; with one thread the clock is the thread's CPU time (robust to other load), else wall
time. The host's CPU model and ISA flags head the table. Markdown to stdout.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import nasnet_backbones as nb
from export import export_classifier
from export.bench import clock_for, measure_in_child
from export.quantize import quantize_onnx
from nasnet_backbones.convert import convert_state_dict
from nasnet_backbones.host import cpu_summary


def timed(path: Path, runs: int, threads: int) -> dict:
    return measure_in_child("ort", str(path), batch=1, input_size=224, threads=threads, runs=runs, warmup=3,
                            clock=clock_for(threads))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import pretrainedmodels

    torch.manual_seed(0)
    reference = pretrainedmodels.nasnetamobile(num_classes=1000, pretrained=None).eval()
    ours = nb.create_model("nasnet_a_mobile").eval()
    ours.load_state_dict(convert_state_dict(ours, reference.state_dict()))
    x = torch.randn(1, 3, 224, 224)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        naive, fp32, int8 = Path(tmp) / "naive.onnx", Path(tmp) / "ours.onnx", Path(tmp) / "ours.int8.onnx"
        with torch.no_grad():
            torch.onnx.export(reference, (x,), str(naive), dynamo=False, opset_version=17, input_names=["input"])
        export_classifier(ours, fp32, batch=1)  # nasnet export classifier's defaults (alignment: auto)
        quantize_onnx(fp32, int8, "synthetic", per_channel=True, num_calibration=32, num_held_out=16)
        for label, path in [("pretrainedmodels nasnetamobile, naive export", naive), ("nasnet_backbones export", fp32),
                            ("nasnet_backbones export, INT8", int8)]:
            rows.append((label, path.stat().st_size / 1e6, timed(path, args.runs, args.threads)))
    base = rows[0][2]["median_ms"]
    fp32_ms = rows[1][2]["median_ms"]
    clock = "thread CPU time" if clock_for(args.threads) == "thread" else "wall time"
    print(f"host: {cpu_summary()}\n")
    print(f"NASNet-A mobile, 224x224, batch 1, {args.threads} threads, onnxruntime CPU, median of {args.runs} "
          f"({clock})\n")
    print("| model | file (MB) | median (ms) | p90 (ms) | vs naive | vs our FP32 | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|")
    for label, size, r in rows:
        print(f"| {label} | {size:.1f} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | {r['median_ms'] / base:.2f}x | "
              f"{r['median_ms'] / fp32_ms:.2f}x | {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
