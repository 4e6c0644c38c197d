"""Datasets for every head: COCO-format instances (boxes, masks) and COCO panoptic in Panoptic
FPN's "separated" form, registered with detectron2 and checked against what a config's heads need.

Custom data comes as a COCO instances json (``--dataset-json``). A Panoptic FPN config also needs
the panoptic files, found in COCO's layout next to it, as ``nasnet detect make-synthetic`` writes
them and detectron2's ``datasets/prepare_panoptic_fpn.py`` makes them for COCO::

    ROOT/annotations/instances_SPLIT.json   boxes and instance masks (polygons or RLE)
    ROOT/annotations/panoptic_SPLIT.json    COCO panoptic segments (for PQ)
    ROOT/panoptic_SPLIT/*.png               COCO panoptic PNGs (segment ids as RGB)
    ROOT/panoptic_stuff_SPLIT/*.png         semantic map: 0 = any thing, stuff categories from 1

The checks run before training starts, so a Mask R-CNN config on a dataset without masks, or a
Panoptic FPN config without semantic maps, is one clear error rather than a crash at iteration 0;
so are a malformed json, bad boxes, ids or masks (:mod:`detection.validate`, when a custom json is
registered) and image files missing under the image root (:func:`check_dataset`).

Images are read through :func:`nasnet_backbones.images.open_rgb` (:func:`read_detection_image`,
and :class:`OpenRGBDatasetMapper` for the trainer's train and test loaders): every PIL mode becomes
8-bit RGB by that module's rule (16-bit PNGs scaled, not clipped to white; float TIFFs in [0, 1]
scaled; transparency laid over white), and a truncated, corrupt or unconvertible file is one error
naming it. EXIF orientation is applied as detectron2's ``read_image`` applies it, so ordinary
8-bit images give exactly the arrays detectron2's reader gives.
"""

from __future__ import annotations

import copy
import logging
import os
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.data import detection_utils
from detectron2.data import transforms as T
from detectron2.data.datasets import load_coco_json, register_coco_instances
from PIL import Image

from nasnet_backbones.images import UnreadableImage, open_rgb

from .validate import missing_images, read_coco_json, validate_coco_instances

__all__ = [
    "PanopticFiles", "register_coco_json", "register_coco_panoptic_separated_json", "panoptic_files_for",
    "needs_masks", "needs_semantic", "uses_rle_masks", "check_dataset", "set_num_classes_from_json",
    "DatasetImageError", "read_detection_image", "OpenRGBDatasetMapper",
]

logger = logging.getLogger(__name__)

# Datasets registered here, with the json they were read from: the ones whose contents we check
# (detectron2's builtin COCO names are trusted to carry masks; their files are checked to exist).
_CUSTOM: dict[str, Path] = {}


def _register(name: str) -> None:
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _existing(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    return path


def register_coco_json(name: str, json_file: str | Path, image_root: str | Path) -> str:
    """Register a COCO-format instances dataset under ``name``: the json is parsed and validated
    now (:mod:`detection.validate`; one clear error for a malformed file, bad box or mask), loaded
    by detectron2 lazily; :func:`check_dataset` checks that its images exist."""
    json_file = _existing(Path(json_file), "dataset json")
    image_root = _existing(Path(image_root), "image root")
    _summary(json_file)
    _register(name)
    register_coco_instances(name, {}, str(json_file), str(image_root))
    _CUSTOM[name] = json_file
    return name


@dataclass(frozen=True)
class PanopticFiles:
    """The panoptic side of a dataset in COCO's layout (see the module docstring)."""

    panoptic_json: Path
    panoptic_root: Path
    sem_seg_root: Path


def panoptic_files_for(instances_json: str | Path) -> PanopticFiles:
    """The panoptic files that go with ``ROOT/annotations/instances_SPLIT.json``, checked to exist."""
    instances_json = Path(instances_json)
    prefix = "instances_"
    if not instances_json.name.startswith(prefix) or instances_json.parent.name != "annotations":
        raise ValueError(f"a Panoptic FPN dataset is read in COCO's layout, ROOT/annotations/instances_SPLIT.json "
                         f"beside ROOT/annotations/panoptic_SPLIT.json, ROOT/panoptic_SPLIT/ and "
                         f"ROOT/panoptic_stuff_SPLIT/; {instances_json} is not named that way")
    split = instances_json.stem[len(prefix):]
    root = instances_json.parent.parent
    files = PanopticFiles(root / "annotations" / f"panoptic_{split}.json", root / f"panoptic_{split}",
                          root / f"panoptic_stuff_{split}")
    missing = [str(p) for p in (files.panoptic_json, files.panoptic_root, files.sem_seg_root) if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"Panoptic FPN needs semantic maps and panoptic annotations beside {instances_json}; missing: "
            f"{', '.join(missing)}. `nasnet detect make-synthetic` writes them; for COCO run detectron2's "
            "datasets/prepare_panoptic_fpn.py")
    return files


def _separated_metadata(panoptic_json: Path) -> dict:
    """Stuff metadata of the separated format: semantic class 0 is "things", stuff from 1 (as
    detectron2's builtin COCO panoptic metadata)."""
    categories = read_coco_json(panoptic_json).get("categories")
    if not isinstance(categories, list) or not all(isinstance(c, dict) and "id" in c and "name" in c
                                                   for c in categories):
        raise ValueError(f"{panoptic_json}: 'categories' must be a list of objects with an 'id' and a 'name'")
    stuff = [c for c in categories if not c.get("isthing", 1)]
    if not stuff:
        raise ValueError(f"{panoptic_json} has no stuff categories (isthing 0); Panoptic FPN's semantic head needs them")
    return {"stuff_classes": ["things", *(c["name"] for c in stuff)],
            "stuff_dataset_id_to_contiguous_id": {0: 0, **{c["id"]: i + 1 for i, c in enumerate(stuff)}}}


def register_coco_panoptic_separated_json(name: str, instances_json: str | Path, image_root: str | Path,
                                          panoptic: PanopticFiles | None = None) -> str:
    """Register instances plus semantic maps under ``name`` for Panoptic FPN, evaluated with
    COCO (boxes, masks), semantic segmentation (mIoU) and panoptic quality (PQ)."""
    instances_json = _existing(Path(instances_json), "dataset json")
    image_root = _existing(Path(image_root), "image root")
    _summary(instances_json)
    panoptic = panoptic or panoptic_files_for(instances_json)
    _register(name)

    def load() -> list[dict]:
        dicts = load_coco_json(str(instances_json), str(image_root), name)
        for record in dicts:
            record["sem_seg_file_name"] = str(panoptic.sem_seg_root / (Path(record["file_name"]).stem + ".png"))
        return dicts

    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(
        json_file=str(instances_json), image_root=str(image_root), panoptic_json=str(panoptic.panoptic_json),
        panoptic_root=str(panoptic.panoptic_root), sem_seg_root=str(panoptic.sem_seg_root),
        evaluator_type="coco_panoptic_seg", ignore_label=255, **_separated_metadata(panoptic.panoptic_json))
    _CUSTOM[name] = instances_json
    return name


@dataclass(frozen=True)
class _JsonSummary:
    """What the checks and head sizing need from a COCO instances json, read in one pass (a
    custom json may be as large as COCO's, 450 MB, and setup asks several questions of it).
    Crowd annotations are left out, as detectron2's mapper leaves them out of training."""

    categories: int
    annotations: int
    without_masks: int
    rle_masks: bool
    file_names: tuple[str, ...]


@lru_cache(maxsize=8)
def _read_summary(path: str, mtime_ns: int, shown: str) -> _JsonSummary:
    """Parse and validate the json at ``path`` (errors name it as ``shown``, the path as given)."""
    data = read_coco_json(shown)
    validate_coco_instances(data, json_file=shown)
    annotations = [a for a in data.get("annotations", []) if not a.get("iscrowd", 0)]
    return _JsonSummary(
        categories=len(data.get("categories", [])), annotations=len(annotations),
        without_masks=sum(not a.get("segmentation") for a in annotations),
        rle_masks=any(isinstance(a.get("segmentation"), dict) for a in annotations),
        file_names=tuple(img["file_name"] for img in data.get("images", [])))


def _summary(json_file: str | Path) -> _JsonSummary:
    path = Path(json_file).resolve()
    return _read_summary(str(path), path.stat().st_mtime_ns, str(json_file))  # a rewritten file is read again


def uses_rle_masks(json_file: str | Path) -> bool:
    """Whether a COCO json stores instance masks as RLE (which detectron2 reads only as bitmasks)."""
    return _summary(json_file).rle_masks


def needs_masks(cfg: CfgNode) -> bool:
    return bool(cfg.MODEL.MASK_ON)


def needs_semantic(cfg: CfgNode) -> bool:
    return cfg.MODEL.META_ARCHITECTURE in ("PanopticFPN", "SemanticSegmentor")


def check_dataset(cfg: CfgNode, name: str) -> None:
    """Raise if dataset ``name`` is missing, or lacks what ``cfg``'s heads train on."""
    if name not in DatasetCatalog.list():
        raise ValueError(f"dataset {name!r} is not registered; use a detectron2 builtin name (coco_2017_train, ...) "
                         "or --dataset-json/--image-root")
    meta = MetadataCatalog.get(name)
    sem_seg_root = getattr(meta, "sem_seg_root", None)
    if needs_semantic(cfg) and sem_seg_root is None:
        raise ValueError(f"{cfg.MODEL.META_ARCHITECTURE} trains a semantic head, but dataset {name} has no semantic "
                         "maps: use a *_panoptic_separated dataset (coco_2017_train_panoptic_separated) or "
                         "--dataset-json with COCO's panoptic layout beside it")
    root = os.environ.get("DETECTRON2_DATASETS", "datasets")
    json_file = getattr(meta, "json_file", None)
    if json_file and not Path(json_file).is_file():
        raise FileNotFoundError(
            f"dataset {name}: {json_file} does not exist. Put COCO under {root}/coco (annotations/, train2017/, "
            "val2017/) or set DETECTRON2_DATASETS to the folder that holds coco/"
        )
    if needs_semantic(cfg):
        if not Path(sem_seg_root).is_dir():
            raise FileNotFoundError(f"dataset {name}: semantic maps {sem_seg_root} do not exist; for COCO run "
                                    "detectron2's datasets/prepare_panoptic_fpn.py")
    if name in _CUSTOM:
        _check_image_files(name, _CUSTOM[name], Path(meta.image_root))
    if name in _CUSTOM and (needs_masks(cfg) or needs_semantic(cfg)):
        _check_annotations(cfg, name, _CUSTOM[name], meta)


def _check_image_files(name: str, json_file: Path, image_root: Path) -> None:
    """Every image the json names is a file under ``image_root``: checked here, since detectron2's
    loader would meet a missing one only when it reaches it, after hours of training."""
    file_names = _summary(json_file).file_names
    missing = missing_images(file_names, image_root)
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise FileNotFoundError(
            f"{json_file} (dataset {name}): {len(missing)} of {len(file_names)} images are missing under the image "
            f"root {image_root}: {shown}. Put them there, or point --image-root / --val-image-root at their folder")


def _check_annotations(cfg: CfgNode, name: str, json_file: Path, meta) -> None:
    summary = _summary(json_file)
    if needs_masks(cfg):
        if summary.without_masks:
            raise ValueError(
                f"MODEL.MASK_ON needs an instance mask for every object, but {summary.without_masks} of "
                f"{summary.annotations} annotations in {json_file} (dataset {name}) have no 'segmentation'. Add COCO "
                "polygons or RLE masks, or use a config without a mask head (faster_rcnn_*)")
        if cfg.INPUT.MASK_FORMAT == "polygon" and summary.rle_masks:
            raise ValueError(f"{json_file} stores masks as RLE, which INPUT.MASK_FORMAT polygon cannot read; "
                             "set INPUT.MASK_FORMAT bitmask")
    if needs_semantic(cfg):
        root = Path(meta.sem_seg_root)
        missing = [f for f in summary.file_names if not (root / (Path(f).stem + ".png")).is_file()]
        if missing:
            raise FileNotFoundError(f"dataset {name}: {len(missing)} images have no semantic map in {root} "
                                    f"(first: {missing[0]})")


def set_num_classes_from_json(cfg: CfgNode, json_file: str | Path, dataset: str | None = None) -> int:
    """Size the heads for a dataset: thing classes from a COCO json's categories, and for a
    semantic head the registered dataset's stuff classes. Returns the number of thing classes."""
    classes = _summary(json_file).categories
    if classes:
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = cfg.MODEL.RETINANET.NUM_CLASSES = classes
    stuff = getattr(MetadataCatalog.get(dataset), "stuff_classes", None) if dataset else None
    if stuff and needs_semantic(cfg):
        cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = len(stuff)
    return classes


# -- reading images ---------------------------------------------------------------------------

_EXIF_ORIENTATION = 0x0112
# EXIF orientation tag value -> the PIL transpose that shows the image upright (the EXIF standard).
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}


class DatasetImageError(UnreadableImage):
    """An image (or semantic map) of a detection dataset that cannot be read: one line naming the file.

    torch's ``DataLoader`` re-raises a worker's exception in the main process as
    ``type(exc)(text)``, ``text`` holding the worker's whole traceback; this class keeps only the
    original message, so the command line still prints one line that names the file."""

    def __init__(self, message: str) -> None:
        if isinstance(message, str) and message.startswith("Caught ") and "Original Traceback" in message:
            for line in reversed(message.rstrip().splitlines()):
                head, sep, rest = line.partition(": ")
                if sep and head.endswith(type(self).__name__):
                    message = rest
                    break
        super().__init__(message)


def _orientation(path: str | Path) -> int:
    """The EXIF orientation the file declares (1, upright, when it declares none or cannot say)."""
    try:
        with Image.open(path) as img:  # the header only
            return int(img.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 -- a broken EXIF block is not a broken image (open_rgb judged the pixels)
        return 1


def read_detection_image(path: str | Path, image_format: str = "BGR") -> np.ndarray:
    """The image file at ``path`` as the HWC ``uint8`` array detectron2's models take, channels in
    ``image_format`` order (``cfg.INPUT.FORMAT``: ``BGR``, ``RGB``, or another format detectron2's
    ``convert_PIL_to_numpy`` knows). Read with :func:`open_rgb`, so every mode converts by its rule
    and a bad file raises :class:`UnreadableImage` naming it; EXIF orientation is applied as by
    detectron2's ``read_image``."""
    image = open_rgb(path)
    method = _UPRIGHT.get(_orientation(path))
    if method is not None:
        image = image.transpose(method)
    return detection_utils.convert_PIL_to_numpy(image, image_format)


# What PIL raises for a truncated or corrupt file (as nasnet_backbones.images lists them).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, ZeroDivisionError,
                  struct.error)


def _read_label_map(path: str) -> np.ndarray:
    """A semantic map (one label per pixel, read as detectron2 reads it: PIL mode ``L``), with a
    bad file one error naming it. Labels are not colours, so this does not go through ``open_rgb``."""
    try:
        return detection_utils.read_image(path, "L").squeeze(2)
    except _DECODE_ERRORS as exc:
        raise DatasetImageError(f"semantic map {path} cannot be read: {type(exc).__name__}: {exc}") from None


class OpenRGBDatasetMapper(DatasetMapper):
    """detectron2's ``DatasetMapper`` (same augmentations, annotation and proposal handling, built
    from the same config) whose images are read with :func:`read_detection_image` instead of
    detectron2's ``read_image``. An unreadable image or semantic map, or one whose size is not its
    json entry's, is a :class:`DatasetImageError` naming the file, in the trainer's and the
    evaluator's data loaders alike."""

    def __call__(self, dataset_dict: dict) -> dict:
        record = copy.deepcopy(dataset_dict)  # the dataset's own dicts are reused every epoch
        name = record["file_name"]
        split = "training" if self.is_train else "evaluation"
        try:
            image = read_detection_image(name, self.image_format)
            detection_utils.check_image_size(record, image)
        except (UnreadableImage, detection_utils.SizeMismatchError) as exc:
            raise DatasetImageError(f"{exc} ({split} image; replace the file, or remove it from the dataset "
                                    "json)") from None
        labels = _read_label_map(record.pop("sem_seg_file_name")) if "sem_seg_file_name" in record else None

        augmented = T.AugInput(image, sem_seg=labels)
        transforms = self.augmentations(augmented)
        image, labels = augmented.image, augmented.sem_seg
        height_width = image.shape[:2]
        record["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))  # CHW for the model
        if labels is not None:
            record["sem_seg"] = torch.as_tensor(labels.astype("long"))
        if self.proposal_topk is not None:
            detection_utils.transform_proposals(record, height_width, transforms, proposal_topk=self.proposal_topk)
        if self.is_train and "annotations" in record:
            self._transform_annotations(record, transforms, height_width)
        elif not self.is_train:
            record.pop("annotations", None)  # evaluation reads the ground truth from the json
        return record
