"""`nasnet eval imagenet` throughput on CPU and the share of time spent waiting for data.

    python benchmarks/eval_throughput.py [--images 256] [--batch-size 32] [--workers 0 1 2 default]

Writes a synthetic ImageNet-style val folder (JPEGs of ImageNet's typical 500x375 size, quality
90, one folder per WordNet id) under a temporary directory, then runs the same code path as
``nasnet eval imagenet --model nasnet_a_mobile`` (the Cadene preprocessing at 224, random
weights) once per worker count, reporting images/s and the share of wall time the model waited
for the DataLoader. The goal: under 10% with the default worker count. Markdown table to stdout.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

import nasnet_backbones as nb
from nasnet_backbones.data import ImageNetFolder, default_workers
from nasnet_backbones.evaluate import evaluate
from nasnet_backbones.imagenet import imagenet_classes


def write_val_folder(root: Path, images: int, classes: int = 16) -> None:
    rng = np.random.default_rng(0)
    wnids = [c.wnid for c in imagenet_classes()[:: 1000 // classes][:classes]]
    for i in range(images):
        folder = root / wnids[i % classes]
        folder.mkdir(parents=True, exist_ok=True)
        # Smooth random content compresses like a photo rather than like noise.
        small = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
        Image.fromarray(small).resize((500, 375), Image.BICUBIC).save(folder / f"ILSVRC2012_val_{i:08d}.JPEG", quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", nargs="+", default=["0", "1", "default"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = nb.create_model("nasnet_a_mobile").eval()
    transform = nb.get_weights("nasnet_a_mobile").transforms()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        write_val_folder(Path(tmp), args.images)
        dataset = ImageNetFolder(tmp, transform=transform)
        for w in args.workers:
            workers = default_workers() if w == "default" else int(w)
            loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=workers)
            evaluate(model, [next(iter(loader))], progress=False)  # warm-up (first-call allocations)
            _, result = evaluate(model, loader, progress=False)
            label = f"{workers} (default)" if w == "default" else str(workers)
            rows.append((label, result.images_per_s, 100 * result.data_wait_fraction, result.seconds))
    print(f"nasnet_a_mobile, 224, batch {args.batch_size}, {args.images} JPEGs 500x375, "
          f"{torch.get_num_threads()} torch threads, {default_workers()} default workers\n")
    print("| workers | images/s | waiting for data | wall time (s) |")
    print("|---|---|---|---|")
    for label, ips, wait, seconds in rows:
        print(f"| {label} | {ips:.1f} | {wait:.1f}% | {seconds:.1f} |")


if __name__ == "__main__":
    main()
