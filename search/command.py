"""``nasnet search``: run, resume and compare cell searches.

    nasnet search --strategy ppo --dataset cifar10 --data-dir ~/data --trials 500 --output-dir runs/ppo
    nasnet search --output-dir runs/ppo --resume            # continues with the settings it was started with
    nasnet search compare runs/ppo runs/random -o compare.png
    nasnet search report runs/ppo                    # rewrite top_k.md, rewards.png, cell diagrams
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import torch

from nasnet_backbones.argtypes import (add_renamed, base_width, cells_per_stack, finite_float, nonnegative_float, nonnegative_int,
                                      number, positive_float, positive_int)
from nasnet_backbones.data import default_workers
from nasnet_backbones.ops import NASNET_SEARCH_OPS

from .child import CHILD_PRESETS, ChildSettings, default_preset
from .data import DATASETS
from .driver import LATENCY_TABLE_MODES, run_search
from .executor import EXECUTORS, RAY_CONNECT_TIMEOUT_S
from .latency import DEVICES, LatencySettings
from .report import best_over_time, load_run, plot_runs, plot_runs_over_time, top_k_table, write_report
from .run import SEARCH_FILE, SearchConfig, SearchError, read_search_file
from .space import SearchSpace
from .strategies import STRATEGIES

__all__ = ["add_parser", "run"]

logger = logging.getLogger(__name__)

# (flag, ChildSettings field, type, help)
_CHILD_FLAGS = [
    ("--child-cells", "cells", cells_per_stack, "N: normal cells per stack of each child (paper: 2)"),
    ("--child-filters", "filters", base_width, "base width (num_filters) of each child's first stack"),
    ("--child-epochs", "epochs", positive_int, "training epochs per child (paper: 20)"),
    ("--child-batch-size", "batch_size", positive_int, "child training batch size"),
    ("--child-lr", "lr", positive_float, "child learning rate (cosine decay)"),
    ("--train-size", "train_size", positive_int, "train children on this many images (default: all not held out)"),
    ("--val-size", "val_size", positive_int, "images held out of the training set to score children (paper: 5000)"),
    ("--input-size", "img_size", number(int, "a size in 8..1024 pixels", lambda v: 8 <= v <= 1024), "synthetic dataset: image side (the children's input size)"),
]
# (flag, type, help); which strategy setting a flag sets is declared by the strategies (Strategy.settings_by_flag)
_STRATEGY_FLAGS = [
    ("--controller-lr", positive_float, "ppo, enas: controller learning rate (paper: 0.00035; ENAS: 0.0035)"),
    ("--controller-batch", positive_int, "ppo, enas: rewards per PPO update (paper: 20; enas default 10)"),
    ("--entropy-weight", nonnegative_float, "ppo, enas: entropy bonus weight (paper: 0.00001; ENAS: 0.0001)"),
    ("--population-size", positive_int, "evolution: population P (AmoebaNet: 100)"),
    ("--sample-size", positive_int, "evolution: tournament sample S (AmoebaNet: 25)"),
    ("--enas-epochs", positive_int, "enas: supernet training epochs (default 50; ENAS: 150)"),
    ("--controller-steps", positive_int, "enas: controller proposals per epoch (default 20)"),
    ("--derive-samples", positive_int, "enas: cells drawn from the trained controller and ranked with shared weights "
     "(default 100)"),
]


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "search", help="search NASNet cells on CIFAR-10 (PPO controller, random, regularized evolution, ENAS)",
        description="Search normal and reduction cells in the paper's space. Each candidate is a small CIFAR-stem "
        "network trained on CIFAR-10 minus a held-out split (its accuracy there is the reward), as Ray tasks. "
        "Subcommands: 'compare RUN_DIR...' plots runs together; 'report RUN_DIR' rewrites a run's outputs.")
    add_renamed(p, "--output-dir", old=("--out",), dest="out",
                help="run directory (results.jsonl, state.pt, best_genotype.json, plots)")
    p.add_argument("--resume", action="store_true", help="continue the search in --output-dir with its saved settings")
    p.add_argument("--strategy", choices=sorted(STRATEGIES), help="search strategy (default: ppo)")
    p.add_argument("--dataset", choices=DATASETS, help="cifar10, or synthetic (generated; for tests and demos) "
                   "(default: cifar10)")
    p.add_argument("--data-dir", help="cifar10: the folder that holds (or will get) cifar-10-batches-py")
    p.add_argument("--no-download", action="store_true", help="cifar10: never try to download")
    p.add_argument("--trials", type=positive_int, help="children to evaluate in all (default: 100; on --resume, the run's own "
                   "target, which this raises)")
    p.add_argument("--budget-hours", type=positive_float, help="start no child after the search has run this long "
                   "(wall clock over all sessions); the running ones finish")
    p.add_argument("--workers", type=positive_int, default=torch.cuda.device_count() or default_workers(),
                   help="children evaluated at once")
    p.add_argument("--seed", type=nonnegative_int, help="strategy seed; child k trains with seed + k (default: 0)")
    p.add_argument("--executor", choices=sorted(EXECUTORS), default="ray",
                   help="ray: children as Ray tasks; inprocess: one at a time in this process (debugging)")
    p.add_argument("--ray-address", help="join this Ray cluster ('HOST:PORT' of its head, 'auto', "
                   "'ray://head:10001'); default: start a local one")
    p.add_argument("--ray-connect-timeout", type=positive_float, default=RAY_CONNECT_TIMEOUT_S,
                   help="seconds to wait for --ray-address to answer before giving up (default %(default)s)")
    p.add_argument("--preset", choices=sorted(CHILD_PRESETS), help="child size and schedule: gpu (the paper's), cpu "
                   "(a proxy for a few cores), tiny (synthetic data); default: tiny for synthetic, else gpu when "
                   "CUDA is present, else cpu")
    for flag, dest, typ, text in _CHILD_FLAGS:
        add_renamed(p, flag, old=("--img-size",) if flag == "--input-size" else (), dest=f"child_{dest}", type=typ,
                    help=text)
    p.add_argument("--blocks", type=number(int, "an integer in 1..16", lambda v: 1 <= v <= 16),
                   help="B: blocks per cell (default: 5)")
    p.add_argument("--ops", help="comma-separated op names (default: the paper's 13: " + ",".join(NASNET_SEARCH_OPS) + ")")
    p.add_argument("--combine", help="comma-separated combine ops: add, concat (default: add)")
    for flag, typ, text in _STRATEGY_FLAGS:
        p.add_argument(flag, dest=f"strategy_{flag[2:].replace('-', '_')}", type=typ, help=text)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="where a strategy's preparation phase trains (enas: its supernet; the search process's device)")
    lat = p.add_argument_group("latency-aware reward (accuracy x (latency / target) ^ weight, MnasNet's form)")
    lat.add_argument("--latency-target", type=positive_float, help="target latency in ms; turns the latency-aware reward on")
    lat.add_argument("--latency-device", choices=DEVICES, default="onnxruntime-cpu", help="where latency is measured")
    lat.add_argument("--latency-weight", type=finite_float, help="the exponent w (default -0.07)")
    lat.add_argument("--latency-cells", type=positive_int, help="N of the deployed network (default 4, NASNet-A mobile)")
    lat.add_argument("--latency-filters", type=positive_int, help="base width of the deployed network (default 44)")
    lat.add_argument("--latency-size", type=positive_int, help="deployed input size (default 224)")
    lat.add_argument("--latency-stem", choices=("imagenet", "cifar"), help="deployed stem (default imagenet)")
    lat.add_argument("--latency-threads", type=positive_int, help="onnxruntime intra-op threads (default 1)")
    lat.add_argument("--latency-table", choices=LATENCY_TABLE_MODES, default="auto",
                     help="time each op once and predict latency from the table when it is within 10%% of measured "
                     "networks: auto (for weight sharing, enas, which scores cells untrained; multi-trial measures "
                     "each child), build (always), off")
    p.add_argument("--top-k", type=positive_int, default=10, help="rows of the top-k table")
    p.set_defaults(func=run)

    sub = p.add_subparsers(dest="search_command", metavar="{compare,report}")
    compare = sub.add_parser("compare", help="plot several runs' reward curves on one figure")
    compare.add_argument("runs", nargs="+", help="search run directories")
    compare.add_argument("-o", "--output", default="search_compare.png", help="figure to write (png, svg, pdf)")
    compare.add_argument("--by", choices=("models", "time"), default="models",
                         help="x axis: models evaluated (the paper's Fig. 6), or wall-clock time")
    compare.add_argument("--budget-hours", type=positive_float, help="--by time: cut every run at this many hours")
    compare.set_defaults(func=run_compare)
    report = sub.add_parser("report", help="rewrite a run's top-k table, reward plot and cell diagrams")
    report.add_argument("run_dir")
    report.add_argument("--top-k", type=positive_int, default=10)
    report.set_defaults(func=run_report)


def _split_names(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(name.strip() for name in text.split(",") if name.strip())


def _config(args: argparse.Namespace, saved: dict[str, Any] | None) -> SearchConfig:
    """The search's settings: the flags given, over the saved run's settings on --resume, over defaults."""
    saved_space = saved["space"] if saved else {}
    space = SearchSpace(
        num_blocks=args.blocks if args.blocks is not None else saved_space.get("num_blocks", 5),
        ops=_split_names(args.ops) or tuple(saved_space.get("ops", NASNET_SEARCH_OPS)),
        combine_ops=_split_names(args.combine) or tuple(saved_space.get("combine_ops", ("add",))))
    strategy = args.strategy or (saved["strategy"] if saved else "ppo")
    options = dict(saved["strategy_settings"]) if saved and saved["strategy"] == strategy else {}
    for flag, _, _ in _STRATEGY_FLAGS:
        value = getattr(args, f"strategy_{flag[2:].replace('-', '_')}")
        if value is not None:
            settings = STRATEGIES[strategy].settings_by_flag if strategy in STRATEGIES else {}
            if flag not in settings:
                owners = [name for name, cls in STRATEGIES.items() if flag in cls.settings_by_flag]
                raise ValueError(f"{flag} is a setting of the {' and '.join(owners)} strategy, not of {strategy}")
            options[settings[flag]] = value
    dataset = args.dataset or (saved["child"]["dataset"] if saved else "cifar10")
    if saved and args.preset is None:
        child = ChildSettings.from_dict(saved["child"])
    else:
        child = CHILD_PRESETS[args.preset or default_preset(dataset)].with_overrides(dataset=dataset)
    child = child.with_overrides(dataset=args.dataset, data_dir=args.data_dir, **{dest: getattr(args, f"child_{dest}") for _, dest, _, _ in _CHILD_FLAGS})
    if child.dataset == "cifar10" and child.data_dir is None:
        raise ValueError("--dataset cifar10 needs --data-dir (the folder that holds, or will get, cifar-10-batches-py); "
                         "--dataset synthetic needs no data")
    seed = args.seed if args.seed is not None else (saved["seed"] if saved else 0)
    latency = dict(saved["latency"]) if saved and saved.get("latency") else {}
    for flag, field_name in (("latency_target", "target_ms"), ("latency_weight", "weight"), ("latency_cells", "cells"),
                             ("latency_filters", "filters"), ("latency_size", "img_size"), ("latency_stem", "stem"),
                             ("latency_threads", "threads")):
        if getattr(args, flag) is not None:
            latency[field_name] = getattr(args, flag)
    if latency and "target_ms" not in latency:
        raise ValueError("the latency flags need --latency-target MS (the latency the reward is measured against)")
    if latency:
        latency["device"] = args.latency_device
    return SearchConfig(strategy, space, child, options, seed, LatencySettings(**latency) if latency else None)


def run(args: argparse.Namespace) -> int:
    if not args.out:
        raise ValueError("nasnet search needs --output-dir DIR (where results, state and plots go)")
    out = Path(args.out).expanduser()
    saved = None
    if args.resume:
        if not (out / SEARCH_FILE).is_file():
            raise SearchError(f"nothing to resume: {out / SEARCH_FILE} does not exist")
        saved = read_search_file(out / SEARCH_FILE)
    config = _config(args, saved)
    written = run_search(out=out, config=config, resume=args.resume, trials=args.trials, workers=args.workers,
                         executor=args.executor, ray_address=args.ray_address,
                         ray_connect_timeout=args.ray_connect_timeout, device=args.device,
                         latency_table=args.latency_table, budget_hours=args.budget_hours, top_k=args.top_k,
                         download=not args.no_download)
    print((out / "top_k.md").read_text())
    print(f"best genotype: {out / 'best_genotype.json'}")
    for name, path in written.items():
        logger.info("wrote %s: %s", name, path)
    return 0


def run_compare(args: argparse.Namespace) -> int:
    runs = [load_run(d) for d in args.runs]
    empty = [label for label, rows in runs if not rows]
    if empty:
        raise ValueError(f"no finished children in {', '.join(empty)}")
    if args.by == "time":
        path = plot_runs_over_time(runs, args.output, args.budget_hours, title=f"{len(runs)} searches")
    else:
        path = plot_runs(runs, args.output, title=f"{len(runs)} searches")
    for label, rows in runs:
        hours, best = best_over_time(rows) if args.by == "time" else (None, None)
        within = "" if hours is None else f" in {hours[-1]:.2f} h"
        print(f"{label}: {len(rows)} models, best {max(r['reward'] for r in rows):.4f}{within}")
    print(path)
    return 0


def run_report(args: argparse.Namespace) -> int:
    write_report(args.run_dir, k=args.top_k)
    print(top_k_table(load_run(args.run_dir)[1], args.top_k))
    return 0
