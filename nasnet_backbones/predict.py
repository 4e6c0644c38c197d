"""``nasnet predict``: top-k labels with probabilities for image files.

ImageNet models label with WordNet ids and names (:mod:`.imagenet`); models trained by
``nasnet train`` with the class names stored in their ``.safetensors`` (or the ``labels.txt``
beside them), or ``--labels``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image
from torch import nn

from .argtypes import positive_int
from .imagenet import imagenet_classes
from .images import open_rgb
from .model_args import (add_inference_arguments, add_model_arguments, build_model_from_args, eval_transform_for,
                         inference_model, stored_labels)

__all__ = ["Prediction", "predict_images", "read_labels", "open_image", "device", "add_parser", "run"]


@dataclass(frozen=True)
class Prediction:
    index: int
    probability: float
    label: str
    wnid: str | None = None


def read_labels(path: str | Path) -> list[str]:
    """One class name per line, in class-index order (the ``labels.txt`` of ``nasnet train``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labels file {path} does not exist (one class name per line, in index order)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"labels file {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                         "it should hold one class name per line") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def open_image(path: str | Path) -> Image.Image:
    """``path`` as 8-bit RGB by :func:`.images.open_rgb`'s rules (a ``ValueError`` naming the file
    when it cannot be read or converted faithfully)."""
    return open_rgb(path)


@torch.no_grad()
def predict_images(
    model: nn.Module, images: Sequence[Image.Image], transform: nn.Module, topk: int = 5,
    labels: Sequence[str] | None = None, device: str | torch.device = "cpu",
) -> list[list[Prediction]]:
    """Softmax top-k for each image; ``labels`` default to ImageNet's for a 1000-way model."""
    batch = torch.stack([transform(img) for img in images]).to(device)
    probs = model.eval().to(device)(batch).softmax(dim=1)
    classes = imagenet_classes() if probs.shape[1] == 1000 and labels is None else None
    values, indices = probs.topk(min(topk, probs.shape[1]), dim=1)
    out = []
    for p_row, i_row in zip(values.tolist(), indices.tolist()):
        row = []
        for p, i in zip(p_row, i_row):
            if classes is not None:
                row.append(Prediction(i, p, classes[i].name, classes[i].wnid))
            else:
                row.append(Prediction(i, p, labels[i] if labels and i < len(labels) else f"class {i}"))
        out.append(row)
    return out


def device(text: str) -> torch.device:
    """argparse type: a torch device this machine has (a typo, or ``cuda`` on a machine without
    a GPU, is refused by the parser instead of failing after the model is built)."""
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be a device such as cpu, cuda, cuda:0 or mps, got {text!r}") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        found = torch.cuda.device_count() if torch.cuda.is_available() else 0
        raise argparse.ArgumentTypeError(f"{text!r} is not available: this machine has {found} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text!r} is not available on this machine")
    return dev


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "predict", help="top-k labels for images",
        description="Top-k labels with probabilities for image files (ImageNet names for 1000-class models).",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    add_model_arguments(p)
    p.add_argument("--topk", type=positive_int, default=5, help="labels per image (default 5)")
    p.add_argument("--labels", help="class names, one per line (default: ImageNet's, or labels.txt next to --weights)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="images per forward pass (default 16)")
    p.add_argument("--device", type=device, default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu, cuda, cuda:N, mps (default: cuda when available)")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_inference_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    images = [open_image(path) for path in args.images]  # fail on a bad path before building the model
    model = build_model_from_args(args)
    labels, source = None, None
    if args.labels:
        labels, source = read_labels(args.labels), f"--labels {args.labels}"
    elif (stored := stored_labels(args.weights, model.num_classes)) is not None:
        labels = stored
    elif args.weights and Path(args.weights).is_file() and (Path(args.weights).parent / "labels.txt").is_file():
        source = Path(args.weights).parent / "labels.txt"
        labels = read_labels(source)
    if labels is not None and len(labels) != model.num_classes:
        raise ValueError(f"{source}: {len(labels)} labels for a model with {model.num_classes} classes "
                         "(one class name per line, in index order)")
    transform = eval_transform_for(model, weights_file=args.weights)
    model = inference_model(model, args)
    results = []
    for start in range(0, len(images), args.batch_size):
        chunk = images[start : start + args.batch_size]
        results += predict_images(model, chunk, transform, args.topk, labels, args.device)
    if args.json:
        json.dump([{"image": str(path), "predictions": [asdict(p) for p in preds]}
                   for path, preds in zip(args.images, results)], sys.stdout, indent=2)
        print()
        return 0
    for path, preds in zip(args.images, results):
        print(path)
        for rank, p in enumerate(preds, 1):
            wnid = f" ({p.wnid})" if p.wnid else ""
            print(f"  {rank}. {p.probability * 100:6.2f}%  {p.label}{wnid}  [{p.index}]")
    return 0
