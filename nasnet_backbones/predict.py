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
from PIL import Image, UnidentifiedImageError
from torch import nn

from .imagenet import imagenet_classes
from .model_args import add_model_arguments, build_model_from_args, eval_transform_for, stored_labels

__all__ = ["Prediction", "predict_images", "read_labels", "add_parser", "run"]


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
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def open_image(path: str | Path) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path} is not an image PIL can read ({exc})") from None


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


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "predict", help="top-k labels for images",
        description="Top-k labels with probabilities for image files (ImageNet names for 1000-class models).",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    add_model_arguments(p)
    p.add_argument("--topk", type=int, default=5, help="labels per image (default 5)")
    p.add_argument("--labels", help="class names, one per line (default: ImageNet's, or labels.txt next to --weights)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.topk < 1:
        raise ValueError("--topk must be at least 1")
    images = [open_image(path) for path in args.images]  # fail on a bad path before building the model
    model = build_model_from_args(args)
    labels = None
    if args.labels:
        labels = read_labels(args.labels)
    elif (stored := stored_labels(args.weights)) is not None:
        labels = stored
    elif args.weights and Path(args.weights).is_file() and (Path(args.weights).parent / "labels.txt").is_file():
        labels = read_labels(Path(args.weights).parent / "labels.txt")
    if labels is not None and len(labels) != model.num_classes:
        raise ValueError(f"{len(labels)} labels for a model with {model.num_classes} classes")
    transform = eval_transform_for(model, weights_file=args.weights)
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
