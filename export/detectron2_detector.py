"""Whole-detector ONNX export (Faster R-CNN, Mask R-CNN, Panoptic FPN, RetinaNet with NASNet backbones), verified.

detectron2's ``TracingAdapter`` flattens the model's dict/Instances interface; the TorchScript-based
exporter traces it with the NASNet padding in its size-independent form, so one graph serves every
image size. The graph's input is one image *as the model sees it*: CHW, float, in
``cfg.INPUT.FORMAT`` channel order, 0-255, already resized by the test-time transform (shortest
side ``INPUT.MIN_SIZE_TEST``); normalisation and padding to a multiple of 32 are inside. Outputs:
``boxes`` (N x 4, x0 y0 x1 y1 in that image's pixels), ``classes`` (N), ``scores`` (N); with a
mask head ``masks`` (N x 1 x M x M probabilities on the mask head's grid, to paste into the boxes);
for Panoptic FPN ``sem_seg`` (C x H' x W' logits at the padded size; crop to the image, then
combine with the instances as ``detectron2.modeling.meta_arch.panoptic_fpn`` does).

Verification runs onnxruntime and PyTorch on an image of another size than the traced one and
requires the same detections: same count and classes, scores within ``score_atol``, boxes within
``box_rtol`` of the image size, mask probabilities within ``score_atol``, semantic logits within
``score_atol`` of their scale. (Box decoding exponentiates the regression outputs, so float
rounding grows with them: with random weights boxes differ by up to about a pixel; trained
weights give far smaller differences.)
"""

from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Any, ContextManager

import numpy as np
import onnx
import torch

from nasnet_backbones.images import open_rgb
from nasnet_backbones.padding import traceable_padding

from .onnx_export import ExportReport, ExportVerificationError, graph_problems, save_checked, verified_output

__all__ = ["export_detector"]

logger = logging.getLogger(__name__)

OUTPUTS = ["boxes", "classes", "scores"]  # every detector's; masks and semantic logits where the model has them
_PER_DETECTION = {*OUTPUTS, "masks"}


# Instances fields as graph outputs. Mask R-CNN's masks are per-box probabilities on the mask
# head's grid (N x 1 x 28 x 28), to be pasted into the boxes, as detectron2's own exports give them.
_FIELD_NAMES = {"pred_boxes": "boxes", "pred_classes": "classes", "pred_masks": "masks", "scores": "scores"}


def _inference(model, inputs: list[dict]) -> list[dict]:
    """The model's outputs before resizing to the input image: instances, and for Panoptic FPN the
    semantic logits (C x H x W at the padded input size) that the panoptic combination reads."""
    from detectron2.modeling.meta_arch import PanopticFPN

    if isinstance(model, PanopticFPN):
        instances, sem_seg = model.inference(inputs, do_postprocess=False)
        return [{"instances": instances[0], "sem_seg": sem_seg[0]}]
    return [{"instances": model.inference(inputs, do_postprocess=False)[0]}]


def _output_names(model, image: torch.Tensor) -> list[str]:
    """Names of the flattened outputs, in TracingAdapter's order (dict keys and Instances fields sorted)."""
    with torch.no_grad(), traceable_padding():
        result = _inference(model, [{"image": image}])[0]
    names = []
    for key in sorted(result):
        if key != "instances":
            names.append(key)
            continue
        fields = sorted(result["instances"].get_fields())
        unknown = [f for f in fields if f not in _FIELD_NAMES]
        if unknown:
            raise ExportVerificationError(f"exporting detections with {', '.join(unknown)} is not supported "
                                          f"(supported: {', '.join(_FIELD_NAMES)})")
        names += [_FIELD_NAMES[f] for f in fields] + ["image_size"]
    return names


def _adapter(model: torch.nn.Module, image: torch.Tensor):
    from detectron2.export import TracingAdapter

    return TracingAdapter(model, [{"image": image}], _inference).eval()


def _check_image(size: tuple[int, int], image: str | Path | None, bgr: bool) -> torch.Tensor:
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


def export_detector(cfg, weights: str | None, path: str | Path, image_size: tuple[int, int] = (320, 416),
                    opset: int = 17, score_atol: float = 1e-3, box_rtol: float = 5e-3,
                    verify_image: str | Path | None = None) -> ExportReport:
    """Build the detector ``cfg`` describes, load ``weights``, export and verify (see module doc)."""
    from detectron2.modeling import build_model

    from detection.checkpoint import NASNetDetectionCheckpointer

    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)  # layers the weights do not cover start the same on every export
    model = build_model(cfg).eval()
    if weights:
        NASNetDetectionCheckpointer(model, cfg=cfg).load(weights)
    g = torch.Generator().manual_seed(0)
    h, w = image_size
    traced = torch.randint(0, 256, (3, h, w), generator=g).float()
    check = _check_image((h + 33, w - 31), verify_image, cfg.INPUT.FORMAT == "BGR")  # other size and parity
    adapter = _adapter(model, traced)
    names = _output_names(model, traced)
    path = Path(path)
    with verified_output(path) as tmp:
        axes = {"image": {1: "height", 2: "width"}, **{name: {0: "detections"} for name in names if name in _PER_DETECTION},
                **({"sem_seg": {1: "height", 2: "width"}} if "sem_seg" in names else {})}
        meta = {"source_config": cfg.MODEL.META_ARCHITECTURE, "backbone": cfg.MODEL.BACKBONE.NAME,
                "nasnet": cfg.MODEL.NASNET.GENOTYPE or cfg.MODEL.NASNET.ARCH, "weights": weights or "",
                "input": f"CHW float 0-255, {cfg.INPUT.FORMAT}, resized to shortest side {cfg.INPUT.MIN_SIZE_TEST}",
                "min_size_test": json.dumps(cfg.INPUT.MIN_SIZE_TEST), "max_size_test": json.dumps(cfg.INPUT.MAX_SIZE_TEST)}
        datasets = cfg.DATASETS.TEST or cfg.DATASETS.TRAIN
        if datasets:
            from detectron2.data import MetadataCatalog

            classes = getattr(MetadataCatalog.get(datasets[0]), "thing_classes", None)
            if classes:
                meta["class_names"] = json.dumps(list(classes))
        got = trace_and_run(adapter, adapter.flattened_inputs, tmp, names, axes, meta, check, opset)
        with torch.no_grad():
            expected = dict(zip(names, (t.numpy() for t in adapter(check))))
        max_abs = _match(got, expected, score_atol, box_rtol * max(check.shape[1:]))
        _compare_dense(got, expected, score_atol)
        if len(expected["scores"]) == 0:
            logger.warning("verification compared no detections (the model found nothing in the check image); "
                           "pass an image with objects it detects (--verify-image) for a meaningful check")
    # Here "abs" is the box error in pixels and "rel" that error over the image size (box_rtol).
    outputs = [n for n in names if n != "image_size"]
    report = ExportReport(str(path), [3, "height", "width"], outputs, [list(check.shape)], max_abs,
                          max_abs / max(check.shape[1:]), box_rtol, score_atol, metadata=meta)
    report.metadata = {**meta, "verified_detections": str(len(expected["scores"]))}
    logger.info("%s", report.summary())
    return report


def trace_and_run(module: torch.nn.Module, inputs: tuple, path: Path, names: list[str], axes: dict, meta: dict[str, str],
                  check: torch.Tensor, opset: int, context: ContextManager = nullcontext()) -> dict[str, np.ndarray]:
    """Trace a one-image detector (input ``image``) to ``path`` with NASNet's size-independent
    padding, refuse a graph that is not deployable, record ``meta``, and return onnxruntime's
    outputs, by name, on ``check``: the steps both frameworks' exports share."""
    import onnxruntime as ort

    with torch.no_grad(), traceable_padding(), context:
        torch.onnx.export(module, inputs, str(path), dynamo=False, opset_version=opset, input_names=["image"],
                          output_names=names, dynamic_axes=axes, do_constant_folding=True)
    module.eval()  # the exporter restores the mode it found; keep evaluating
    graph = onnx.load(str(path))
    problems = [p for p in graph_problems(graph) if "computed at run time" not in p]
    if problems:
        raise ExportVerificationError("the exported graph is not deployable: " + "; ".join(problems[:5]))
    save_checked(graph, meta, path)
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"image": check.numpy()})))
    except Exception as exc:  # onnxruntime's own error types
        raise ExportVerificationError(f"onnxruntime failed on the exported detector: {exc}") from None


def _compare(got: dict[str, np.ndarray], expected: dict[str, np.ndarray], score_atol: float, box_atol: float) -> float:
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


def _match(got: dict[str, np.ndarray], expected: dict[str, np.ndarray], score_atol: float, box_atol: float) -> float:
    """:func:`_compare`'s rules (same count and classes, scores within ``score_atol``,
    boxes within ``box_atol`` pixels), with detections paired one to one rather than by position:
    detections of equal score (common with untrained heads) come out of top-k and NMS in either
    order. Each PyTorch detection, in order, takes the unpaired onnxruntime detection of its class
    and score whose box is closest. Returns the largest box difference; reorders ``got`` to match."""
    try:
        return _compare(got, expected, score_atol, box_atol)
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
    for key in _PER_DETECTION & set(got):
        got[key] = got[key][order]
    return _compare(got, expected, score_atol, box_atol)


def _compare_dense(got: dict[str, np.ndarray], expected: dict[str, np.ndarray], atol: float) -> float | None:
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


def export_detector_from_args(args: Any) -> ExportReport:
    from detection.engine import merge_overrides
    from detection.model_zoo import get_config

    from detection.checkpoint import check_weights

    cfg = get_config(args.config_file)
    merge_overrides(cfg, args.opts)
    if getattr(args, "allow_pickle", False):
        cfg.MODEL.NASNET.ALLOW_PICKLE_WEIGHTS = True
    weights = args.weights if args.weights is not None else (cfg.MODEL.WEIGHTS or None)
    check_weights(weights or "", allow_pickle=cfg.MODEL.NASNET.ALLOW_PICKLE_WEIGHTS,
                  flag="--weights" if args.weights is not None else "MODEL.WEIGHTS")  # before the model is built
    return export_detector(cfg, weights, args.output, tuple(args.image_size), score_atol=args.score_atol,
                           box_rtol=args.box_rtol, verify_image=args.verify_image)
