"""Whole torchvision detectors with NASNet backbones, by name, and their saved weights.

One builder for the five detectors torchvision has (``fasterrcnn``, ``maskrcnn``, ``retinanet``,
``fcos``, ``ssdlite``), shared by the ONNX export (``nasnet export detector --framework
torchvision``), the tests and the benchmarks. Each is wired as torchvision wires its ResNet-50 /
MobileNetV3 version: Faster and Mask R-CNN read an FPN over strides 4-32 plus a max-pooled P6,
RetinaNet and FCOS an FPN over strides 8-32 plus P6 and P7, SSDlite the stride-16 and stride-32
maps plus four extra blocks (:func:`~detection.torchvision.ssdlite.ssdlite_nasnet`). Anchors, heads and
post-processing are torchvision's defaults.

Weights of a whole detector are its ``state_dict()`` saved with ``torch.save``;
:func:`load_detector_weights` reads them with ``weights_only=True`` and refuses a file that does
not fit the model, saying how.

>>> model = torchvision_detector("retinanet", "nasnet_a_mobile", num_classes=91, pretrained=True)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from nasnet_backbones import Genotype

from .backbone import torchvision_backbone
from .ssdlite import ssdlite_nasnet

__all__ = ["DETECTOR_KINDS", "load_detector_weights", "torchvision_detector"]

DETECTOR_KINDS = ("fasterrcnn", "maskrcnn", "retinanet", "fcos", "ssdlite")

# The keyword each torchvision detector takes for its score threshold.
_SCORE_THRESH = {"fasterrcnn": "box_score_thresh", "maskrcnn": "box_score_thresh", "retinanet": "score_thresh",
                 "fcos": "score_thresh", "ssdlite": "score_thresh"}


def torchvision_detector(
    kind: str,
    backbone: str | Genotype | Path = "nasnet_a_mobile",
    num_classes: int = 91,
    *,
    cells: int = 4,
    filters: int = 44,
    pretrained: bool | str | Path = False,
    trainable_stages: int | None = None,
    fpn_channels: int = 256,
    min_size: int | None = None,
    max_size: int | None = None,
    score_thresh: float | None = None,
    backbone_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """A torchvision detector of ``kind`` (one of :data:`DETECTOR_KINDS`) on a NASNet backbone.

    Args:
        backbone: a registered model name, a :class:`Genotype` or a genotype JSON file (then
            ``cells`` per stack and base width ``filters``).
        num_classes: classes including the background.
        pretrained: ImageNet weights for a registered backbone (as :func:`create_model`).
        trainable_stages: how many of the backbone's deepest strides train (None: all).
        fpn_channels: FPN width (torchvision: 256; a multiple of 32 for ``fcos``); not used by ``ssdlite``.
        min_size, max_size: the transform's resizing (torchvision: 800 and 1333). ``ssdlite``
            resizes to a fixed square, of side ``min_size`` (default 320), and takes no ``max_size``.
        score_thresh: detections scoring lower are dropped (default: the detector's own).
        backbone_kwargs: more arguments for :func:`torchvision_backbone` (``norm_layer``, NASNet
            fields). Training from scratch wants ``{"bn_momentum": 0.1}``: NASNet's BatchNorm
            keeps TF's momentum (0.0003), whose running statistics take thousands of steps to settle;
            fine-tuning pretrained weights usually freezes them (``norm_layer=FrozenBatchNorm2d``).
        kwargs: more arguments for the torchvision detector class.
    """
    if kind not in DETECTOR_KINDS:
        raise ValueError(f"unknown detector {kind!r}; choose one of {', '.join(DETECTOR_KINDS)}")
    if score_thresh is not None:
        kwargs[_SCORE_THRESH[kind]] = score_thresh
    common = dict(pretrained=pretrained, trainable_stages=trainable_stages, cells=cells, filters=filters)
    if kind == "ssdlite":
        if max_size is not None:
            raise ValueError("ssdlite resizes every image to a fixed square; give its side as min_size, not max_size")
        return ssdlite_nasnet(backbone, num_classes, size=min_size or 320, backbone_kwargs=backbone_kwargs, **common,
                              **kwargs)
    common.update(backbone_kwargs or {})
    sizes = {k: v for k, v in (("min_size", min_size), ("max_size", max_size)) if v is not None}
    if kind in ("fasterrcnn", "maskrcnn"):
        body = torchvision_backbone(backbone, out_channels=fpn_channels, **common)
        cls = FasterRCNN if kind == "fasterrcnn" else MaskRCNN
        return cls(body, num_classes=num_classes, **sizes, **kwargs)
    body = torchvision_backbone(backbone, returned_strides=(8, 16, 32), out_channels=fpn_channels,
                                extra_blocks=LastLevelP6P7(fpn_channels, fpn_channels), **common)
    if kind == "fcos" and fpn_channels % 32:
        raise ValueError(f"FCOS's head normalises in 32 groups; fpn_channels must be a multiple of 32, "
                         f"not {fpn_channels}")
    cls = RetinaNet if kind == "retinanet" else FCOS
    return cls(body, num_classes=num_classes, **sizes, **kwargs)


def load_detector_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a whole detector's ``state_dict`` saved with ``torch.save``; one ``ValueError`` when
    the file is not such a state dict or does not fit ``model`` (missing, unexpected and
    differently shaped entries, a few of each)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"detector weights {path} do not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle and zip errors, non-tensor payloads refused by weights_only
        raise ValueError(f"{path} is not a state dict saved with torch.save: {exc}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a state dict (a dict of tensors, torch.save(model.state_dict()))")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} (model: {tuple(v.shape)})" for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = [f"{len(names)} {what}: {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}"
                 for what, names in (("missing", missing), ("unexpected", unexpected),
                                     ("with another shape", shapes)) if names]
        raise ValueError(f"{path} does not fit this {type(model).__name__} (another detector, backbone, width "
                         f"or class count?): " + "; ".join(parts))
    model.load_state_dict(state)
    return model
