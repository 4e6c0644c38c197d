"""What the whole-detector exports of both frameworks share.

:mod:`export.detectron2_detector` and :mod:`export.torchvision_detector` each wrap their
framework's model as a one-image module; everything after that is here: the output names
(:data:`OUTPUTS`), the exporter they use (:data:`DETECTOR_EXPORTER`), the verification image
(:func:`check_image`: the user's, or drawn shapes), exporting and running the graph in
onnxruntime (:func:`trace_and_run`), the comparison with PyTorch (:func:`match_detections` pairs
detections one to one, :func:`compare_dense` checks masks and semantic logits) and the report
(:func:`detector_report`).
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path
from typing import ContextManager

import numpy as np
import onnx
import torch

from nasnet_backbones.images import open_rgb

from .align_channels import DEFAULT_ALIGNMENT, align_channels as align_graph, alignment_metadata
from .exporters import EXPORTER_KEY, exporter_metadata, write_onnx
from .onnx_export import ExportReport, ExportVerificationError, graph_problems, save_checked

__all__ = ["DETECTOR_EXPORTER", "OUTPUTS", "PER_DETECTION", "check_image", "compare_dense", "compare_detections", "detector_report",
           "match_detections", "trace_and_run"]

logger = logging.getLogger(__name__)

OUTPUTS = ["boxes", "classes", "scores"]  # every detector's; masks and semantic logits where the model has them

# Whole detectors stay on the TorchScript-based exporter: torch.export (under the dynamo exporter)
# cannot capture either framework's post-processing, which branches in Python on how many boxes
# survive: torchvision's batched_nms (`boxes.numel() > 4000`, then `boxes.numel() == 0`;
# pytorch/vision#9321, pytorch/pytorch#146152) and detectron2's find_top_rpn_proposals
# (`if not valid_mask.all()`). Checked with torch 2.14.1, torchvision 0.29.1, detectron2 0.7.2;
# `--exporter dynamo` tries it anyway and says where it stops.
DETECTOR_EXPORTER = "torchscript"
PER_DETECTION = {*OUTPUTS, "masks"}  # the outputs with one entry per detection


def check_image(size: tuple[int, int], image: str | Path | None, bgr: bool) -> torch.Tensor:
    """The verification image at ``size``: the user's, or drawn shapes (something a detector may find;
    pure noise usually yields no detections, and comparing no boxes proves nothing)."""
    from PIL import Image

    if image is not None:
        if not Path(image).is_file():
            raise FileNotFoundError(f"verification image {image} does not exist")
        img = open_rgb(image)
    else:
        from detection.synthetic import draw_shapes_image

        img = draw_shapes_image(np.random.default_rng(0), max(size))[0]
    arr = np.asarray(img.resize((size[1], size[0]), Image.BILINEAR), dtype=np.float32)[:, :, ::-1 if bgr else 1]
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def trace_and_run(module: torch.nn.Module, inputs: tuple, path: Path, names: list[str], axes: dict, meta: dict[str, str],
                  check: torch.Tensor, opset: int, context: ContextManager = nullcontext(), *,
                  exporter: str, align_channels: int | str = DEFAULT_ALIGNMENT) -> dict[str, np.ndarray]:
    """Export a one-image detector (input ``image``, any size) to ``path`` with ``exporter``
    (:mod:`export.exporters`), refuse a graph that is not deployable, pad its channel counts to
    ``align_channels`` (:mod:`export.align_channels`: the backbone and heads; box and mask
    post-processing read the real channels), record ``meta``, the exporter and the alignment, and
    return onnxruntime's outputs, by name, on ``check``: the steps both frameworks' exports share.
    ``context`` is entered around the export."""
    import onnxruntime as ort

    with context:
        write_onnx(module, inputs, path, exporter=exporter, opset=opset, input_names=["image"], output_names=names,
                   dynamic_axes=axes)
    module.eval()  # the exporter restores the mode it found; keep evaluating
    graph = onnx.load(str(path))
    # Pad amounts follow the image size, so they are graph arithmetic here; verification checks them.
    problems = [p for p in graph_problems(graph) if "computed at run time" not in p]
    if problems:
        raise ExportVerificationError("the exported graph is not deployable: " + "; ".join(problems[:5]))
    meta.update(exporter_metadata(exporter))
    meta.update(alignment_metadata(align_graph(graph, align_channels)))
    save_checked(graph, meta, path)
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"image": check.numpy()})))
    except Exception as exc:  # onnxruntime's own error types
        raise ExportVerificationError(f"onnxruntime failed on the exported detector: {exc}") from None


def compare_detections(got: dict[str, np.ndarray], expected: dict[str, np.ndarray], score_atol: float,
                       box_atol: float) -> float:
    """Detections compared by position: the same count and classes, finite boxes and scores, scores
    within ``score_atol`` and boxes within ``box_atol`` pixels. Returns the largest box difference."""
    if got["scores"].shape != expected["scores"].shape:
        raise ExportVerificationError(f"onnxruntime found {len(got['scores'])} detections, PyTorch "
                                      f"{len(expected['scores'])}")
    if not np.array_equal(got["classes"], expected["classes"]):
        raise ExportVerificationError("onnxruntime and PyTorch disagree on the detected classes")
    if not all(np.isfinite(got[k]).all() for k in ("boxes", "scores")):
        raise ExportVerificationError("onnxruntime gives NaN or inf boxes or scores")
    score_err = float(np.abs(got["scores"] - expected["scores"]).max(initial=0.0))
    box_err = float(np.abs(got["boxes"] - expected["boxes"]).max(initial=0.0))
    if not (score_err <= score_atol and box_err <= box_atol):
        raise ExportVerificationError(f"onnxruntime differs from PyTorch: scores by {score_err:.2e} (tolerance "
                                      f"{score_atol:g}), boxes by {box_err:.3f} px (tolerance {box_atol:.3f} px)")
    return box_err


def match_detections(got: dict[str, np.ndarray], expected: dict[str, np.ndarray], score_atol: float, box_atol: float) -> float:
    """:func:`compare_detections`'s rules (same count and classes, scores within ``score_atol``,
    boxes within ``box_atol`` pixels), with detections paired one to one rather than by position:
    detections of equal score (common with untrained heads) come out of top-k and NMS in either
    order. Each PyTorch detection, in order, takes the unpaired onnxruntime detection of its class
    and score whose box is closest. Returns the largest box difference; reorders ``got`` to match."""
    try:
        return compare_detections(got, expected, score_atol, box_atol)
    except ExportVerificationError:
        if got["scores"].shape != expected["scores"].shape:
            raise
    free = np.ones(len(got["scores"]), dtype=bool)
    order = np.empty(len(free), dtype=np.int64)
    for i, (box, cls, score) in enumerate(zip(expected["boxes"], expected["classes"], expected["scores"])):
        err = np.abs(got["boxes"] - box).max(axis=1)
        ok = free & (got["classes"] == cls) & (np.abs(got["scores"] - score) <= score_atol) & (err <= box_atol)
        if not ok.any():
            raise ExportVerificationError(
                f"onnxruntime has no detection matching PyTorch's detection {i} (class {int(cls)}, score "
                f"{float(score):.4f}, box {np.round(box, 1).tolist()}) within scores {score_atol:g} and boxes "
                f"{box_atol:.3f} px")
        j = int(np.flatnonzero(ok)[np.argmin(err[ok])])
        free[j], order[i] = False, j
    for key in PER_DETECTION & set(got):
        got[key] = got[key][order]
    return compare_detections(got, expected, score_atol, box_atol)


def compare_dense(got: dict[str, np.ndarray], expected: dict[str, np.ndarray], atol: float) -> float | None:
    """Mask probabilities within ``atol``; semantic logits within ``atol`` relative to their scale
    (``got`` already paired with ``expected``). Returns the masks' largest difference, if any."""
    mask_err = None
    for name in ("masks", "sem_seg"):
        if name not in expected:
            continue
        if got[name].shape != expected[name].shape:
            raise ExportVerificationError(f"onnxruntime gives {name} of shape {got[name].shape}, PyTorch "
                                          f"{expected[name].shape}")
        scale = 1.0 if name == "masks" else max(1.0, float(np.abs(expected[name]).max(initial=0.0)))
        err = float(np.abs(got[name] - expected[name]).max(initial=0.0))
        if not err <= atol * scale:  # NaN fails too
            raise ExportVerificationError(f"onnxruntime differs from PyTorch: {name} by {err:.2e} "
                                          f"(tolerance {atol * scale:.2e})")
        if name == "masks":
            mask_err = err
    return mask_err


def detector_report(path: str | Path, outputs: list[str], check: torch.Tensor, max_abs: float, box_rtol: float,
                    score_atol: float, metadata: dict[str, str], detections: int) -> ExportReport:
    """The report of a verified detector export: here "abs" is the box error in pixels and "rel"
    that error over the check image's size (``box_rtol``); ``metadata`` gains the number of
    detections compared, and a warning says when there were none (a check that proves little)."""
    if detections == 0:
        logger.warning("verification compared no detections (the model found nothing in the check image); "
                       "pass an image with objects it detects (--verify-image) for a meaningful check")
    side = max(check.shape[1:])
    report = ExportReport(str(path), [3, "height", "width"], [n for n in outputs if n != "image_size"],
                          [list(check.shape)], max_abs, max_abs / side, box_rtol, score_atol, metadata=metadata,
                          exporter=metadata.get(EXPORTER_KEY, ""))
    report.metadata = {**metadata, "verified_detections": str(detections)}
    return report
