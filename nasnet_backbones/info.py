"""``nasnet info``: parameters, mult-adds, per-stage shapes and feature maps of a model."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .complexity import count_madds, count_params
from .genotype import Genotype
from .nasnet import NASNet, build_nasnet
from .registry import create_model, get_model_entry

__all__ = ["add_parser", "model_info", "run"]


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "info",
        help="parameters, mult-adds, stage shapes and feature maps of a model",
        description="Describe a registered model (--model) or a network built from a genotype file "
        "(--genotype with --cells/--filters).",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="registered model name (see `nasnet info --list`)")
    source.add_argument("--genotype", help="genotype JSON file (Genotype.to_json)")
    source.add_argument("--list", action="store_true", help="list registered models and exit")
    p.add_argument("--cells", type=int, default=4, help="with --genotype: normal cells per stack (N)")
    p.add_argument("--filters", type=int, default=44, help="with --genotype: base width F/24")
    p.add_argument("--stem", choices=("imagenet", "cifar"), default="imagenet", help="with --genotype: stem type")
    p.add_argument("--input-size", type=int, help="square input size (default: the model's)")
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
        f["size"] = sizes[f["module"]]
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
        from .registry import list_models

        rows = []
        for name in list_models(include_aliases=False):
            e = get_model_entry(name)
            rows.append([name, e.img_size, e.num_classes, e.description])
        print(_table(rows, ["model", "size", "classes", "description"]))
        return 0
    if args.model:
        entry = get_model_entry(args.model)
        size = args.input_size or entry.img_size
        model = create_model(args.model, img_size=size)
        title, paper = f"{entry.name}: {entry.description}", entry.paper
    else:
        genotype = Genotype.from_json(args.genotype)
        size = args.input_size or (224 if args.stem == "imagenet" else 32)
        model = build_nasnet(genotype, num_cells=3 * args.cells, num_filters=args.filters, stem=args.stem,
                             num_classes=1000 if args.stem == "imagenet" else 10, img_size=size)
        title, paper = f"{genotype.name or args.genotype}: {args.cells} @ {24 * args.filters} ({args.stem} stem)", None
    info = model_info(model, size)
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
    print()
    print("feature maps (features_only=True):")
    print(_table([[f["name"], f["stride"], f["channels"], f"{f['size']}x{f['size']}", f["module"]]
                  for f in info["features"]], ["name", "stride", "channels", "size", "module"]))
    return 0
