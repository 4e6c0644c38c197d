"""Detections for image files: PNGs drawn with detectron2's ``Visualizer`` and a JSON file.

Images are read with ``nasnet_backbones.images.open_rgb`` (:func:`detection.datasets.read_detection_image`):
every mode converts to 8-bit RGB by its rule, and every file is decoded before anything is written,
so a truncated or corrupt one is refused, by name, with the output folder untouched."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultPredictor
from detectron2.utils.visualizer import Visualizer

from .checkpoint import NASNetDetectionCheckpointer
from .datasets import read_detection_image

__all__ = ["Detector", "detections_to_json"]

logger = logging.getLogger(__name__)


class Detector(DefaultPredictor):
    """detectron2's ``DefaultPredictor`` (resize as at test time, one image at a time) with our
    checkpointer, so ``weights`` may also be a classification checkpoint or ``nasnet://...``."""

    def __init__(self, cfg: CfgNode, weights: str | None = None) -> None:
        cfg = cfg.clone()
        cfg.defrost()
        weights = weights or cfg.MODEL.WEIGHTS
        cfg.MODEL.WEIGHTS = ""  # loaded below by our checkpointer, which also reads classification files
        if not torch.cuda.is_available():
            cfg.MODEL.DEVICE = "cpu"
        super().__init__(cfg)
        if weights:
            self._load(cfg, weights)
        names = cfg.DATASETS.TEST or cfg.DATASETS.TRAIN
        self.metadata = MetadataCatalog.get(names[0]) if names else MetadataCatalog.get("__unused")
        classes = cfg.MODEL.RETINANET.NUM_CLASSES if cfg.MODEL.META_ARCHITECTURE == "RetinaNet" else cfg.MODEL.ROI_HEADS.NUM_CLASSES
        names_known = getattr(self.metadata, "thing_classes", None)
        if names_known is not None and len(names_known) != classes:
            logger.warning("the detector has %d classes but %s names %d; labels will be numbers (pass --dataset-json "
                           "with the training categories)", classes, names[0] if names else "the config", len(names_known))
            self.metadata = MetadataCatalog.get("__unused")

    def _load(self, cfg: CfgNode, weights: str) -> None:
        """Load, refusing a checkpoint whose tensors do not fit (fvcore would skip them and go on)."""
        checkpointer = NASNetDetectionCheckpointer(self.model, cfg=cfg)
        path = checkpointer.local_weights(weights)  # remote files only hash-checked; pickles only with the opt-in
        # detectron2's .pkl formats need its name matching; classification files convert strictly
        state = {} if path.endswith(".pkl") else checkpointer.read_state(path)
        model_state = self.model.state_dict()
        wrong = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(model_state[k].shape)}"
                 for k, v in state.items() if k in model_state and tuple(v.shape) != tuple(model_state[k].shape)]
        if wrong:
            raise ValueError(f"{weights} does not fit this config ({len(wrong)} tensors differ, e.g. {wrong[0]}); "
                             "check MODEL.ROI_HEADS.NUM_CLASSES (or pass --dataset-json) and the backbone settings")
        checkpointer.load(path)

    def detect_file(self, path: str | Path) -> tuple[np.ndarray, Any]:
        """(RGB image, detectron2 ``Instances`` on the CPU) for an image file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"image {path} does not exist")
        bgr = read_detection_image(path, "BGR")  # open_rgb's conversion; DefaultPredictor flips to cfg.INPUT.FORMAT
        instances = self(bgr)["instances"].to("cpu")
        return bgr[:, :, ::-1], instances


def detections_to_json(instances, class_names: list[str] | None) -> list[dict[str, Any]]:
    """One dict per detection; with a mask head also its mask as COCO RLE (``segmentation``)."""
    import pycocotools.mask as mask_util

    out = []
    boxes = instances.pred_boxes.tensor.tolist() if instances.has("pred_boxes") else []
    masks = instances.pred_masks.numpy().astype(np.uint8) if instances.has("pred_masks") else [None] * len(boxes)
    for box, score, cls, mask in zip(boxes, instances.scores.tolist(), instances.pred_classes.tolist(), masks):
        name = class_names[cls] if class_names and cls < len(class_names) else str(cls)
        detection = {"bbox_xyxy": [round(v, 2) for v in box], "score": round(score, 4), "class": cls, "label": name}
        if mask is not None:
            rle = mask_util.encode(np.asfortranarray(mask))
            detection["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
        out.append(detection)
    return out


def predict_files(cfg: CfgNode, weights: str | None, images: list[str], out_dir: str | Path,
                  score_threshold: float = 0.5) -> list[dict[str, Any]]:
    """Run the detector on each image; write ``<stem>.png`` (boxes and masks drawn) and ``detections.json``."""
    for path in images:
        if not Path(path).is_file():
            raise FileNotFoundError(f"image {path} does not exist")
    for path in images:  # decoded once up front, so a bad file is refused before any drawing is written
        read_detection_image(path, "BGR")
    detector = Detector(cfg, weights)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    class_names = getattr(detector.metadata, "thing_classes", None)
    results = []
    for path in images:
        rgb, instances = detector.detect_file(path)
        instances = instances[instances.scores >= score_threshold]
        drawing = Visualizer(rgb, detector.metadata).draw_instance_predictions(instances)
        png = out_dir / f"{Path(path).stem}.png"
        drawing.save(str(png))
        results.append({"image": str(path), "drawing": str(png), "detections": detections_to_json(instances, class_names)})
    (out_dir / "detections.json").write_text(json.dumps(results, indent=2) + "\n")
    logger.info("wrote %d drawings and detections.json to %s", len(results), out_dir)
    return results
