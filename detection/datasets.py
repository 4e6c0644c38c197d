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
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json, register_coco_instances

from .validate import missing_images, read_coco_json, validate_coco_instances

__all__ = [
    "PanopticFiles", "register_coco_json", "register_coco_panoptic_separated_json", "panoptic_files_for",
    "needs_masks", "needs_semantic", "uses_rle_masks", "check_dataset", "set_num_classes_from_json",
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
