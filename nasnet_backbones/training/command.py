"""``nasnet train cifar10|imagenet|folder``: the paper's recipes as defaults, every one overridable.

Outputs, in ``--output-dir``: ``last.pth`` (resume state, every epoch), ``best.safetensors`` and
``model.safetensors`` (inference weights for ``nasnet predict/eval --weights``), ``labels.txt``,
``tensorboard/`` scalars and ``results.json``.

Every number is checked by the parser (positive epochs, batches, sizes and steps, finite rates,
probabilities in range) and conflicting flags are refused, all before anything is written. The
run holds ``run_lock(OUTPUT_DIR)`` from its first write to its last, so a second ``nasnet train``
on the same directory is refused with the holder named. ``--seed`` seeds the model's
initialisation as well as the data order and every random draw of training.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.utils.data import Dataset

from ..argtypes import (add_renamed, image_size, nonnegative_float, nonnegative_int, number, positive_float, positive_int,
                        probability)
from ..data import CIFAR10_CLASSES, ImageNetFolder, default_workers, load_cifar10, load_image_folder
from ..imagenet import imagenet_classes
from ..model_args import add_model_arguments, build_model_from_args, refuse_conflicting_weights
from ..transforms import (ClassificationEval, cifar10_eval_transform, cifar10_train_transform,
                          imagenet_train_transform, resize_for_crop)
from ..catalogue import get_model_entry, split_model_tag
from ..runlock import run_lock
from .distributed import init_distributed
from .recipes import RECIPES, TrainRecipe, recipe_for
from .trainer import RESUME_FILE, Trainer

__all__ = ["add_parser", "run", "build_datasets", "build_model", "eval_preprocessing", "drop_rate"]

logger = logging.getLogger(__name__)

drop_rate = number(float, "a number in [0, 1)", lambda v: 0.0 <= v < 1.0)
"""A drop-path rate: 1 would drop every path (and divide by zero)."""


def _choice(*names: str):
    def parse(text: str) -> str:
        if text not in names:
            raise argparse.ArgumentTypeError(f"must be one of {', '.join(names)}, got {text!r}")
        return text

    return parse


_OLD_SPELLINGS = {"--input-size": ("--img-size",)}
# (flag, recipe field, type, help)
_OVERRIDES = [
    ("--epochs", "epochs", positive_int, "epochs"),
    ("--batch-size", "batch_size", positive_int, "images per process and step"),
    ("--lr", "lr", positive_float, "learning rate (default: the recipe's; ImageNet's scales with the global batch)"),
    ("--weight-decay", "weight_decay", nonnegative_float, "L2 weight decay on conv/linear weights"),
    ("--optimizer", "optimizer", _choice("sgd", "rmsprop"), "sgd or rmsprop"),
    ("--schedule", "schedule", _choice("cosine", "exponential"), "cosine or exponential"),
    ("--warmup-epochs", "warmup_epochs", nonnegative_float, "linear warm-up epochs"),
    ("--label-smoothing", "label_smoothing", probability, "label smoothing"),
    ("--aux-weight", "aux_weight", nonnegative_float, "auxiliary-head loss weight (0 disables the head)"),
    ("--grad-clip", "grad_clip", nonnegative_float, "clip gradients at this global norm (0 disables)"),
    ("--drop-path-prob", "drop_path_prob", drop_rate, "final ScheduledDropPath rate (1 - keep prob), in [0, 1)"),
    ("--cutout", "cutout", nonnegative_int, "cifar10: cutout square side (0 disables)"),
    ("--ema-decay", "ema_decay", probability, "keep a moving average of the weights for evaluation (0 disables)"),
    ("--input-size", "img_size", image_size, "training crop size (default: the model's input size)"),
]


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train", help="train or fine-tune a classifier (paper recipes)",
        description="Train a NASNet classifier on CIFAR-10 or ImageNet with the paper's recipe, or fine-tune "
        "on any ImageFolder (DATA/train/<class>/..., optional DATA/val/<class>/...). Multi-GPU: launch "
        "with torchrun.",
    )
    p.add_argument("dataset", choices=sorted(RECIPES))
    add_model_arguments(p)
    p.add_argument("--scratch", action="store_true", help="folder: start from random weights, not the pretrained ones")
    p.add_argument("--data-dir", required=True, help="cifar10: holds cifar-10-batches-py; imagenet/folder: holds "
                   "train/ and val/")
    p.add_argument("--output-dir", required=True, help="where checkpoints, TensorBoard logs and results go")
    p.add_argument("--resume", action="store_true", help=f"continue from OUTPUT_DIR/{RESUME_FILE}")
    for flag, dest, typ, text in _OVERRIDES:
        add_renamed(p, flag, old=_OLD_SPELLINGS.get(flag, ()), dest=dest, type=typ, help=text)
    p.add_argument("--max-steps", type=positive_int, help="stop after this many steps in total (resumable)")
    p.add_argument("--workers", type=nonnegative_int, default=default_workers(), help="DataLoader workers per process")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=nonnegative_int, default=0,
                   help="seeds the model's initialisation, the data order, augmentation and dropout (default 0)")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="leave unreadable images out (counted in the log and results.json) instead of stopping at "
                   "the first, which is named, with the run saved for --resume")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast on CUDA")
    p.add_argument("--sync-bn", action="store_true", help="synchronised BatchNorm across processes")
    p.add_argument("--no-download", action="store_true", help="cifar10: never try to download")
    p.set_defaults(func=run)


def eval_preprocessing(recipe: TrainRecipe, img_size: int) -> ClassificationEval:
    """How the trained model's inputs are prepared for evaluation (stored with its weights)."""
    if recipe.dataset == "cifar10":
        return cifar10_eval_transform()
    return ClassificationEval(img_size, resize_for_crop(img_size, 0.875))


def build_datasets(recipe: TrainRecipe, data_dir: str | Path, img_size: int,
                   download: bool = True) -> tuple[Dataset, Dataset | None, list[str]]:
    """(train set, val set or None, class names) for a recipe's dataset."""
    data_dir = Path(data_dir).expanduser()
    eval_transform = eval_preprocessing(recipe, img_size)
    if recipe.dataset == "cifar10":
        train = load_cifar10(data_dir, True, cifar10_train_transform(recipe.cutout), download)
        val = load_cifar10(data_dir, False, eval_transform, download=False)
        return train, val, list(CIFAR10_CLASSES)
    if recipe.dataset == "imagenet":
        train = ImageNetFolder(data_dir / "train", imagenet_train_transform(img_size))
        val = ImageNetFolder(data_dir / "val", eval_transform) if (data_dir / "val").is_dir() else None
        return train, val, [c.wnid for c in imagenet_classes()]
    train = load_image_folder(data_dir / "train", imagenet_train_transform(img_size, min_scale=0.08, color_jitter=False))
    val = None
    if (data_dir / "val").is_dir():
        val = load_image_folder(data_dir / "val", eval_transform)
        if val.classes != train.classes:
            raise ValueError(f"{data_dir}/val has classes {val.classes}, train has {train.classes}; they must match")
    return train, val, list(train.classes)


@contextmanager
def _writer_lock(output: Path, is_main: bool) -> Iterator[None]:
    """The main process holds ``run_lock(output)`` (one writer per output directory); the other
    processes of a torchrun job write nothing there and take no lock."""
    if not is_main:
        yield
        return
    with run_lock(output):
        yield


def _recipe_from_args(args: argparse.Namespace) -> TrainRecipe:
    recipe = recipe_for(args.dataset, args.model and get_model_entry(split_model_tag(args.model)[0]).name)
    recipe = recipe.with_overrides(**{dest: getattr(args, dest) for _, dest, _, _ in _OVERRIDES})
    # 0 switches clipping and the moving average off.
    return replace(recipe, grad_clip=recipe.grad_clip or None, ema_decay=recipe.ema_decay or None)


def _default_img_size(args: argparse.Namespace) -> int:
    if args.dataset == "cifar10":
        return 32
    if args.model:
        return get_model_entry(split_model_tag(args.model)[0]).img_size
    return 32 if args.stem == "cifar" else 224


def _refuse_conflicts(args: argparse.Namespace) -> None:
    """Flags that contradict each other: one error before anything is read or written."""
    refuse_conflicting_weights(args)  # --scratch with --weights
    if args.scratch and args.dataset != "folder":
        logger.info("--scratch: %s training always starts from random weights", args.dataset)


def _refuse_overwrite(output: Path, resume: bool) -> None:
    if not resume and (output / RESUME_FILE).exists():
        raise ValueError(f"{output} already holds a run ({RESUME_FILE}); pass --resume to continue it, "
                         "or choose another --output-dir")
    if resume and not (output / RESUME_FILE).is_file():
        raise FileNotFoundError(f"--resume: nothing to resume, {output / RESUME_FILE} does not exist "
                                "(drop --resume to start a new run there)")


def build_model(args: argparse.Namespace, recipe: TrainRecipe, *, num_classes: int, img_size: int) -> Any:
    """The model to train, initialised from ``--seed``: torch's RNG is seeded just before it is
    built, so two runs with one seed start from the same weights (a fine-tuned run's new
    classifier included), and different seeds from different ones."""
    fine_tune = args.dataset == "folder" and not args.scratch
    model_kwargs: dict[str, Any] = {"aux_head": recipe.aux_weight > 0, "img_size": img_size}
    if recipe.drop_path_prob is not None:
        model_kwargs["drop_path_prob"] = recipe.drop_path_prob
    torch.manual_seed(args.seed)
    return build_model_from_args(args, num_classes=num_classes, pretrained_default=fine_tune,
                                 default_stem="cifar" if args.dataset == "cifar10" else "imagenet", **model_kwargs)


def _refuse_output_inside_data(output: Path, data_dir: Path) -> None:
    """The run's files (tensorboard/, checkpoints) inside the data folder would become a class
    folder of the next run that reads it."""
    out, data = output.resolve(), data_dir.resolve()
    if out == data or data in out.parents:
        raise ValueError(f"--output-dir {output} is inside --data-dir {data_dir}: the run's files would be read as "
                         "data by the next run; choose a directory outside the data")


def run(args: argparse.Namespace) -> int:
    _refuse_conflicts(args)
    output = Path(args.output_dir).expanduser()
    _refuse_output_inside_data(output, Path(args.data_dir).expanduser())
    _refuse_overwrite(output, args.resume)
    recipe = _recipe_from_args(args)
    recipe.validate()
    img_size = recipe.img_size or _default_img_size(args)
    # The data first: a missing dataset fails before a large model is built.
    train_set, val_set, classes = build_datasets(recipe, args.data_dir, img_size, download=not args.no_download)
    ctx = init_distributed(args.device)
    model = build_model(args, recipe, num_classes=len(classes), img_size=img_size)
    run_info = {"model": model.pretrained_cfg.architecture, "dataset": args.dataset, "data_dir": str(args.data_dir),
                "img_size": img_size, "num_classes": len(classes), "world_size": ctx.world_size,
                "init_weights": args.weights or (model.pretrained_cfg.weights.name if model.pretrained_cfg.weights else None)}
    # Stored in the exported .safetensors, so predict/eval prepare inputs as validation did.
    metadata = {"preprocessing": json.dumps(eval_preprocessing(recipe, img_size).to_dict()),
                "labels": json.dumps(classes)}
    trainer = Trainer(model, recipe, train_set, val_set, output, ctx, workers=args.workers, seed=args.seed,
                      amp=args.amp, sync_bn=args.sync_bn, run_info=run_info, export_metadata=metadata,
                      skip_bad_images=args.skip_bad_images)
    with _writer_lock(output, ctx.is_main):
        _refuse_overwrite(output, args.resume)  # again, now that no other run can start in between
        if args.resume:
            trainer.resume()  # a checkpoint with other settings is refused before anything is written
        if ctx.is_main:
            (output / "labels.txt").write_text("\n".join(classes) + "\n")
        summary = trainer.fit(max_steps=args.max_steps)
    if ctx.is_main:
        json.dump({k: v for k, v in summary.items() if k != "history"}, sys.stdout, indent=2)
        print()
    return 0
