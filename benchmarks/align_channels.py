"""onnxruntime latency of NASNet-A mobile with channel alignment: unaligned, aligned to 8 and to 16,
against a naive export of ``pretrainedmodels``' nasnetamobile, FP32 and INT8.

    python benchmarks/align_channels.py [--rounds 40] [--no-int8] [--json results.json]
    python benchmarks/align_channels.py --detector faster_rcnn_nasnet_a_mobile_FPN_1x [--size 512] [--rounds 10]

Same random weights everywhere (Cadene's port, random BatchNorm statistics, converted into this
package's model), 224x224, batch 1, one onnxruntime thread (``intra_op_num_threads=1``,
``inter_op_num_threads=1``, all graph optimisations). Every model is timed in this process with
``time.thread_time()`` (CPU time of the calling thread, in which a one-thread session runs), the
variants alternating within each round (A B C ... A B C ...), median over ``--rounds`` after three
warm-up rounds: ratios measured in one run, robust to other load on a shared machine.

The naive exports are what a user of Cadene's model would write: ``torch.onnx.export(model, x)``
with PyTorch's default (dynamo) exporter, and with ``dynamo=False`` (TorchScript, opset 17). Ours
is ``export.export_classifier(..., batch=1, align_channels=...)``. INT8 is ``export.quantize_onnx``
(QDQ, per-channel, synthetic calibration; the agreement gate is off: random weights). For each
graph the table also gives what onnxruntime made of it (``optimized_model_filepath``): nodes in
the NCHWc domain, the layout reorders left, convolutions outside NCHWc, and the quantized
convolutions for INT8. Markdown to stdout.
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
import onnx
import torch

import nasnet_backbones as nb
from export import export_classifier
from export.align_channels import conv_cost
from export.ort_profile import census_of
from export.quantize import quantize_onnx
from nasnet_backbones.convert import convert_state_dict
from nasnet_backbones.host import cpu_summary


def _randomize_batchnorm(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


def session(path: Path, optimized: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(optimized)
    options.log_severity_level = 3  # the note that an NCHWc graph is specific to this host
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def kernels(optimized: Path) -> dict[str, int]:
    """What onnxruntime ran (:func:`export.ort_profile.census_of`): NCHWc nodes, reorders,
    convolutions outside NCHWc, quantized convolutions."""
    census = census_of(onnx.load(str(optimized)), str(optimized))
    return {"nchwc": census.nchwc_nodes, "reorders": census.reorders,
            "plain_conv": census.convs - census.nchwc_convs - census.qlinear_convs,
            "qlinear_conv": census.qlinear_convs}


def detector(config: str, size: int, rounds: int) -> None:
    """A whole detectron2 detector (random weights), unaligned against aligned to the host's block,
    on one square image of ``size`` pixels."""
    import detection  # noqa: F401  (registers the NASNet backbones)
    from detection.model_zoo import get_config
    from export.detectron2_detector import export_detector

    cfg = get_config(config)
    feed = np.random.default_rng(0).uniform(0, 255, (3, size, size)).astype(np.float32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sessions = []
        for align in ("none", "auto"):
            path = tmp / f"det_{align}.onnx"
            report = export_detector(cfg, "", path, (size, size), align_channels=align)
            sessions.append(session(path, tmp / f"det_{align}.opt.onnx"))
            rows.append({"label": f"{config}, align {report.metadata['channel_alignment']}",
                         "size_mb": path.stat().st_size / 1e6, **kernels(tmp / f"det_{align}.opt.onnx")})
        times: list[list[float]] = [[] for _ in rows]
        for r in range(rounds + 2):
            for i, s in enumerate(sessions):
                start = time.thread_time()
                s.run(None, {"image": feed})
                if r >= 2:
                    times[i].append(time.thread_time() - start)
    print(f"{config}, {size}x{size} image, onnxruntime CPU, 1 thread, thread_time median of {rounds} alternating "
          f"rounds; {cpu_summary()}\n")
    print("| model | file (MB) | median (ms) | vs unaligned | NCHWc nodes | reorders | convs outside NCHWc |")
    print("|---|---|---|---|---|---|---|")
    base = statistics.median(times[0])
    for row, t in zip(rows, times):
        m = statistics.median(t)
        print(f"| {row['label']} | {row['size_mb']:.1f} | {m * 1e3:.1f} | {m / base:.2f}x | {row['nchwc']} | "
              f"{row['reorders']} | {row['plain_conv']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--no-int8", dest="int8", action="store_false")
    parser.add_argument("--json", help="also write the numbers here")
    parser.add_argument("--detector", metavar="CONFIG", help="time this detectron2 config's whole detector instead")
    parser.add_argument("--size", type=int, default=512, help="with --detector: the square image side")
    args = parser.parse_args()
    if args.detector:
        torch.set_num_threads(1)
        return detector(args.detector, args.size, args.rounds)
    import pretrainedmodels

    torch.set_num_threads(1)
    torch.manual_seed(0)
    reference = pretrainedmodels.nasnetamobile(num_classes=1000, pretrained=None).eval()
    _randomize_batchnorm(reference)
    ours = nb.create_model("nasnet_a_mobile").eval()
    ours.load_state_dict(convert_state_dict(ours, reference.state_dict()))
    x = torch.randn(1, 3, 224, 224)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for label, dynamo in (("naive dynamo", True), ("naive torchscript", False)):
            path = tmp / f"{label.replace(' ', '_')}.onnx"
            with torch.no_grad():
                extra = {} if dynamo else {"dynamo": False, "opset_version": 17}
                torch.onnx.export(reference, (x,), str(path), input_names=["input"], **extra)
            rows.append({"label": f"pretrainedmodels nasnetamobile, {label} export", "path": path})
        for align in ("none", "8", "16"):
            path = tmp / f"ours_{align}.onnx"
            report = export_classifier(ours, path, batch=1, align_channels=align)
            rows.append({"label": f"ours, align {align}", "path": path, "align": align, "alignment": report.alignment})
        if args.int8:
            for align in ("none", "16"):
                path = tmp / f"ours_{align}.int8.onnx"
                quantize_onnx(tmp / f"ours_{align}.onnx", path, "synthetic", per_channel=True, num_calibration=16,
                              num_held_out=4, min_agreement=0.0, max_rel_error=float("inf"), min_box_iou=0.0)
                rows.append({"label": f"ours INT8, align {align}", "path": path, "align": align})
        sessions = []
        for i, row in enumerate(rows):
            optimized = tmp / f"optimized_{i}.onnx"
            sessions.append(session(row["path"], optimized))
            row.update(size_mb=row["path"].stat().st_size / 1e6, mult_adds=conv_cost(onnx.load(str(row["path"]))),
                       **kernels(optimized))
        feed = x.numpy()
        outputs = [s.run(None, {s.get_inputs()[0].name: feed})[0] for s in sessions]
        base = outputs[2]  # ours, unaligned
        for row, out in zip(rows, outputs):
            row["max_rel_diff_vs_unaligned"] = float(np.abs(out - base).max() / np.abs(base).max())
        times: list[list[float]] = [[] for _ in rows]
        for r in range(args.rounds + 3):
            for i, s in enumerate(sessions):
                name = s.get_inputs()[0].name
                start = time.thread_time()
                s.run(None, {name: feed})
                if r >= 3:
                    times[i].append(time.thread_time() - start)
    for row, t in zip(rows, times):
        row["median_ms"] = statistics.median(t) * 1e3
        del row["path"]
    naive = rows[0]["median_ms"]
    naive_ts = rows[1]["median_ms"]
    unaligned = rows[2]["median_ms"]
    print(f"NASNet-A mobile, 224x224, batch 1, onnxruntime CPU, 1 thread, thread_time median of {args.rounds} "
          f"alternating rounds; {cpu_summary()}\n")
    print("| model | file (MB) | mult-adds (M) | median (ms) | vs naive dynamo | vs naive torchscript | vs ours unaligned | "
          "NCHWc nodes | reorders | convs outside NCHWc | QLinearConv |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        madds = f"{row['mult_adds'] / 1e6:.0f}" if row.get("mult_adds") else ""
        print(f"| {row['label']} | {row['size_mb']:.1f} | {madds} | {row['median_ms']:.2f} | {row['median_ms'] / naive:.2f}x | "
              f"{row['median_ms'] / naive_ts:.2f}x | {row['median_ms'] / unaligned:.2f}x | {row['nchwc']} | {row['reorders']} | "
              f"{row['plain_conv']} | {row['qlinear_conv']} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"host": cpu_summary(), "rows": rows}, indent=2, default=str))


if __name__ == "__main__":
    sys.exit(main())
