"""``nasnet detect train | predict | make-synthetic``: detectron2's usual command line for NASNet detectors."""

from __future__ import annotations

import argparse
from typing import Any

from nasnet_backbones.argtypes import add_renamed, nonnegative_int, number, positive_int, probability

__all__ = ["add_parser"]

_ALLOW_PICKLE_HELP = ("load pickle-based weights (detectron2's model-zoo .pkl, or a .pth that torch.load(weights_only="
                      "True) refuses). RISK: unpickling runs any code the file contains; only for files you trust. "
                      "Same as MODEL.NASNET.ALLOW_PICKLE_WEIGHTS True")


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("detect", help="detectron2 detectors with NASNet backbones (train, predict, data)",
                              description="Faster R-CNN, Mask R-CNN, Panoptic FPN and RetinaNet with NASNet backbones on detectron2.")
    sub = p.add_subparsers(dest="detect_command", metavar="SUBCOMMAND")
    sub.required = True

    t = sub.add_parser(
        "train", help="train or evaluate (detectron2's trainer and launcher)",
        description="Train (or --eval-only) a detector from a config: a shipped name "
        "(see `nasnet detect configs`) or a YAML file, then KEY VALUE overrides, as detectron2's train_net.py.",
    )
    t.add_argument("--config-file", required=True, metavar="FILE", help="config file or shipped config name")
    t.add_argument("--resume", action="store_true", help="resume from OUTPUT_DIR's last checkpoint")
    t.add_argument("--eval-only", action="store_true", help="evaluate MODEL.WEIGHTS on DATASETS.TEST")
    t.add_argument("--num-gpus", type=positive_int, default=1, help="processes (GPUs) per machine")
    t.add_argument("--num-machines", type=positive_int, default=1)
    t.add_argument("--machine-rank", type=nonnegative_int, default=0, help="this machine's rank (0 .. --num-machines - 1)")
    t.add_argument("--dist-url", default="auto", help="tcp://HOST:PORT of machine 0 (multi-machine)")
    t.add_argument("--dataset-json", help="a COCO-format training json (instead of DATASETS.TRAIN)")
    t.add_argument("--image-root", help="folder of the --dataset-json images")
    t.add_argument("--val-json", help="COCO-format json to evaluate on (default: --dataset-json)")
    t.add_argument("--val-image-root", help="folder of the --val-json images (default: --image-root)")
    t.add_argument("--allow-pickle", action="store_true", help=_ALLOW_PICKLE_HELP)
    t.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                   help="config overrides, e.g. SOLVER.MAX_ITER 1000 MODEL.DEVICE cpu")
    t.set_defaults(func=_train)

    pr = sub.add_parser("predict", help="draw detections on images and write them as JSON")
    pr.add_argument("images", nargs="+", metavar="IMAGE")
    pr.add_argument("--config-file", required=True, metavar="FILE", help="config file or shipped config name")
    pr.add_argument("--weights", help="detector checkpoint (default: the config's MODEL.WEIGHTS)")
    add_renamed(pr, "--output-dir", old=("-o", "--output"), dest="output", required=True, metavar="DIR",
                help="where PNGs and detections.json go")
    pr.add_argument("--score-threshold", type=probability, default=0.5, help="drop detections scoring lower (0-1)")
    pr.add_argument("--allow-pickle", action="store_true", help=_ALLOW_PICKLE_HELP)
    pr.add_argument("--dataset-json", help="COCO json whose categories name the classes")
    pr.add_argument("--opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                    help="config overrides, last on the line (as detectron2's demo.py)")
    pr.set_defaults(func=_predict)

    s = sub.add_parser("make-synthetic", help="write a COCO-format dataset of drawn shapes: boxes, masks, panoptic (tests, demos)")
    add_renamed(s, "--output-dir", old=("--out",), dest="out", required=True, metavar="DIR")
    s.add_argument("--num-images", type=positive_int, default=200, help="images in both splits (at least 2)")
    s.add_argument("--size", type=number(int, "a size in 32..4096 pixels", lambda v: 32 <= v <= 4096), default=128,
                   help="image side in pixels (32..4096)")
    s.add_argument("--seed", type=nonnegative_int, default=0)
    s.set_defaults(func=_synthetic)

    c = sub.add_parser("configs", help="list the shipped configs")
    c.set_defaults(func=_configs)


def _check_train_flags(args: argparse.Namespace) -> None:
    """Flags that make no sense together or alone: refused before a config is read."""
    if args.machine_rank >= args.num_machines:
        raise ValueError(f"--machine-rank {args.machine_rank} must be below --num-machines {args.num_machines}")
    if not args.dataset_json:
        given = [f for f in ("--image-root", "--val-json", "--val-image-root")
                 if getattr(args, f.lstrip("-").replace("-", "_"))]
        if given:
            raise ValueError(f"{', '.join(given)} without --dataset-json would be ignored: give --dataset-json too, "
                             "or set the datasets in the config")
    if args.val_image_root and not args.val_json:
        raise ValueError("--val-image-root without --val-json: it is the folder of the --val-json images; give "
                         "--val-json too (the training json is evaluated with --image-root)")


def _train(args: argparse.Namespace) -> int:
    from .engine import launch_main

    _check_train_flags(args)
    launch_main(args)  # evaluation results: OUTPUT_DIR/results.json, and detectron2's log
    return 0


def _predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    from detectron2.data import DatasetCatalog

    from .checkpoint import check_weights
    from .config import check_config_numbers
    from .datasets import register_coco_json, set_num_classes_from_json
    from .engine import merge_overrides
    from .model_zoo import get_config
    from .predict import predict_files

    cfg = get_config(args.config_file)
    if args.dataset_json:
        register_coco_json("nasnet_predict_classes", args.dataset_json, Path(args.dataset_json).parent)
        DatasetCatalog.get("nasnet_predict_classes")  # loads the json, which sets thing_classes
        cfg.DATASETS.TEST = ("nasnet_predict_classes",)
        set_num_classes_from_json(cfg, args.dataset_json)
    merge_overrides(cfg, args.opts)
    if args.allow_pickle:
        cfg.MODEL.NASNET.ALLOW_PICKLE_WEIGHTS = True
    check_config_numbers(cfg, training=False)
    check_weights(args.weights or cfg.MODEL.WEIGHTS, allow_pickle=cfg.MODEL.NASNET.ALLOW_PICKLE_WEIGHTS,
                  flag="--weights" if args.weights else "MODEL.WEIGHTS")
    results = predict_files(cfg, args.weights, args.images, args.output, args.score_threshold)
    for r in results:
        print(f"{r['image']}: {len(r['detections'])} detections -> {r['drawing']}")
    return 0


def _synthetic(args: argparse.Namespace) -> int:
    from .synthetic import make_synthetic

    files = make_synthetic(args.out, args.num_images, args.size, seed=args.seed)
    for split, path in files.items():
        print(f"{split}: {path}")
    return 0


def _configs(args: argparse.Namespace) -> int:
    from .model_zoo import get_config_file, list_configs

    for name in list_configs():
        print(f"{name}  {get_config_file(name)}")
    return 0
