"""SSDlite CPU inference: NASNet-A mobile against torchvision's MobileNetV3-Large, eager and onnxruntime.

    python benchmarks/ssdlite_latency.py [--runs 20] [--threads 2]

Both are torchvision ``SSD`` models with the SSDlite head and settings of
``ssdlite320_mobilenet_v3_large`` (320x320 input, score threshold 0.001, 300 candidates per class
and 300 detections kept): ``detection.torchvision.ssdlite_nasnet("nasnet_a_mobile")`` and torchvision's
``ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)``, 91 classes, random weights
with the classification layers redrawn so that scores differ (see ``_spread_scores``: untrained
heads score every box alike, and the export's verification needs distinct scores). One 320x320
image of drawn shapes, 0-1 RGB, batch 1.

Every latency is the whole detector, image in, detections out: the transform (normalisation and
the resize to 320x320, here of a 320x320 image), backbone, head, box decoding, the per-class score
threshold and top-k, batched NMS and the 300 kept. With random weights nearly every class passes
the 0.001 threshold, so NMS runs on the most boxes it can; a trained model passes far fewer and
post-processing costs less. "Backbone only" times the feature extractor (NASNet or MobileNetV3
plus the extra blocks, six maps) alone on the normalised 320x320 tensor, eager and as its own
ONNX graph (fixed size, written by ``export.onnx_export.export_module`` with channels aligned to
this host's block as every export of this package does; its one output is the six maps flattened
and concatenated, a copy of a few hundred KB): the rest of each latency is the transform, head and
post-processing. The onnxruntime graph is ``export.torchvision_detector`` with its defaults (what
``nasnet export detector --framework torchvision`` writes: any image size, verified on another size,
channels aligned); each model is exported, timed eager and timed in onnxruntime in its own process
(onnxruntime's without torch), median of ``--runs`` after 3 warm-up runs; with one thread the
clock is the thread's CPU time, else wall time. The host's CPU model and ISA flags head the table.
Markdown to stdout.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"nasnet": "SSDlite NASNet-A mobile", "mobilenet": "SSDlite MobileNetV3-Large (torchvision)"}


def _bench_helpers():
    """export/bench.py as a plain module, so the onnxruntime child does not import torch."""
    spec = importlib.util.spec_from_file_location("nasnet_bench", ROOT / "export" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _ms(times: list[float]) -> tuple[float, float]:
    import numpy as np

    return 1000 * statistics.median(times), 1000 * float(np.percentile(times, 90))


def _spread_scores(model, image, logit_std: float = 1.5, bias_std: float = 0.5) -> None:
    """Redraw each classification layer (the 1x1 convolution ending each SSDlite prediction block)
    so that on ``image`` its logits vary by ``logit_std`` across positions, plus N(0, ``bias_std``)
    biases. Untrained heads score every box alike, and equal scores leave top-k and NMS free to
    keep different boxes in PyTorch and onnxruntime; with spread scores the export verifies."""
    import torch

    inputs = {}
    blocks = list(model.head.classification_head.module_list)
    hooks = [block[1].register_forward_hook(lambda m, args, out, k=k: inputs.__setitem__(k, args[0]))
             for k, block in enumerate(blocks)]
    with torch.no_grad():
        model([image])
    for hook in hooks:
        hook.remove()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for k, block in enumerate(blocks):
            conv = block[1]
            conv.weight.normal_(0.0, 1.0, generator=g)
            spread = float(torch.nn.functional.conv2d(inputs[k], conv.weight).std())
            conv.weight.mul_(logit_std / max(spread, 1e-30))
            conv.bias.normal_(0.0, bias_std, generator=g)


def eager(kind: str, folder: Path, runs: int, threads: int) -> dict:
    """Build, export (verified) and time one model eagerly."""
    import numpy as np
    import torch
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    from detection.torchvision import ssdlite_nasnet
    from export.onnx_export import export_module
    from export.torchvision_detector import export_torchvision_detector

    class _Features(torch.nn.Module):
        """The six feature maps as one output (export_module writes one): flattened, concatenated."""

        def __init__(self, extractor: torch.nn.Module) -> None:
            super().__init__()
            self.extractor = extractor

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([f.flatten(1) for f in self.extractor(x).values()], 1)

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if kind == "nasnet":
        model = ssdlite_nasnet("nasnet_a_mobile")
    else:
        model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
    model.eval()
    image = torch.from_numpy(np.load(folder / "image.npy"))
    _spread_scores(model, image)
    report = export_torchvision_detector(model, folder / f"{kind}.onnx", (320, 320))
    bench = _bench_helpers()
    clock = bench.CLOCKS[bench.clock_for(threads)]
    with torch.inference_mode():
        detections = len(model([image])[0]["scores"])
        whole = bench.timed(lambda: model([image]), runs, 3, clock)
        normalised = model.transform([image])[0].tensors
        backbone = bench.timed(lambda: model.backbone(normalised), runs, 3, clock)
    # The feature extractor alone in onnxruntime too, to split the detector's time (verified by the export).
    features = _Features(model.backbone).eval()
    export_module(features, folder / f"{kind}_backbone.onnx", input_size=normalised.shape[-1], batch=1,
                  align_channels="auto")
    (median, p90), (backbone_ms, _) = _ms(whole), _ms(backbone)
    return {"params_m": sum(p.numel() for p in model.parameters()) / 1e6, "median_ms": median, "p90_ms": p90,
            "backbone_ms": backbone_ms, "detections": detections, "peak_rss_mb": bench.peak_rss_mb(),
            "verified": (f"{report.metadata['verified_detections']} detections, boxes within "
                         f"{report.max_abs_error:.1e} px"),
            "file_mb": (folder / f"{kind}.onnx").stat().st_size / 1e6}


def onnxruntime(kind: str, folder: Path, runs: int, threads: int) -> dict:
    import numpy as np
    import onnxruntime as ort

    bench = _bench_helpers()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(folder / f"{kind}.onnx"), options, providers=["CPUExecutionProvider"])
    image = np.load(folder / "image.npy")
    clock = bench.CLOCKS[bench.clock_for(threads)]
    detections = len(session.run(None, {"image": image})[2])
    median, p90 = _ms(bench.timed(lambda: session.run(None, {"image": image}), runs, 3, clock))
    peak = bench.peak_rss_mb()
    backbone = ort.InferenceSession(str(folder / f"{kind}_backbone.onnx"), options, providers=["CPUExecutionProvider"])
    normalised = {"input": ((image - 0.5) / 0.5)[None]}  # both models normalise with mean = std = 0.5
    backbone_ms, _ = _ms(bench.timed(lambda: backbone.run(None, normalised), runs, 3, clock))
    return {"median_ms": median, "p90_ms": p90, "detections": detections, "peak_rss_mb": peak,
            "backbone_ms": backbone_ms}


def _child(mode: str, kind: str, folder: Path, args: argparse.Namespace) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, kind, str(folder), "--runs", str(args.runs),
                          "--threads", str(args.threads)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{mode} {kind} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, kind, folder = args.child
        run = eager if mode == "eager" else onnxruntime
        print(json.dumps(run(kind, Path(folder), args.runs, args.threads)))
        return
    import numpy as np

    from detection.synthetic import draw_shapes_image

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        pixels = np.asarray(draw_shapes_image(np.random.default_rng(0), 320)[0], dtype=np.float32) / 255.0
        np.save(Path(tmp) / "image.npy", np.ascontiguousarray(pixels.transpose(2, 0, 1)))
        for kind in MODELS:
            rows[kind] = {"eager": _child("eager", kind, Path(tmp), args), "ort": _child("ort", kind, Path(tmp), args)}
    base = rows["mobilenet"]
    from nasnet_backbones.host import cpu_summary

    clock = "thread CPU time" if args.threads == 1 else "wall time"
    print(f"host: {cpu_summary()}\n")
    print(f"SSDlite, CPU, {args.threads} threads, batch 1, 320x320, random weights, median of {args.runs} "
          f"({clock})\n")
    print("| model | params (M) | eager (ms) | eager p90 (ms) | onnxruntime (ms) | onnxruntime p90 (ms) | "
          "vs MobileNetV3 (eager / ORT) | backbone only, eager / ORT (ms) | detections | peak RSS eager / ORT (MB) | "
          "ONNX file (MB) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for kind, label in MODELS.items():
        e, o = rows[kind]["eager"], rows[kind]["ort"]
        print(f"| {label} | {e['params_m']:.2f} | {e['median_ms']:.1f} | {e['p90_ms']:.1f} | {o['median_ms']:.1f} | "
              f"{o['p90_ms']:.1f} | {e['median_ms'] / base['eager']['median_ms']:.2f}x / "
              f"{o['median_ms'] / base['ort']['median_ms']:.2f}x | {e['backbone_ms']:.1f} / {o['backbone_ms']:.1f} | "
              f"{e['detections']} / {o['detections']} | {e['peak_rss_mb']:.0f} / {o['peak_rss_mb']:.0f} | "
              f"{e['file_mb']:.1f} |")
    print()
    for kind, label in MODELS.items():
        print(f"- {label}: export verified on {rows[kind]['eager']['verified']}")


if __name__ == "__main__":
    main()
