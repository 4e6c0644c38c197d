"""A deterministic COCO-format detection dataset of drawn shapes, with exact boxes.

Used by the tests and the demo, and handy for checking a detection setup end to end on a CPU:
``nasnet detect make-synthetic --output-dir DIR --num-images N``. Each image has 1-4 filled shapes
(square, disc, triangle; one category each) in distinct colours on a noisy background; a shape's
box is the exact extent of its pixels and its mask (COCO RLE) exactly those pixels; every other
pixel is one "background" stuff segment. Written in COCO's layout, so detectron2's loaders and
evaluators read it as they read COCO:

- ``DIR/{train,val}/*.png`` and ``DIR/annotations/instances_{train,val}.json`` (boxes, masks);
- ``DIR/annotations/panoptic_{train,val}.json`` and ``DIR/panoptic_{train,val}/*.png`` (COCO
  panoptic format: segment ids as RGB, ``id = R + 256 G + 256^2 B``, 0 unlabeled);
- ``DIR/panoptic_stuff_{train,val}/*.png``: the semantic map of Panoptic FPN's "separated" format
  (what detectron2's ``prepare_panoptic_fpn.py`` makes from COCO): 0 for every thing, stuff
  categories from 1 (here 1 = background).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image, ImageDraw
from tqdm import tqdm

__all__ = ["CATEGORIES", "PANOPTIC_CATEGORIES", "draw_shapes_image", "make_synthetic"]

logger = logging.getLogger(__name__)

CATEGORIES = [{"id": 1, "name": "square"}, {"id": 2, "name": "disc"}, {"id": 3, "name": "triangle"}]
# The panoptic categories: the three things and one stuff category for everything else.
PANOPTIC_CATEGORIES = [{**c, "isthing": 1} for c in CATEGORIES] + [{"id": 4, "name": "background", "isthing": 0}]
_COLOURS = {1: (220, 60, 50), 2: (50, 170, 60), 3: (60, 80, 220)}


def _draw(draw: ImageDraw.ImageDraw, category: int, x0: int, y0: int, side: int) -> None:
    x1, y1 = x0 + side - 1, y0 + side - 1
    if category == 1:
        draw.rectangle([x0, y0, x1, y1], fill=_COLOURS[1])
    elif category == 2:
        draw.ellipse([x0, y0, x1, y1], fill=_COLOURS[2])
    else:
        draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) // 2, y0)], fill=_COLOURS[3])


def draw_shapes_image(rng: np.random.Generator, size: int) -> tuple[Image.Image, list[dict], np.ndarray]:
    """One ``size`` x ``size`` RGB image of 1-4 non-overlapping drawn shapes on a noisy background,
    drawn from ``rng`` (the same generator state gives the same image).

    Returns the image, its COCO annotations (``category_id``, exact ``bbox`` as x, y, width, height,
    ``segmentation`` as RLE, ``area``) and the per-pixel panoptic segment ids (0 background, then
    one per annotation in order). The dataset of :func:`make_synthetic` is made of these; the ONNX
    exports verify and calibrate on one too.
    """
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
    segment_ids = np.zeros((size, size), dtype=np.uint32)  # panoptic segment id per pixel
    for obj in objects:
        x0, y0, side = obj["square"]
        patch = pixels[y0 : y0 + side, x0 : x0 + side]
        mask = (patch == np.array(_COLOURS[obj["category_id"]], dtype=np.uint8)).all(axis=2)
        full = np.zeros((size, size), dtype=np.uint8)
        full[y0 : y0 + side, x0 : x0 + side] = mask
        segment_ids[full.astype(bool)] = len(annotations) + 1
        rle = mask_util.encode(np.asfortranarray(full))
        ys, xs = np.nonzero(mask)
        bx0, by0, bx1, by1 = x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1
        annotations.append({"category_id": obj["category_id"], "bbox": [int(bx0), int(by0), int(bx1 - bx0), int(by1 - by0)],
                            "area": int(mask.sum()), "iscrowd": 0,
                            "segmentation": {"size": [size, size], "counts": rle["counts"].decode("ascii")}})
    segment_ids[segment_ids == 0] = len(annotations) + 1  # the background segment
    return img, annotations, segment_ids


def _panoptic(annotations: list[dict], segment_ids: np.ndarray) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """COCO panoptic ``segments_info``, the segment-id PNG (RGB) and the separated stuff map."""
    segments = [{"id": i + 1, "category_id": a["category_id"], "iscrowd": 0, "bbox": a["bbox"], "area": a["area"]}
                for i, a in enumerate(annotations)]
    background = segment_ids == len(annotations) + 1
    ys, xs = np.nonzero(background)
    segments.append({"id": len(annotations) + 1, "category_id": PANOPTIC_CATEGORIES[-1]["id"], "iscrowd": 0,
                     "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)],
                     "area": int(background.sum())})
    rgb = np.stack([segment_ids % 256, segment_ids // 256 % 256, segment_ids // 256**2], axis=2).astype(np.uint8)
    stuff = background.astype(np.uint8)  # 0: things, 1: background
    return segments, rgb, stuff


def _check_empty(out: Path) -> None:
    """Refuse an output folder that holds anything: the dataset's fixed names would overwrite
    another dataset's (or any) files there, and its jsons would no longer describe the folder."""
    if out.is_dir():
        try:
            entries = sorted(p.name for p in out.iterdir())
        except OSError as exc:
            raise ValueError(f"--output-dir {out}: cannot list it ({exc.strerror or exc})") from None
        if entries:
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise ValueError(f"--output-dir {out} is not empty ({len(entries)} entries: {shown}); make-synthetic "
                             "writes a whole dataset and does not overwrite files: give a new or empty folder")
    elif out.exists() or out.is_symlink():
        raise ValueError(f"--output-dir {out} exists and is not a directory; give a new or empty folder")


def make_synthetic(out: str | Path, num_images: int, size: int = 128, val_fraction: float = 0.2,
                   seed: int = 0) -> dict[str, Path]:
    """Write the dataset into ``out``, a new or empty folder (one that holds anything is refused
    before anything is written); returns the annotation file of each split. Same arguments, same bytes."""
    if num_images < 2:
        raise ValueError("--num-images must be at least 2 (one for each split)")
    if size < 32:
        raise ValueError("--size must be at least 32 pixels")
    out = Path(out)
    _check_empty(out)
    num_val = max(1, int(round(num_images * val_fraction)))
    splits = {"train": num_images - num_val, "val": num_val}
    rng = np.random.default_rng(seed)
    files = {}
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    with tqdm(total=num_images, desc="synthetic images", unit="img", disable=num_images < 200) as bar:
        for split, count in splits.items():
            for folder in (split, f"panoptic_{split}", f"panoptic_stuff_{split}"):
                (out / folder).mkdir(parents=True, exist_ok=True)
            images, annotations, panoptic = [], [], []
            for i in range(count):
                img, anns, segment_ids = draw_shapes_image(rng, size)
                name = f"{split}_{i:06d}.png"
                img.save(out / split / name)
                segments, rgb, stuff = _panoptic(anns, segment_ids)
                Image.fromarray(rgb).save(out / f"panoptic_{split}" / name)
                Image.fromarray(stuff).save(out / f"panoptic_stuff_{split}" / name)
                images.append({"id": i + 1, "file_name": name, "height": size, "width": size})
                panoptic.append({"image_id": i + 1, "file_name": name, "segments_info": segments})
                for ann in anns:
                    annotations.append({"id": len(annotations) + 1, "image_id": i + 1, **ann})
                bar.update(1)
            files[split] = out / "annotations" / f"instances_{split}.json"
            files[split].write_text(json.dumps({"images": images, "annotations": annotations,
                                                "categories": CATEGORIES}))
            (out / "annotations" / f"panoptic_{split}.json").write_text(json.dumps(
                {"images": images, "annotations": panoptic, "categories": PANOPTIC_CATEGORIES}))
    logger.info("wrote %d train and %d val images to %s", splits["train"], splits["val"], out)
    return files
