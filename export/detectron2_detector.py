"""Whole-detector ONNX export (Faster R-CNN, Mask R-CNN, Panoptic FPN, RetinaNet with NASNet backbones), verified.

detectron2's ``TracingAdapter`` flattens the model's dict/Instances interface; the TorchScript-based
exporter traces it (torch.export cannot capture detectron2's proposal filtering yet:
:data:`export.detections.DETECTOR_EXPORTER`), so one graph serves every image size. The graph's input is one image *as the model sees it*: CHW, float, in
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
from pathlib import Path
from typing import Any, Sequence

import torch

from .conventions import InputConventions
from .detections import DETECTOR_EXPORTER, PER_DETECTION, check_image, compare_dense, detector_report, match_detections, trace_and_run
from .align_channels import DEFAULT_ALIGNMENT, parse_alignment
from .exporters import resolve_opset
from .onnx_export import ExportReport, ExportVerificationError, verified_output

__all__ = ["detector_config", "export_detector", "export_detector_from_config"]

logger = logging.getLogger(__name__)


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
    with torch.no_grad():
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


def export_detector(cfg, weights: str | None, path: str | Path, image_size: tuple[int, int] = (320, 416),
                    opset: int | None = None, score_atol: float = 1e-3, box_rtol: float = 5e-3,
                    verify_image: str | Path | None = None, exporter: str = DETECTOR_EXPORTER,
                    align_channels: int | str = DEFAULT_ALIGNMENT) -> ExportReport:
    """Build the detector ``cfg`` describes, load ``weights``, export and verify (see module doc).
    ``exporter`` defaults to the TorchScript-based one (:data:`export.detections.DETECTOR_EXPORTER` says why);
    ``align_channels`` (``"auto"``, ``"none"``, 8, 16) pads channel counts to onnxruntime's SIMD block
    (:mod:`export.align_channels`)."""
    from detection.checkpoint import build_cpu_detector

    opset = resolve_opset(exporter, opset)
    align_channels = parse_alignment(align_channels)
    model = build_cpu_detector(cfg, weights)  # layers the weights do not cover start the same on every export
    g = torch.Generator().manual_seed(0)
    h, w = image_size
    traced = torch.randint(0, 256, (3, h, w), generator=g).float()
    check = check_image((h + 33, w - 31), verify_image, cfg.INPUT.FORMAT == "BGR")  # other size and parity
    adapter = _adapter(model, traced)
    names = _output_names(model, traced)
    path = Path(path)
    with verified_output(path) as tmp:
        axes = {"image": {1: "height", 2: "width"}, **{name: {0: "detections"} for name in names if name in PER_DETECTION},
                **({"sem_seg": {1: "height", 2: "width"}} if "sem_seg" in names else {})}
        meta = {"source_config": cfg.MODEL.META_ARCHITECTURE, "backbone": cfg.MODEL.BACKBONE.NAME,
                "nasnet": cfg.MODEL.NASNET.GENOTYPE or cfg.MODEL.NASNET.ARCH, "weights": weights or "",
                "input": f"CHW float 0-255, {cfg.INPUT.FORMAT}, resized to shortest side {cfg.INPUT.MIN_SIZE_TEST}",
                "min_size_test": json.dumps(cfg.INPUT.MIN_SIZE_TEST), "max_size_test": json.dumps(cfg.INPUT.MAX_SIZE_TEST),
                **InputConventions("detectron2", (0.0, 255.0), cfg.INPUT.FORMAT, "shortest_side", True,
                                   shortest_side=int(cfg.INPUT.MIN_SIZE_TEST),
                                   longest_side=int(cfg.INPUT.MAX_SIZE_TEST)).to_metadata()}
        datasets = cfg.DATASETS.TEST or cfg.DATASETS.TRAIN
        if datasets:
            from detectron2.data import MetadataCatalog

            classes = getattr(MetadataCatalog.get(datasets[0]), "thing_classes", None)
            if classes:
                meta["class_names"] = json.dumps(list(classes))
        got = trace_and_run(adapter, adapter.flattened_inputs, tmp, names, axes, meta, check, opset, exporter=exporter,
                            align_channels=align_channels)
        with torch.no_grad():
            expected = dict(zip(names, (t.numpy() for t in adapter(check))))
        max_abs = match_detections(got, expected, score_atol, box_rtol * max(check.shape[1:]))
        compare_dense(got, expected, score_atol)
    report = detector_report(path, names, check, max_abs, box_rtol, score_atol, meta, len(expected["scores"]))
    logger.info("%s", report.summary())
    return report


def export_detector_from_config(config_file: str, output: str | Path, *, weights: str | None = None,
                                opts: Sequence[str] = (), allow_pickle: bool = False,
                                image_size: tuple[int, int] = (320, 416), score_atol: float = 1e-3,
                                box_rtol: float = 5e-3, verify_image: str | Path | None = None,
                                opset: int | None = None, exporter: str = DETECTOR_EXPORTER,
                                align_channels: int | str = DEFAULT_ALIGNMENT) -> ExportReport:
    """:func:`export_detector` of a config file or shipped config name with ``opts`` overrides
    (``KEY VALUE`` pairs): ``weights`` None takes the config's ``MODEL.WEIGHTS``, ``""`` none.
    The weights are checked (pickle refused unless ``allow_pickle``) before the model is built."""
    cfg, chosen = detector_config(config_file, opts=opts, weights=weights, allow_pickle=allow_pickle)
    return export_detector(cfg, chosen, output, tuple(image_size), score_atol=score_atol, box_rtol=box_rtol,
                           verify_image=verify_image, opset=opset, exporter=exporter, align_channels=align_channels)


def detector_config(config_file: str, *, opts: Sequence[str] = (), weights: str | None = None,
                    allow_pickle: bool = False) -> tuple[Any, str]:
    """The config of a config file or shipped config name with ``opts`` overrides (``KEY VALUE``
    pairs), and the weights to load: ``weights``, or the config's ``MODEL.WEIGHTS`` when it is
    None (``""``: none). The weights are checked (pickle refused unless ``allow_pickle`` or the
    config allows it) before anything is built, with the error naming ``--weights`` or ``MODEL.WEIGHTS``."""
    from detection.checkpoint import check_weights
    from detection.engine import merge_overrides
    from detection.model_zoo import get_config

    cfg = get_config(config_file)
    merge_overrides(cfg, list(opts))
    if allow_pickle:
        cfg.MODEL.NASNET.ALLOW_PICKLE_WEIGHTS = True
    chosen = weights if weights is not None else (cfg.MODEL.WEIGHTS or "")
    check_weights(chosen, allow_pickle=cfg.MODEL.NASNET.ALLOW_PICKLE_WEIGHTS,
                  flag="--weights" if weights is not None else "MODEL.WEIGHTS")
    return cfg, chosen
