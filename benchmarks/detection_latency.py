"""Faster R-CNN / Mask R-CNN CPU inference: NASNet-A mobile FPN against detectron2's own R50-FPN.

    python benchmarks/detection_latency.py [--task faster|mask] [--size 800] [--runs 5] [--threads 2]

The detectors are built from their configs (``faster_rcnn_nasnet_a_mobile_FPN_1x`` or
``mask_rcnn_nasnet_a_mobile_FPN_1x`` shipped here, detectron2's ``COCO-Detection/faster_rcnn_R_50_FPN_1x``
or ``COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x``) with random weights and the same test
settings (one image, shortest side ``--size``, 1000 RPN proposals, 100 detections kept, score
threshold 0 so the box head, and the mask head on all 100 detections, always do their full work;
masks are pasted into the image as in deployment). Each model runs in its own subprocess,
so the peak resident memory reported is that model's alone. Median of ``--runs`` after one
warm-up run; Markdown to stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

MODELS = {
    "faster": {
        "NASNet-A mobile FPN (shipped config, 128-channel FPN)": ("nasnet", "faster_rcnn_nasnet_a_mobile_FPN_1x"),
        "NASNet-A mobile FPN with R50-FPN's 256-channel heads": ("nasnet256", "faster_rcnn_nasnet_a_mobile_FPN_1x"),
        "R50-FPN (detectron2)": ("d2", "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"),
    },
    "mask": {
        "NASNet-A mobile FPN (shipped config, 128-channel FPN and mask head)":
            ("nasnet", "mask_rcnn_nasnet_a_mobile_FPN_1x"),
        "R50-FPN (detectron2)": ("d2", "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"),
    },
}
TITLES = {"faster": "Faster R-CNN", "mask": "Mask R-CNN"}


def measure(kind: str, config: str, size: int, runs: int, threads: int) -> dict:
    import torch
    from detectron2.modeling import build_model

    torch.set_num_threads(threads)
    if kind.startswith("nasnet"):
        import detection

        cfg = detection.get_config(config)
        if kind == "nasnet256":
            cfg.MODEL.FPN.OUT_CHANNELS = 256
            cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 256
    else:
        from detectron2 import model_zoo
        from detectron2.config import get_cfg

        cfg = get_cfg()
        cfg.merge_from_file(model_zoo.get_config_file(config), allow_unsafe=False)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 1000
    cfg.TEST.DETECTIONS_PER_IMAGE = 100
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    width = int(size * 4 / 3) // 32 * 32
    image = torch.randint(0, 255, (3, size, width)).float()
    inputs = [{"image": image, "height": size, "width": width}]
    times = []
    with torch.inference_mode():
        model(inputs)
        for _ in range(runs):
            start = time.perf_counter()
            model(inputs)
            times.append(time.perf_counter() - start)
    params = sum(p.numel() for p in model.parameters())
    from export.bench import peak_rss_mb

    peak_mb = peak_rss_mb()
    return {"median_ms": 1000 * statistics.median(times), "peak_rss_mb": peak_mb, "params_m": params / 1e6,
            "input": f"{size}x{width}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(MODELS), default="faster")
    parser.add_argument("--size", type=int, default=800)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child, args.size, args.runs, args.threads)))
        return
    rows = {}
    for label, (kind, config) in MODELS[args.task].items():
        out = subprocess.run([sys.executable, __file__, "--child", kind, config, "--size", str(args.size), "--runs",
                              str(args.runs), "--threads", str(args.threads)], capture_output=True, text=True, check=True)
        rows[label] = json.loads(out.stdout.strip().splitlines()[-1])
    base = rows["R50-FPN (detectron2)"]["median_ms"]
    print(f"{TITLES[args.task]}, CPU, {args.threads} threads, batch 1, random weights, median of {args.runs}\n")
    print("| model | input | params (M) | latency (ms) | vs R50-FPN | peak RSS (MB) |")
    print("|---|---|---|---|---|---|")
    for label, r in rows.items():
        print(f"| {label} | {r['input']} | {r['params_m']:.1f} | {r['median_ms']:.0f} | {r['median_ms'] / base:.2f}x | "
              f"{r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
