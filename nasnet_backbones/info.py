"""``nasnet info``: parameters, mult-adds, per-stage shapes and feature maps of a model."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .argtypes import image_size
from .complexity import count_madds, count_params
from .nasnet import NASNet
from .model_args import add_model_arguments, build_model_from_args
from .catalogue import get_model_entry, get_weights, list_models, list_weights, split_model_tag
from .transforms import SIZE_RANGE

__all__ = ["add_parser", "model_info", "run"]


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "info",
        help="parameters, mult-adds, stage shapes and feature maps of a model",
        description="Describe a registered model (--model) or a network built from a genotype file "
        "(--genotype with --cells/--filters).",
    )
    source = add_model_arguments(p, weights=False)
    source.add_argument("--list", action="store_true", help="list registered models (and their weights) and exit")
    p.add_argument("--input-size", type=image_size, help="square input size in pixels, "
                   f"{SIZE_RANGE[0]}..{SIZE_RANGE[1]} (default: the model's)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=run)


def model_info(model: NASNet, input_size: int) -> dict[str, Any]:
    features = [
        {"name": f["name"], "stride": f["reduction"], "channels": f["num_chs"], "module": f["module"]}
        for f in model.feature_info
    ]
    stages = [
        {"module": name, "channels": ch, "stride": stride, "height": size, "width": size}
        for name, ch, stride, size in model.stage_shapes(input_size)
    ]
    sizes = {row["module"]: row["height"] for row in stages}
    for f in features:
        f["size"] = sizes[f["module"].rpartition(".")[2]]  # "cells.cell_3" is stage "cell_3"
    return {
        "genotype": model.genotype.name or model.genotype.hash(),
        "genotype_hash": model.genotype.hash(),
        "input_size": input_size,
        "params": count_params(model),
        "params_with_aux": count_params(model, include_aux=True),
        "mult_adds": count_madds(model, input_size),
        "num_features": model.num_features,
        "stages": stages,
        "features": features,
    }


def _table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.list:
        rows = []
        for name in list_models(include_aliases=False):
            e = get_model_entry(name)
            tags = ", ".join(w.split(".", 1)[1] for w in list_weights(name)) or "-"
            rows.append([name, e.img_size, e.num_classes, tags, e.description])
        print(_table(rows, ["model", "size", "classes", "weights", "description"]))
        return 0
    if args.model:
        args.model = split_model_tag(args.model)[0]  # describes the architecture; weights are listed below
        entry = get_model_entry(args.model)
        size = args.input_size if args.input_size is not None else entry.img_size
        title, paper = f"{entry.name}: {entry.description}", entry.paper
    else:
        size = args.input_size if args.input_size is not None else (32 if args.stem == "cifar" else 224)
        paper = None
    try:
        model = build_model_from_args(args, pretrained_default=False, img_size=size)
    except ValueError as exc:
        if args.input_size is None or "img_size" not in str(exc):
            raise
        raise ValueError(f"--input-size {size} is too small for this model: {exc}") from None
    if not args.model:
        title = f"{model.pretrained_cfg.architecture} ({args.stem or 'imagenet'} stem)"
    info = model_info(model, size)
    weights = [get_weights(*w.split(".", 1)) for w in list_weights(args.model)] if args.model else []
    info["weights"] = [
        {"name": w.name, "url": w.url, "sha256_prefix": w.hash_prefix, "input_size": w.input_size,
         "resize_size": w.resize_size, "interpolation": w.interpolation, "top1": w.published_top1,
         "top5": w.published_top5, "metrics_source": w.metrics_source, "origin": w.origin}
        for w in weights
    ]
    if args.json:
        info["model"] = args.model
        if paper is not None:
            info["paper"] = {"params_m": paper.params_m, "mult_adds_m": paper.madds_m, "top1": paper.top1,
                             "top5": paper.top5, "source": paper.source}
        json.dump(info, sys.stdout, indent=2)
        print()
        return 0
    paper_params = f" (paper: {paper.params_m}M)" if paper else ""
    paper_madds = f" (paper: {paper.madds_m:g}M)" if paper and paper.madds_m else ""
    print(title)
    print(f"genotype: {info['genotype']} [{info['genotype_hash']}]   input: 3x{size}x{size}")
    print(f"parameters: {info['params'] / 1e6:.3f}M{paper_params}, with auxiliary head "
          f"{info['params_with_aux'] / 1e6:.3f}M")
    print(f"mult-adds:  {info['mult_adds'] / 1e6:.1f}M{paper_madds} (convolutions and linear layers, fvcore)")
    print()
    print(_table([[s["module"], s["channels"], s["stride"], f"{s['height']}x{s['width']}"] for s in info["stages"]],
                 ["stage", "channels", "stride", "output"]))
    for w in weights:
        print(f"weights {w.name}: top-1 {w.published_top1:.2f}, top-5 {w.published_top5:.2f} at {w.input_size} "
              f"(resize {w.resize_size}, {w.interpolation}); {w.url}")
    print()
    print("feature maps (features_only=True):")
    print(_table([[f["name"], f["stride"], f["channels"], f"{f['size']}x{f['size']}", f["module"]]
                  for f in info["features"]], ["name", "stride", "channels", "size", "module"]))
    return 0
