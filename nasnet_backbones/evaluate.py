"""``nasnet eval``: top-1 / top-5 accuracy over a labelled dataset, with throughput.

``eval imagenet`` reads the standard validation layout (one folder per WordNet id) with the
official class indices, so a subset of the 1000 folders is evaluated correctly; ``eval cifar10``
reads CIFAR-10's test batch. Besides accuracy it reports images/s and the share of wall time the
model spent waiting for the DataLoader, which should stay small (see ``benchmarks/eval_throughput.py``).

An unreadable image stops the evaluation with one error naming the file; with
``--skip-bad-images`` it is left out and the count is reported (``skipped_images``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from .argtypes import add_renamed, image_size, nonnegative_int, positive_int
from .data import BadImages, GuardedDataset, ImageNetFolder, collate_readable, default_workers, load_cifar10, readable_batches
from .model_args import add_inference_arguments, add_model_arguments, build_model_from_args, eval_transform_for, inference_model
from .transforms import cifar10_eval_transform

__all__ = ["EvalResult", "TopKCounts", "evaluate", "add_parser", "run"]

logger = logging.getLogger(__name__)


@dataclass
class TopKCounts:
    """Correct top-1 / top-5 counts; summed across shards (or ranks) before dividing."""

    correct1: int = 0
    correct5: int = 0
    total: int = 0

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hits = top.eq(target.unsqueeze(1))
        self.correct1 += int(hits[:, 0].sum())
        self.correct5 += int(hits.any(dim=1).sum())
        self.total += int(target.numel())

    def as_tensor(self) -> torch.Tensor:
        return torch.tensor([self.correct1, self.correct5, self.total], dtype=torch.float64)

    @classmethod
    def from_tensor(cls, t: torch.Tensor) -> "TopKCounts":
        return cls(*(int(v) for v in t.tolist()))

    @property
    def top1(self) -> float:
        return 100.0 * self.correct1 / max(1, self.total)

    @property
    def top5(self) -> float:
        return 100.0 * self.correct5 / max(1, self.total)


@dataclass
class EvalResult:
    top1: float
    top5: float
    images: int
    seconds: float
    images_per_s: float
    data_wait_fraction: float  # share of wall time spent waiting for the next batch


@torch.no_grad()
def evaluate(
    model: nn.Module, batches: Iterable, device: str | torch.device = "cpu", progress: bool = True,
    total: int | None = None, forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[TopKCounts, EvalResult]:
    """Run ``model`` in eval mode over ``(images, targets)`` batches; accuracy and timing.

    ``forward`` replaces ``model(images)`` when given (an exported model, for instance).
    """
    model.eval().to(device)
    forward = forward or model
    counts = TopKCounts()
    waited = 0.0
    start = time.perf_counter()
    iterator = iter(batches)
    with tqdm(total=total, unit="img", disable=not progress, desc="eval", dynamic_ncols=True) as bar:
        while True:
            t0 = time.perf_counter()
            try:
                images, target = next(iterator)
            except StopIteration:
                break
            waited += time.perf_counter() - t0
            logits = forward(images.to(device, non_blocking=True))
            counts.update(logits.float().cpu(), target)
            bar.update(len(target))
            bar.set_postfix(top1=f"{counts.top1:.2f}", top5=f"{counts.top5:.2f}")
    seconds = time.perf_counter() - start
    result = EvalResult(counts.top1, counts.top5, counts.total, seconds, counts.total / max(seconds, 1e-9),
                        waited / max(seconds, 1e-9))
    return counts, result


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("eval", help="top-1/top-5 accuracy on ImageNet val or CIFAR-10 test",
                              description="Top-1/top-5 accuracy, images/s and data-wait share over ImageNet's "
                              "val layout (any subset of the wnid folders) or CIFAR-10's test batch.")
    p.add_argument("dataset", choices=("imagenet", "cifar10"))
    add_model_arguments(p)
    p.add_argument("--data", "--data-dir", dest="data", required=True,
                   help="imagenet: the val folder (one subfolder per wnid); cifar10: the folder holding cifar-10-batches-py")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--workers", type=nonnegative_int, default=default_workers(),
                   help="DataLoader workers (default: one per core, max 8)")
    add_renamed(p, "--input-size", old=("--img-size",), dest="img_size", type=image_size,
                help="input size (default: the weights')")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="leave unreadable images out and report how many, instead of stopping at the first")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-download", action="store_true", help="cifar10: never try to download")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_inference_arguments(p)
    p.set_defaults(func=run)


def _dataset(args: argparse.Namespace, transform: nn.Module | None) -> Any:
    if args.dataset == "imagenet":
        return ImageNetFolder(args.data, transform=transform)
    return load_cifar10(args.data, train=False, transform=cifar10_eval_transform(), download=not args.no_download)


def run(args: argparse.Namespace) -> int:
    num_classes = 1000 if args.dataset == "imagenet" else 10
    dataset = _dataset(args, None)  # a missing dataset fails before the model is built
    model = build_model_from_args(args, default_stem="imagenet" if args.dataset == "imagenet" else "cifar")
    if model.num_classes != num_classes:
        raise ValueError(f"{model.pretrained_cfg.architecture} has {model.num_classes} classes; {args.dataset} needs {num_classes}")
    if args.dataset == "imagenet":
        dataset.transform = eval_transform_for(model, args.img_size, args.weights)  # the weights' own preprocessing
        logger.info("preprocessing: %s", dataset.transform)
    loader = DataLoader(GuardedDataset(dataset), batch_size=args.batch_size, shuffle=False, num_workers=args.workers,
                        collate_fn=collate_readable, pin_memory=str(args.device).startswith("cuda"),
                        persistent_workers=False)
    bad_images = BadImages(args.skip_bad_images,
                           hint="; remove or replace the file, or pass --skip-bad-images to leave unreadable images out")
    _, result = evaluate(inference_model(model, args), readable_batches(loader, bad_images), args.device,
                         total=len(dataset))
    bad_images.log_summary("evaluation")
    summary = {"model": model.pretrained_cfg.architecture, "dataset": args.dataset, "data": str(args.data),
               "weights": args.weights or (model.pretrained_cfg.weights.name if model.pretrained_cfg.weights else None),
               **asdict(result), **bad_images.summary()}
    if args.dataset == "imagenet":
        summary["classes_present"] = len(dataset.classes)
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        print()
    else:
        subset = f" ({summary['classes_present']} of 1000 classes)" if summary.get("classes_present", 1000) != 1000 else ""
        print(f"{summary['model']} on {args.dataset} {args.data}{subset}: top-1 {result.top1:.2f}%  "
              f"top-5 {result.top5:.2f}%  ({result.images} images, {result.images_per_s:.1f} images/s, "
              f"{100 * result.data_wait_fraction:.1f}% of the time waiting for data)"
              + (f"; skipped {bad_images.skipped} unreadable image(s)" if bad_images.skipped else ""))
    return 0
