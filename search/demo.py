"""``nasnet demo``: the whole product on generated data, offline, in minutes on a CPU.

Steps (each also runs alone with ``--steps``; later steps read what earlier ones wrote in ``--output-dir``):

1. ``search``: a short cell search (regularized evolution) on the synthetic classification data.
2. ``backbones``: the best cell and NASNet-A side by side at NASNet-A mobile's shape: parameters,
   mult-adds, PyTorch latency and onnxruntime latency.
3. ``detect``: Faster R-CNN with the best cell as its FPN backbone, trained briefly on the
   synthetic COCO-format shapes, evaluated with COCO's AP, and its predictions drawn on an image.
4. ``export``: the NASNet-A mobile classifier and the detector exported to ONNX and verified in
   onnxruntime, the classifier quantized to INT8, and a latency table (eager, ORT FP32, ORT INT8).
5. ``report``: ``REPORT.md`` linking every artifact, and ``metrics.json``.

``--quick`` shrinks every step (the test suite runs it); ``--full`` switches to CIFAR-10 and COCO
at the paper's settings, for a GPU machine (``--cifar-dir``, ``--coco-dir``). Each step calls the
same code as its own command (``nasnet search``, ``nasnet detect``, ``nasnet export``), so the
demo shows exactly what those commands do.

The demo drives every package, so it lives on the top floor (``search``) and is registered as the
``demo`` entry point of ``nasnet.commands`` from here: the model package never imports upward.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

import torch

from nasnet_backbones.argtypes import add_renamed
from nasnet_backbones.cli import main

__all__ = ["STEPS", "add_parser", "run"]

logger = logging.getLogger(__name__)

STEPS = ("search", "backbones", "detect", "export", "report")


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("demo", help="run the whole product on generated data (search, detection, export)",
                              description=__doc__.split("\n\n")[1])
    add_renamed(p, "--output-dir", old=("--out",), dest="out", default="demo_out",
                help="output folder (default: demo_out/)")
    p.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smallest settings: a smoke test of every step")
    size.add_argument("--full", action="store_true", help="real data and paper-scale settings (GPU machine)")
    p.add_argument("--cifar-dir", help="--full: folder that holds (or will get) cifar-10-batches-py")
    p.add_argument("--coco-dir", help="--full: COCO 2017 (annotations/, train2017/, val2017/)")
    p.add_argument("--workers", type=int, default=2, help="search children trained at once")
    p.set_defaults(func=run)


class _Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.out = args, Path(args.out).expanduser()
        self.mode = "quick" if args.quick else "full" if args.full else "default"
        if args.full and not (args.cifar_dir and args.coco_dir):
            raise ValueError("--full trains on the real datasets: give --cifar-dir and --coco-dir")
        self.metrics_path = self.out / "metrics.json"
        self.metrics: dict[str, Any] = json.loads(self.metrics_path.read_text()) if self.metrics_path.is_file() else {}

    def pick(self, quick: Any, default: Any, full: Any) -> Any:
        return {"quick": quick, "default": default, "full": full}[self.mode]

    def cli(self, argv: list[str]) -> None:
        logger.info("nasnet %s", " ".join(argv))
        code = main(argv)
        if code:
            raise ValueError(f"`nasnet {' '.join(argv[:2])}` failed (exit {code}); see the message above")

    @property
    def best_genotype(self) -> Path:
        path = self.out / "search" / "best_genotype.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: run the search step first (--steps search,...)")
        return path

    # -- 1. search ---------------------------------------------------------------------------------

    def search(self) -> dict[str, Any]:
        run_dir = self.out / "search"
        argv = ["search", "--output-dir", str(run_dir), "--workers", str(self.args.workers), "--seed", "0"]
        if (run_dir / "search.json").is_file():
            argv.append("--resume")  # a second demo run continues (or just reports) the first one's search
        elif self.mode == "full":
            argv += ["--strategy", "ppo", "--dataset", "cifar10", "--data-dir", self.args.cifar_dir, "--trials", "100"]
        else:
            argv += ["--strategy", "evolution", "--population-size", "4", "--sample-size", "2", "--dataset", "synthetic",
                     "--trials", str(self.pick(2, 8, None))]
            if self.mode == "quick":
                argv += ["--child-epochs", "1", "--train-size", "200", "--val-size", "100", "--input-size", "8"]
        self.cli(argv)
        from .report import load_run

        rows = load_run(run_dir)[1]
        best = max(rows, key=lambda r: r["reward"])
        return {"children": len(rows), "best_reward": best["reward"], "best_hash": best["hash"],
                "genotype": str(self.best_genotype)}

    # -- 2. backbones --------------------------------------------------------------------------

    def backbones(self) -> dict[str, Any]:
        import torch

        from export.bench import timed
        from nasnet_backbones import genotypes
        from nasnet_backbones.complexity import count_madds, count_params
        from nasnet_backbones.genotype import Genotype
        from nasnet_backbones.builder import build_model

        from .latency import LatencyModel, LatencySettings
        from .space import SearchSpace

        cells, filters, size = self.pick((1, 8, 64), (4, 44, 224), (4, 44, 224))
        candidates = {"searched cell": Genotype.from_json(self.best_genotype), "NASNet-A": genotypes.NASNET_A}
        latency = LatencyModel(LatencySettings(target_ms=100.0, cells=cells, filters=filters, img_size=size,
                                               runs=self.pick(5, 20, 20)), SearchSpace())
        rows = []
        for name, genotype in candidates.items():
            model = build_model(genotype, cells=cells, filters=filters, stem="imagenet", img_size=size).eval()
            x = torch.randn(1, 3, size, size)
            with torch.inference_mode():
                eager = sorted(timed(lambda: model(x), self.pick(3, 10, 10), warmup=2))
            rows.append({"backbone": name, "params": count_params(model), "madds": count_madds(model, size),
                         "eager_ms": 1000 * eager[len(eager) // 2], "onnxruntime_ms": latency.measure(genotype)})
        return {"shape": f"{cells} cells per stack, base width {filters}, {size} px, ImageNet stem", "rows": rows}

    # -- 3. detection ----------------------------------------------------------------------------

    def _detector_opts(self) -> list[str]:
        if self.mode == "full":
            return ["MODEL.NASNET.GENOTYPE", str(self.best_genotype), "MODEL.WEIGHTS", ""]
        size = self.pick(64, 128, None)
        cells, filters = self.pick((1, 8), (4, 12), None)
        return ["MODEL.WEIGHTS", "", "MODEL.NASNET.GENOTYPE", str(self.best_genotype), "MODEL.NASNET.CELLS", str(cells),
                "MODEL.NASNET.FILTERS", str(filters), "MODEL.NASNET.NORM", "BN", "MODEL.BACKBONE.FREEZE_AT", "0",
                "MODEL.FPN.OUT_CHANNELS", "64", "MODEL.ROI_BOX_HEAD.FC_DIM", "256",
                "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64", "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "400",
                "MODEL.RPN.POST_NMS_TOPK_TRAIN", "200", "MODEL.RPN.PRE_NMS_TOPK_TEST", "200",
                "MODEL.RPN.POST_NMS_TOPK_TEST", "100", "MODEL.ANCHOR_GENERATOR.SIZES", "[[16], [32], [64], [128], [256]]",
                "INPUT.MIN_SIZE_TRAIN", f"({size},)", "INPUT.MAX_SIZE_TRAIN", str(size), "INPUT.MIN_SIZE_TEST", str(size),
                "INPUT.MAX_SIZE_TEST", str(size), "MODEL.DEVICE", "cpu"]

    def detect(self) -> dict[str, Any]:
        folder = self.out / "detect"
        run_dir = folder / "run"
        config = "faster_rcnn_nasnet_a_mobile_FPN_1x"
        if self.mode == "full":
            coco = Path(self.args.coco_dir).expanduser()
            train_json, train_root = coco / "annotations" / "instances_train2017.json", coco / "train2017"
            val_json, val_root = coco / "annotations" / "instances_val2017.json", coco / "val2017"
            schedule: list[str] = []
        else:
            data = folder / "data"
            if not (data / "annotations" / "instances_val.json").is_file():
                self.cli(["detect", "make-synthetic", "--output-dir", str(data), "--num-images", str(self.pick(24, 250, None)),
                          "--size", str(self.pick(64, 128, None))])
            train_json, train_root = data / "annotations" / "instances_train.json", data / "train"
            val_json, val_root = data / "annotations" / "instances_val.json", data / "val"
            iters = self.pick(40, 150, None)
            schedule = ["SOLVER.MAX_ITER", str(iters), "SOLVER.IMS_PER_BATCH", str(self.pick(4, 8, None)),
                        "SOLVER.BASE_LR", "0.01", "SOLVER.WARMUP_ITERS", str(iters // 3), "SOLVER.STEPS",
                        f"({int(iters * 0.87)},)", "SOLVER.CHECKPOINT_PERIOD", "100000", "DATALOADER.NUM_WORKERS", "1",
                        # a searched cell is not NASNet-A: clip, so that an unlucky one cannot diverge in the demo
                        "SOLVER.CLIP_GRADIENTS.ENABLED", "True", "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "norm",
                        "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "1.0", "SEED", "0"]
            if self.mode == "quick":  # a few iterations may score every box under 0.05: evaluate them all
                schedule += ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
        self.cli(["detect", "train", "--config-file", config, "--dataset-json", str(train_json), "--image-root",
                  str(train_root), "--val-json", str(val_json), "--val-image-root", str(val_root),
                  *self._detector_opts(), *schedule, "OUTPUT_DIR", str(run_dir)])
        bbox = json.loads((run_dir / "results.json").read_text())["bbox"]
        images = (sorted(Path(val_root).glob("*.png")) or sorted(Path(val_root).glob("*.jpg")))[:3]
        self.cli(["detect", "predict", *map(str, images), "--config-file", config, "--weights",
                  str(run_dir / "model_final.pth"), "--output-dir", str(folder / "predictions"), "--dataset-json", str(val_json),
                  "--score-threshold", "0.3", "--opts", *self._detector_opts()])
        drawn = json.loads((folder / "predictions" / "detections.json").read_text())
        pictures = [d["drawing"] for d in sorted(drawn, key=lambda d: -len(d["detections"]))]  # the busiest first
        return {"config": config, "AP": bbox["AP"], "AP50": bbox["AP50"], "weights": str(run_dir / "model_final.pth"),
                "predictions": [str(p) for p in pictures]}

    # -- 4. export -----------------------------------------------------------------------------

    def export(self) -> dict[str, Any]:
        from export.bench import run_backends
        from export.onnx_export import export_classifier
        from export.quantize import quantize_onnx

        from nasnet_backbones.builder import create_model

        folder = self.out / "export"
        folder.mkdir(parents=True, exist_ok=True)
        size = self.pick(96, 224, 224)
        torch.manual_seed(0)
        model = create_model("nasnet_a_mobile", pretrained=self.mode == "full").eval()
        fp32, int8 = folder / "nasnet_a_mobile.onnx", folder / "nasnet_a_mobile_int8.onnx"
        report = export_classifier(model, fp32, input_size=size)
        # Offline the classifier has random weights, whose top-1 agreement is chance: only --full's
        # published weights are held to quantize's default agreement gate.
        gate = {} if self.mode == "full" else {"min_agreement": 0.0}
        quantized = quantize_onnx(fp32, int8, "synthetic", per_channel=True, num_calibration=self.pick(4, 16, 64),
                                  num_held_out=self.pick(4, 8, 32), **gate)
        weights = self.metrics.get("detect", {}).get("weights") or str(self.out / "detect" / "run" / "model_final.pth")
        if not Path(weights).is_file():
            raise FileNotFoundError(f"{weights} does not exist: run the detect step first (--steps detect,export)")
        detector = folder / "faster_rcnn.onnx"
        self.cli(["export", "detector", "--config-file", "faster_rcnn_nasnet_a_mobile_FPN_1x", "--weights", weights,
                  "--input-size", *[str(self.pick(64, 128, 800))] * 2, "-o", str(detector),
                  "--opts", *self._detector_opts()])
        # The demo's table: the model as built, then the two files it wrote (`nasnet bench` has every row).
        rows = run_backends(model="nasnet_a_mobile", onnx=str(fp32), int8=str(int8), input_size=size, threads=2,
                            batch=1, runs=self.pick(3, 20, 20), warmup=2, optimize=False, ort_format=False).rows
        return {"classifier": str(fp32), "classifier_int8": str(int8), "detector": str(detector),
                "classifier_max_abs_error": report.max_abs_error, "int8_top1_agreement": quantized.top1_agreement,
                "input_size": size, "latency": rows}

    # -- 5. report -----------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        path = self.out / "REPORT.md"
        path.write_text(_report_text(self.out, self.metrics))
        return {"report": str(path)}

    def run(self, steps: list[str]) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        actions: dict[str, Callable[[], dict[str, Any]]] = {s: getattr(self, s) for s in STEPS}
        for step in steps:
            start = time.perf_counter()
            logger.info("demo step %s", step)
            result = actions[step]()
            self.metrics[step] = {**result, "seconds": round(time.perf_counter() - start, 1)}
            self.metrics_path.write_text(json.dumps(self.metrics, indent=2) + "\n")


def _link(out: Path, path: str | Path) -> str:
    target = Path(path)
    try:
        relative = target.resolve().relative_to(out.resolve())
    except ValueError:
        relative = target
    return f"[{relative}]({relative})"


def _report_text(out: Path, m: dict[str, Any]) -> str:
    lines = ["# nasnet-backbones demo", "",
             "Every number below was measured by this run; [metrics.json](metrics.json) holds them all.", ""]
    if "search" in m:
        s = m["search"]
        lines += ["## 1. Cell search", "",
                  f"{s['children']} children; best held-out accuracy {s['best_reward']:.4f} (cell `{s['best_hash']}`).", "",
                  f"- genotype: {_link(out, s['genotype'])}",
                  f"- cells: {_link(out, out / 'search' / 'best_normal.png')}, {_link(out, out / 'search' / 'best_reduce.png')}",
                  f"- reward curve: {_link(out, out / 'search' / 'rewards.png')}; table: {_link(out, out / 'search' / 'top_k.md')}",
                  "", "![normal cell](search/best_normal.png)", ""]
    if "backbones" in m:
        b = m["backbones"]
        lines += ["## 2. Backbones", "", f"At {b['shape']}:", "",
                  "| backbone | params | mult-adds | PyTorch eager (ms) | onnxruntime (ms) |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {r['backbone']} | {r['params'] / 1e6:.2f}M | {r['madds'] / 1e6:.0f}M | {r['eager_ms']:.1f} | "
                  f"{r['onnxruntime_ms']:.1f} |" for r in b["rows"]]
        lines.append("")
    if "detect" in m:
        d = m["detect"]
        ap = "n/a (no detections)" if d["AP"] is None else f"{d['AP']:.1f}"
        ap50 = "n/a" if d["AP50"] is None else f"{d['AP50']:.1f}"
        lines += ["## 3. Detection", "", f"Faster R-CNN ({d['config']}, the searched cell as backbone): "
                  f"COCO bbox AP {ap}, AP50 {ap50}.", "",
                  f"- weights: {_link(out, d['weights'])}"]
        lines += [f"- predictions: {_link(out, p)}" for p in d["predictions"]]
        lines += [f"\n![predictions]({Path(d['predictions'][0]).resolve().relative_to(out.resolve())})" if d["predictions"] else "", ""]
    if "export" in m:
        e = m["export"]
        lines += ["## 4. Export", "",
                  f"- classifier: {_link(out, e['classifier'])} (verified in onnxruntime, max abs error "
                  f"{e['classifier_max_abs_error']:.1e}); INT8: {_link(out, e['classifier_int8'])} "
                  f"(top-1 agreement with FP32 {100 * e['int8_top1_agreement']:.0f}%)",
                  f"- detector: {_link(out, e['detector'])} (verified in onnxruntime)", "",
                  f"NASNet-A mobile at {e['input_size']} px, batch 1, 2 threads:", "",
                  "| backend | median (ms) | vs eager |", "|---|---:|---:|"]
        lines += [f"| {r['backend']} | {r['median_ms']:.1f} | {r['vs_first']:.2f}x |" for r in e["latency"]]
        lines.append("")
    seconds = sum(v.get("seconds", 0) for v in m.values() if isinstance(v, dict))
    lines += [f"Steps took {seconds / 60:.1f} minutes in all.", ""]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise ValueError(f"unknown demo step(s) {', '.join(unknown)}; steps: {', '.join(STEPS)}")
    demo = _Demo(args)
    demo.run(steps)
    summary = {step: {k: v for k, v in demo.metrics[step].items() if not isinstance(v, (list, dict))}
               for step in steps if step in demo.metrics}
    print(json.dumps(summary, indent=2))
    if "report" in steps:
        print(f"report: {demo.out / 'REPORT.md'}")
    return 0
