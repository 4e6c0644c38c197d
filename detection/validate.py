"""Checks of a COCO-format instances json, before detectron2 reads it and before training starts.

detectron2 and pycocotools trust their input: a json that is not JSON, or lacks ``images``, ends
in a traceback that does not name the file; a box of zero or negative size, NaN, or far outside
its image trains on nonsense; an annotation whose ``image_id`` names no image is dropped without
a word; an RLE mask whose counts do not add up to its size is decoded past the end of its buffer;
a missing image file fails only when the data loader reaches it, hours into a schedule.

:func:`read_coco_json` parses the file (one clear error naming the file, line and column),
:func:`validate_coco_instances` checks every image, category and annotation and raises one
``ValueError`` that names the file, how many problems it has and the first few (each with the
entry's id and its index in its list), and :func:`missing_images` lists the images that are not
under the image root.

Errors (the run is refused):

- the file is not JSON, not an object, or lacks the ``images`` / ``annotations`` / ``categories`` lists;
- an entry that is not an object, an id that is not an integer, a duplicate image, annotation or
  category id, an image without a ``file_name`` or a positive integer ``width`` / ``height``; a
  ``file_name`` that is absolute or has a ``..`` component (it would read outside the image root);
- an annotation without an integer ``iscrowd`` (0 or 1) or a non-negative ``area`` (COCO's evaluation
  reads both, and fails without them only after training);
- an annotation whose ``image_id`` or ``category_id`` is unknown, whose ``bbox`` is not four finite
  numbers, or (not crowd) has zero or negative width or height or lies outside its image by more
  than :data:`BOX_TOLERANCE` pixels; an ``ignore`` other than 0 (detectron2 refuses it);
- a ``segmentation`` that is neither polygons nor RLE: a polygon with an odd number of coordinates,
  fewer than three points or a non-finite coordinate; an RLE whose ``size`` is not its image's
  ``[height, width]`` or whose counts do not cover exactly ``height * width`` pixels.

Warnings (logged, the run goes on): crowd annotations (``iscrowd: 1``) with an empty or
out-of-image box (detectron2 does not train on crowd regions; evaluation only ignores detections
inside them), images without annotations (detectron2 leaves them out of training), categories no
annotation uses. A missing ``segmentation`` is no error here: the mask-head check asks for it.
"""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from nasnet_backbones.jsonfile import read_json

__all__ = ["BOX_TOLERANCE", "read_coco_json", "validate_coco_instances", "missing_images", "rle_total"]

logger = logging.getLogger(__name__)

# How far (pixels) a box may reach past its image's edges: annotation tools round, and COCO's
# own boxes end a fraction of a pixel outside now and then.
BOX_TOLERANCE = 1.0
# How many problems one error lists (all are counted).
_LISTED = 5


def read_coco_json(path: str | Path) -> dict[str, Any]:
    """Parse a COCO json file into its top-level object; one clear ``ValueError`` naming the
    file (and the line and column of a syntax error) when it is not a JSON object."""
    path = Path(path)
    # a byte-order mark, as some editors write, is fine
    data = read_json(path, what="a COCO json file", encoding="utf-8-sig")
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a COCO json file: its top level is a {type(data).__name__}, "
                         "not an object with 'images', 'annotations' and 'categories'")
    return data


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_positive_size(value: Any) -> bool:
    """A pixel count: a positive integer (an integral float, as some tools write, is accepted)."""
    return _is_number(value) and math.isfinite(value) and value > 0 and float(value).is_integer()


def _top_level_lists(data: dict[str, Any], json_file: Path) -> tuple[list, list, list]:
    missing = [key for key in ("images", "annotations", "categories") if key not in data]
    if missing:
        raise ValueError(f"{json_file} is not a COCO instances json: it has no {', '.join(repr(k) for k in missing)} "
                         f"(found: {', '.join(repr(k) for k in list(data)[:8]) or 'nothing'})")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data[key], list):
            raise ValueError(f"{json_file}: '{key}' must be a list, not a {type(data[key]).__name__}")
    return data["images"], data["annotations"], data["categories"]


class _Problems:
    """Problems found so far: all counted, the first few kept to name in the error."""

    def __init__(self) -> None:
        self.count = 0
        self.first: list[str] = []

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.first) < _LISTED:
            self.first.append(message)


def _entry(kind: str, index: int, entry: Any) -> str:
    """How a message names an entry: ``annotation id 7 (index 6)``."""
    ident = entry.get("id") if isinstance(entry, dict) else None
    return f"{kind} id {ident!r} (index {index})" if ident is not None else f"{kind} at index {index}"


def _identified(kind: str, where: str, entry: Any, seen: set[int], problems: _Problems) -> bool:
    """Whether ``entry`` is an object with an integer id not seen before (recorded in ``seen``);
    otherwise the problem is reported and the entry is skipped."""
    if not isinstance(entry, dict):
        problems.add(f"{where}: not an object but a {type(entry).__name__}")
    elif not _is_int(entry.get("id")):
        problems.add(f"{where}: 'id' must be an integer")
    elif entry["id"] in seen:
        problems.add(f"{where}: duplicate {kind} id")
    else:
        seen.add(entry["id"])
        return True
    return False


def _check_categories(categories: list, problems: _Problems) -> set[int]:
    ids: set[int] = set()
    for index, cat in enumerate(categories):
        where = _entry("category", index, cat)
        if _identified("category", where, cat, ids, problems) and not isinstance(cat.get("name"), str):
            problems.add(f"{where}: 'name' must be a string")
    return ids


def _escapes_root(name: str) -> bool:
    """Whether a ``file_name`` would name a file outside the image root once joined to it: an
    absolute path (POSIX or Windows, a drive letter included) or a ``..`` component (either slash)."""
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or os.path.isabs(name) or (name[:1].isalpha() and name[1:2] == ":") \
        or ".." in parts


def _check_images(images: list, problems: _Problems) -> dict[int, tuple[float, float]]:
    """Image id -> (width, height) of every well-formed image."""
    sizes: dict[int, tuple[float, float]] = {}
    seen: set[int] = set()
    for index, img in enumerate(images):
        where = _entry("image", index, img)
        if not _identified("image", where, img, seen, problems):
            continue
        name = img.get("file_name")
        if not isinstance(name, str) or not name:
            problems.add(f"{where}: 'file_name' must be a non-empty string")
        elif _escapes_root(name):
            problems.add(f"{where}: 'file_name' {name!r} must be a path relative to the image root, without "
                         "'..' components (an absolute path or '..' reads a file outside --image-root)")
        bad = [key for key in ("width", "height") if not _is_positive_size(img.get(key))]
        if bad:
            problems.add(f"{where} ({name}): {' and '.join(repr(k) for k in bad)} must be positive integers "
                         f"(got {', '.join(f'{k}={img.get(k)!r}' for k in bad)})")
            continue
        sizes[img["id"]] = (float(img["width"]), float(img["height"]))
    return sizes


def rle_total(counts: str) -> int | None:
    """Pixels covered by a compressed COCO RLE string (the sum of its run lengths), or ``None``
    when the string is not valid RLE (a character outside the alphabet, a truncated or negative run).

    The format (pycocotools' ``rleToString``): each run is a variable-length integer in 5-bit
    groups, least significant first, each group written as ``chr(48 + group)`` with bit 0x20
    meaning "more groups follow" and, in the last group, bit 0x10 the sign; from the fourth run on,
    the run stored is the difference to the run two places before.
    """
    runs: list[int] = []
    total, position, length = 0, 0, len(counts)
    while position < length:
        value, shift, more = 0, 0, True
        while more:
            if position >= length:
                return None
            code = ord(counts[position]) - 48
            if not 0 <= code < 64:
                return None
            value |= (code & 0x1F) << shift
            more = bool(code & 0x20)
            position += 1
            shift += 5
            if not more and code & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            return None
        runs.append(value)
        total += value
    return total


def _segmentation_problem(segm: Any, width: float, height: float) -> str | None:
    """What is wrong with an annotation's ``segmentation`` (``None`` when nothing is)."""
    if not segm:
        return None  # no mask: the mask-head check decides whether one is needed
    if isinstance(segm, list):
        for k, poly in enumerate(segm):
            if not isinstance(poly, list) or not all(_is_number(v) for v in poly):
                return f"segmentation polygon {k} is not a list of numbers"
            if len(poly) % 2:
                return f"segmentation polygon {k} has an odd number of coordinates ({len(poly)}); it lists x, y pairs"
            if len(poly) < 6:
                return f"segmentation polygon {k} has {len(poly) // 2} points; a polygon needs at least 3"
            if not all(math.isfinite(v) for v in poly):
                return f"segmentation polygon {k} has a coordinate that is not finite"
        return None
    if isinstance(segm, dict):
        size, counts = segm.get("size"), segm.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) and v > 0 for v in size)):
            return f"RLE segmentation 'size' must be [height, width], got {size!r}"
        if size != [int(height), int(width)]:
            return f"RLE segmentation size {size} is not the image's [height, width] [{int(height)}, {int(width)}]"
        if isinstance(counts, str):
            total = rle_total(counts)
            if total is None:
                return "RLE segmentation 'counts' is not a valid compressed RLE string"
        elif isinstance(counts, list) and all(_is_int(v) and v >= 0 for v in counts):
            total = sum(counts)
        else:
            return "RLE segmentation 'counts' must be a compressed string or a list of non-negative integers"
        if total != size[0] * size[1]:
            return (f"RLE segmentation counts cover {total} pixels, but its size {size[0]}x{size[1]} has "
                    f"{size[0] * size[1]}")
        return None
    return f"segmentation must be a list of polygons or an RLE object, not a {type(segm).__name__}"


def _box_problem(bbox: Any, width: float, height: float) -> tuple[str | None, bool]:
    """What is wrong with an annotation's ``bbox`` ``[x, y, w, h]``, and whether it is only its
    geometry (empty, outside the image), which is a warning for crowd regions."""
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        return f"'bbox' must be [x, y, width, height] (four numbers), got {bbox!r}", False
    if not all(math.isfinite(v) for v in bbox):
        return f"bbox {bbox} has a value that is not finite", False
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        return f"bbox {bbox} has {'zero' if min(w, h) == 0 else 'negative'} width or height", True
    t = BOX_TOLERANCE
    if x < -t or y < -t or x + w > width + t or y + h > height + t:
        return f"bbox {bbox} lies outside its {width:g}x{height:g} image", True
    return None, False


def _check_annotations(annotations: list, sizes: dict[int, tuple[float, float]], image_ids: set[int],
                       category_ids: set[int], problems: _Problems) -> tuple[set[int], set[int], int]:
    """Check every annotation; returns the image ids and category ids they use, and the number
    of crowd annotations with an empty or out-of-image box (a warning)."""
    seen: set[int] = set()
    used_images: set[int] = set()
    used_categories: set[int] = set()
    crowd_boxes = 0
    for index, ann in enumerate(annotations):
        where = _entry("annotation", index, ann)
        if not _identified("annotation", where, ann, seen, problems):
            continue
        image_id, category_id = ann.get("image_id"), ann.get("category_id")
        if not _is_int(image_id) or image_id not in image_ids:
            problems.add(f"{where}: image_id {image_id!r} is not the id of any image")
            continue
        used_images.add(image_id)
        if not _is_int(category_id) or category_id not in category_ids:
            problems.add(f"{where}: category_id {category_id!r} is not the id of any category")
        else:
            used_categories.add(category_id)
        crowd = ann.get("iscrowd")
        if crowd not in (0, 1) or isinstance(crowd, float):
            problems.add(f"{where}: 'iscrowd' must be 0 or 1 (COCO evaluation reads it), got {crowd!r}")
        area = ann.get("area")
        if not (_is_number(area) and math.isfinite(area) and area >= 0):
            problems.add(f"{where}: 'area' must be a non-negative number (COCO evaluation reads it: the mask's "
                         f"pixel count, or the box's width x height), got {area!r}")
        if ann.get("ignore", 0) != 0:
            problems.add(f"{where}: 'ignore' {ann['ignore']!r} is not read by detectron2; mark the region "
                         "'iscrowd': 1 or remove the annotation")
        if image_id not in sizes:
            continue  # the image itself is malformed, and already reported
        width, height = sizes[image_id]
        box, geometric = _box_problem(ann.get("bbox"), width, height)
        if box and geometric and crowd == 1:
            crowd_boxes += 1
        elif box:
            problems.add(f"{where}: {box}")
        segm = _segmentation_problem(ann.get("segmentation"), width, height)
        if segm:
            problems.add(f"{where}: {segm}")
    return used_images, used_categories, crowd_boxes


def validate_coco_instances(data: dict[str, Any], *, json_file: str | Path) -> None:
    """Check a parsed COCO instances json (see the module docstring for what is an error and what
    a warning); raise one ``ValueError`` naming ``json_file`` and the first problems found."""
    json_file = Path(json_file)
    images, annotations, categories = _top_level_lists(data, json_file)
    problems = _Problems()
    category_ids = _check_categories(categories, problems)
    sizes = _check_images(images, problems)
    image_ids = {img["id"] for img in images if isinstance(img, dict) and _is_int(img.get("id"))}
    used_images, used_categories, crowd_boxes = _check_annotations(annotations, sizes, image_ids, category_ids,
                                                                   problems)
    if problems.count:
        listed = "\n  ".join(problems.first)
        more = f"\n  ... and {problems.count - len(problems.first)} more" if problems.count > len(problems.first) else ""
        raise ValueError(f"{json_file}: {problems.count} problem{'s' if problems.count > 1 else ''} in the COCO "
                         f"annotations; fix or remove these entries:\n  {listed}{more}")
    if crowd_boxes:
        logger.warning("%s: %d crowd annotations have an empty or out-of-image box (kept: crowd regions are not "
                       "trained on)", json_file, crowd_boxes)
    if len(used_images) < len(image_ids):
        logger.info("%s: %d of %d images have no annotations", json_file, len(image_ids) - len(used_images),
                    len(image_ids))
    unused = sorted(category_ids - used_categories)
    if unused and annotations:
        logger.warning("%s: no annotation uses categories %s", json_file, unused[:10])


def missing_images(file_names: Iterable[str], image_root: str | Path) -> list[str]:
    """The ``file_name`` entries with no file under ``image_root`` (joined as detectron2 joins
    them). Each folder is listed once, so a COCO-sized json is checked in a second, not a stat per image."""
    by_folder: dict[str, list[str]] = defaultdict(list)
    for name in file_names:
        path = os.path.join(os.fspath(image_root), name)
        by_folder[os.path.dirname(path)].append(name)
    missing = []
    for folder, names in by_folder.items():
        try:
            with os.scandir(folder or ".") as entries:
                files = {entry.name for entry in entries if entry.is_file()}
        except (FileNotFoundError, NotADirectoryError):
            files = set()
        missing.extend(name for name in names if os.path.basename(name) not in files)
    return missing
