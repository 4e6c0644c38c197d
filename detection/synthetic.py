"""A deterministic COCO-format detection dataset of drawn shapes, with exact boxes.

Used by the tests and the demo, and handy for checking a detection setup end to end on a CPU:
``nasnet detect make-synthetic --out DIR --num-images N``. Each image has 1-4 filled shapes
(square, disc, triangle; one category each) in distinct colours on a noisy background; a shape's
box is the exact extent of its pixels and its mask (COCO RLE) exactly those pixels. Written as
``DIR/{train,val}/*.png``, ``DIR/annotations/instances_{train,val}.json`` and a semantic map per
image (``DIR/{train,val}_semantic/*.png``: 0 background, else the category id).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image, ImageDraw
from tqdm import tqdm

__all__ = ["CATEGORIES", "make_synthetic"]

logger = logging.getLogger(__name__)

CATEGORIES = [{"id": 1, "name": "square"}, {"id": 2, "name": "disc"}, {"id": 3, "name": "triangle"}]
_COLOURS = {1: (220, 60, 50), 2: (50, 170, 60), 3: (60, 80, 220)}


def _draw(draw: ImageDraw.ImageDraw, category: int, x0: int, y0: int, side: int) -> None:
    x1, y1 = x0 + side - 1, y0 + side - 1
    if category == 1:
        draw.rectangle([x0, y0, x1, y1], fill=_COLOURS[1])
    elif category == 2:
        draw.ellipse([x0, y0, x1, y1], fill=_COLOURS[2])
    else:
        draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) // 2, y0)], fill=_COLOURS[3])


def _image(rng: np.random.Generator, size: int) -> tuple[Image.Image, list[dict], np.ndarray]:
    noise = rng.integers(90, 150, (size, size, 3), dtype=np.uint8)
    img = Image.fromarray(noise)
    draw = ImageDraw.Draw(img)
    objects, taken = [], np.zeros((size, size), dtype=bool)
    for _ in range(int(rng.integers(1, 5))):
        side = int(rng.integers(size // 8, size // 3))
        for _attempt in range(20):  # place without overlap, so every box is fully visible
            x0, y0 = (int(v) for v in rng.integers(0, size - side, 2))
            if not taken[y0 : y0 + side, x0 : x0 + side].any():
                break
        else:
            continue
        taken[y0 : y0 + side, x0 : x0 + side] = True
        category = int(rng.integers(1, 4))
        _draw(draw, category, x0, y0, side)
        objects.append({"category_id": category, "square": (x0, y0, side)})
    # Exact boxes and masks: the pixels of each shape's own colour inside its square.
    pixels = np.asarray(img)
    annotations = []
    semantic = np.zeros((size, size), dtype=np.uint8)  # 0: background, else the category id
    for obj in objects:
        x0, y0, side = obj["square"]
        patch = pixels[y0 : y0 + side, x0 : x0 + side]
        mask = (patch == np.array(_COLOURS[obj["category_id"]], dtype=np.uint8)).all(axis=2)
        full = np.zeros((size, size), dtype=np.uint8)
        full[y0 : y0 + side, x0 : x0 + side] = mask
        semantic[full.astype(bool)] = obj["category_id"]
        rle = mask_util.encode(np.asfortranarray(full))
        ys, xs = np.nonzero(mask)
        bx0, by0, bx1, by1 = x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1
        annotations.append({"category_id": obj["category_id"], "bbox": [int(bx0), int(by0), int(bx1 - bx0), int(by1 - by0)],
                            "area": int(mask.sum()), "iscrowd": 0,
                            "segmentation": {"size": [size, size], "counts": rle["counts"].decode("ascii")}})
    return img, annotations, semantic


def make_synthetic(out: str | Path, num_images: int, size: int = 128, val_fraction: float = 0.2,
                   seed: int = 0) -> dict[str, Path]:
    """Write the dataset; returns the annotation file of each split. Same arguments, same bytes."""
    if num_images < 2:
        raise ValueError("--num-images must be at least 2 (one for each split)")
    if size < 32:
        raise ValueError("--size must be at least 32 pixels")
    out = Path(out)
    num_val = max(1, int(round(num_images * val_fraction)))
    splits = {"train": num_images - num_val, "val": num_val}
    rng = np.random.default_rng(seed)
    files = {}
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    with tqdm(total=num_images, desc="synthetic images", unit="img", disable=num_images < 200) as bar:
        for split, count in splits.items():
            (out / split).mkdir(parents=True, exist_ok=True)
            (out / f"{split}_semantic").mkdir(parents=True, exist_ok=True)
            images, annotations = [], []
            for i in range(count):
                img, anns, semantic = _image(rng, size)
                name = f"{split}_{i:06d}.png"
                img.save(out / split / name)
                Image.fromarray(semantic).save(out / f"{split}_semantic" / name)
                images.append({"id": i + 1, "file_name": name, "height": size, "width": size})
                for ann in anns:
                    annotations.append({"id": len(annotations) + 1, "image_id": i + 1, **ann})
                bar.update(1)
            files[split] = out / "annotations" / f"instances_{split}.json"
            files[split].write_text(json.dumps({"images": images, "annotations": annotations,
                                                "categories": CATEGORIES}))
    logger.info("wrote %d train and %d val images to %s", splits["train"], splits["val"], out)
    return files
