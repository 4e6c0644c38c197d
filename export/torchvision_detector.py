"""Whole-detector ONNX export of torchvision detectors with NASNet backbones, verified.

Faster R-CNN, Mask R-CNN, RetinaNet, FCOS and SSDlite (:func:`detection.torchvision.torchvision_detector`)
are traced with the TorchScript-based exporter, as torchvision's own ``test/test_onnx.py`` does
(torch.export cannot capture torchvision's detection post-processing yet:
:data:`export.detections.DETECTOR_EXPORTER`), so one graph serves every image size. The
graph's input is one image as torchvision's detectors take it: CHW, float, RGB, 0-1, any size;
the model's transform (normalisation, resizing by ``min_size``/``max_size`` or, for SSDlite, to
its fixed square, padding to a multiple of 32) is inside. Outputs: ``boxes`` (N x 4, x0 y0 x1 y1
in the input image's pixels), ``classes`` (N, torchvision's ``labels``), ``scores`` (N), and for
Mask R-CNN ``masks`` (N x 1 x H x W probabilities, pasted into the input image).

Verification is :mod:`export.detections`' (shared with :mod:`export.detectron2_detector`): onnxruntime and PyTorch run on an image of another
size than the traced one and must give the same detections (same count and classes, scores
within ``score_atol``, boxes within ``box_rtol`` of the image size, mask probabilities within
``score_atol``), paired one to one rather than by position, since untrained heads give equal
scores that top-k and NMS may order either way. Only a verified graph is written.
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.onnx import operators
from torchvision.models.detection import transform as tv_transform

from nasnet_backbones.genotype import Genotype

from .conventions import InputConventions
from .detections import DETECTOR_EXPORTER, OUTPUTS, check_image, compare_dense, detector_report, match_detections, trace_and_run
from .align_channels import DEFAULT_ALIGNMENT, parse_alignment
from .exporters import resolve_opset
from .onnx_export import ExportReport, ExportVerificationError, verified_output

__all__ = ["OneImageDetector", "eager_resize", "export_named_torchvision_detector", "export_torchvision_detector"]

logger = logging.getLogger(__name__)


class OneImageDetector(nn.Module):
    """A torchvision detector as a graph can hold it: one CHW image in, a tuple of tensors out."""

    def __init__(self, model: nn.Module, masks: bool) -> None:
        super().__init__()
        self.model, self.masks = model, masks

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model([image])[0]
        result = (out["boxes"], out["labels"], out["scores"])
        return (*result, out["masks"]) if self.masks else result


_TORCHVISION_RESIZE = tv_transform._resize_image_and_masks


def _resize_like_eager(image: torch.Tensor, self_min_size: int, self_max_size: int, target: Any = None,
                       fixed_size: tuple[int, int] | None = None) -> tuple[torch.Tensor, Any]:
    """torchvision's resize, traced so the graph picks the size eager PyTorch picks.

    Eager PyTorch computes the resized size as ``int(side * scale)`` in float64; torchvision's own
    traced form does it in float32 and is a pixel short at some sizes (97 x 129 becomes 95 x 127
    instead of 96 x 127), which shifts every box. Here the size is computed in float64 in the graph
    and given to ``interpolate`` as a size, which samples exactly as the eager
    ``recompute_scale_factor=True`` call does."""
    if fixed_size is not None or target is not None:
        return _TORCHVISION_RESIZE(image, self_min_size, self_max_size, target, fixed_size)
    shape = operators.shape_as_tensor(image)[-2:].to(torch.float64)
    # One-element tensors, not 0-d ones: the exporter computes 0-d arithmetic in float32.
    sides = torch.cat([shape.min(0, keepdim=True)[0], shape.max(0, keepdim=True)[0]])
    # torch.full, not torch.tensor: the same constants, without the tracer's note about torch.tensor.
    limits = torch.cat([torch.full((1,), float(side), dtype=torch.float64) for side in (self_min_size, self_max_size)])
    scale = (limits / sides).min(0, keepdim=True)[0]
    size = torch.floor(shape * scale).to(torch.int64)
    resized = torch.nn.functional.interpolate(image[None], size=(size[0], size[1]), mode="bilinear",
                                              align_corners=False)
    return resized[0], target


@contextmanager
def eager_resize() -> Iterator[None]:
    """Within the block, torchvision's detection transform resizes with :func:`_resize_like_eager`."""
    tv_transform._resize_image_and_masks = _resize_like_eager
    try:
        yield
    finally:
        tv_transform._resize_image_and_masks = _TORCHVISION_RESIZE


def _has_masks(model: nn.Module) -> bool:
    roi_heads = getattr(model, "roi_heads", None)
    return roi_heads is not None and getattr(roi_heads, "has_mask", lambda: False)()


def export_torchvision_detector(model: nn.Module, path: str | Path, image_size: tuple[int, int] = (320, 416),
                                opset: int | None = None, score_atol: float = 1e-3, box_rtol: float = 5e-3,
                                verify_image: str | Path | None = None,
                                metadata: dict[str, Any] | None = None,
                                exporter: str = DETECTOR_EXPORTER,
                                align_channels: int | str = DEFAULT_ALIGNMENT) -> ExportReport:
    """Export ``model`` (a torchvision detector, its weights loaded) and verify it (see module doc).
    ``exporter`` defaults to the TorchScript-based one (:data:`export.detections.DETECTOR_EXPORTER` says why);
    ``align_channels`` (``"auto"``, ``"none"``, 8, 16) pads channel counts to onnxruntime's SIMD block
    (:mod:`export.align_channels`)."""
    path = Path(path)
    opset = resolve_opset(exporter, opset)
    align_channels = parse_alignment(align_channels)
    masks = _has_masks(model)
    outputs = [*OUTPUTS, "masks"] if masks else list(OUTPUTS)
    modes = {m: m.training for m in model.modules()}  # restored afterwards: the caller's model is theirs
    wrapper = OneImageDetector(model, masks).eval()
    h, w = image_size
    traced = torch.rand(3, h, w, generator=torch.Generator().manual_seed(0))
    check = check_image((h + 33, w - 31), verify_image, bgr=False) / 255.0  # other size and parity
    transform = model.transform
    meta = {"framework": "torchvision", "source_model": type(model).__name__,
            "backbone": getattr(model.backbone, "name", type(model.backbone).__name__),
            "input": "CHW float 0-1, RGB, any size (the model's transform inside)",
            "min_size": json.dumps(list(transform.min_size)), "max_size": json.dumps(transform.max_size),
            "fixed_size": json.dumps(transform.fixed_size), "image_mean": json.dumps(transform.image_mean),
            "image_std": json.dumps(transform.image_std), **_conventions(transform).to_metadata(),
            **{k: str(v) for k, v in (metadata or {}).items()}}
    try:
        with verified_output(path) as tmp:
            axes = {"image": {1: "height", 2: "width"}, **{name: {0: "detections"} for name in outputs}}
            if masks:
                axes["masks"] = {0: "detections", 2: "height", 3: "width"}
            # The resize fix is for the TorchScript tracer (torch.export keeps torchvision's sizes symbolic).
            resize = eager_resize() if exporter == "torchscript" else nullcontext()
            got = trace_and_run(wrapper, (traced,), tmp, outputs, axes, meta, check, opset, resize, exporter=exporter,
                                align_channels=align_channels)
            with torch.no_grad():
                expected = dict(zip(outputs, (t.numpy() for t in wrapper(check))))
            try:
                max_abs = match_detections(got, expected, score_atol, box_rtol * max(check.shape[1:]))
            except ExportVerificationError as exc:
                ties = int((np.diff(np.sort(expected["scores"])) <= 1e-5).sum())
                if ties:  # the likely cause, and what to do about it
                    raise ExportVerificationError(
                        f"{exc}. PyTorch's detections include {ties} pairs of (nearly) equal scores, which top-k "
                        "and NMS may order either way, so the two runtimes can keep different boxes; untrained "
                        "heads give such scores: export trained weights, or raise the score threshold") from None
                raise
            mask_err = compare_dense(got, expected, score_atol)
    finally:
        for m, training in modes.items():
            m.training = training
    report = detector_report(path, outputs, check, max_abs, box_rtol, score_atol, meta, len(expected["scores"]))
    if mask_err is not None:
        report.metadata["mask_max_abs_error"] = f"{mask_err:.2e}"
    logger.info("%s", report.summary())
    return report


def export_named_torchvision_detector(kind: str, output: str | Path, *, backbone: str | Genotype | Path = "nasnet_a_mobile",
                                      num_classes: int = 91, cells: int = 4, filters: int = 44,
                                      fpn_channels: int = 256, min_size: int | None = None,
                                      max_size: int | None = None, score_thresh: float | None = None,
                                      weights: str | Path | None = None, image_size: Sequence[int] = (320, 416),
                                      score_atol: float = 1e-3, box_rtol: float = 5e-3,
                                      verify_image: str | Path | None = None, opset: int | None = None,
                                      exporter: str = DETECTOR_EXPORTER,
                                      align_channels: int | str = DEFAULT_ALIGNMENT) -> ExportReport:
    """Build the torchvision detector ``kind`` (:func:`detection.torchvision.torchvision_detector`),
    load ``weights`` (a whole detector's state dict; None: random weights, seeded, so every export
    of a configuration is the same model), export and verify it to ``output``."""
    from detection.torchvision import load_detector_weights, torchvision_detector

    torch.manual_seed(0)  # without weights, every export of a configuration is the same model
    model = torchvision_detector(kind, backbone, num_classes, cells=cells, filters=filters, fpn_channels=fpn_channels,
                                 min_size=min_size, max_size=max_size, score_thresh=score_thresh)
    if weights:
        load_detector_weights(model, weights)
    else:
        logger.warning("no --weights: exporting %s with random weights", kind)
    meta = {"detector": kind, "backbone": str(backbone), "num_classes": num_classes, "weights": str(weights or "")}
    if str(backbone).endswith(".json"):
        meta.update(cells=cells, filters=filters)
    return export_torchvision_detector(model.eval(), output, tuple(image_size), score_atol=score_atol,
                                       box_rtol=box_rtol, verify_image=verify_image, metadata=meta, opset=opset,
                                       exporter=exporter, align_channels=align_channels)


def _conventions(transform: nn.Module) -> InputConventions:
    """A torchvision detector graph's input: 0-1 RGB, any size, resized inside to the transform's
    sides (its fixed square, or its last ``min_size`` and its ``max_size``)."""
    fixed = transform.fixed_size
    short = min(fixed) if fixed else int(transform.min_size[-1])
    longest = max(fixed) if fixed else int(transform.max_size)
    return InputConventions("torchvision", (0.0, 1.0), "RGB", "in_graph", True, shortest_side=short,
                            longest_side=longest)
