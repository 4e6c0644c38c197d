"""Static INT8 quantization (QDQ) of exported models with onnxruntime.quantization.

Calibration reads real images (any folder, recursively) prepared exactly as the graph's input
conventions say (:mod:`export.conventions`: input size, resize, mean/std, value range, channel order), or generated ones (``"synthetic"``: smooth random images,
for when no data is at hand). Held-out inputs, never seen in calibration, then measure how far
INT8 moves from FP32: top-1 agreement for a classifier's ``logits``, relative error otherwise.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import onnx

from nasnet_backbones.errors import first_line
from nasnet_backbones.host import host_has_vnni
from nasnet_backbones.images import open_rgb

from .conventions import InputConventions, read_conventions
from .graph_edits import readers_of
from .int8_rewrites import keep_float, pools_as_convolutions
from .layout_folds import fold_concat_batchnorm
from .onnx_export import ExportVerificationError, graph_constants, refuse_own_input, verified_output

__all__ = ["QuantizationReport", "QuantizationCheckError", "calibration_inputs", "quantize_onnx", "run_outputs",
           "load_exported", "DEFAULT_FLOAT_OPS", "DEFAULT_MIN_AGREEMENT", "DEFAULT_MAX_REL_ERROR", "DEFAULT_MIN_BOX_IOU"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}

# The gates an INT8 file must pass before it is written (see quantize_onnx). A trained classifier
# keeps its top-1 on well over 90% of images; a wrong calibration or a broken graph drops to chance.
DEFAULT_MIN_AGREEMENT = 0.9  # classifiers: share of held-out inputs with FP32's top-1 class
DEFAULT_MAX_REL_ERROR = 0.5  # other outputs (backbone features): worst error over the output's FP32 scale
DEFAULT_MIN_BOX_IOU = 0.5  # detectors: mean IoU of FP32's confident boxes with INT8's of the same class
#: Ops whose outputs stay float in the INT8 graph (see keep_float): their QLinear kernels lose to float.
DEFAULT_FLOAT_OPS = ("AveragePool",)


class QuantizationCheckError(ExportVerificationError):
    """The INT8 graph is too far from FP32 on the held-out inputs; it was not written."""


@dataclass
class QuantizationReport:
    path: str
    fp32_bytes: int
    int8_bytes: int
    size_ratio: float  # fp32 / int8
    calibration_images: int
    held_out_images: int
    top1_agreement: float | None  # classifiers
    max_rel_error: float  # worst output, relative to its FP32 scale (classifiers, backbones)
    mean_box_iou: float | None  # detectors: FP32 detections (score >= 0.5) against INT8's, same class
    per_channel: bool

    def summary(self) -> str:
        agreement = f", top-1 agreement with FP32 {100 * self.top1_agreement:.1f}%" if self.top1_agreement is not None else ""
        if self.mean_box_iou is not None:
            return (f"{self.path}: {self.int8_bytes / 1e6:.2f} MB ({self.size_ratio:.1f}x smaller than FP32), mean IoU "
                    f"of matched boxes with FP32 {self.mean_box_iou:.3f} on {self.held_out_images} held-out images")
        return (f"{self.path}: {self.int8_bytes / 1e6:.2f} MB ({self.size_ratio:.1f}x smaller than FP32){agreement}, "
                f"max relative output error {self.max_rel_error:.3f} on {self.held_out_images} held-out inputs")


def _metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


# Metadata this package writes and reads back as JSON (sizes, mean/std); a file whose values do not
# parse is refused when loaded, not halfway through calibration.
_JSON_METADATA = ("input_size", "resize_size", "mean", "std", "interpolation", "min_size_test", "max_size_test",
                  "min_size", "max_size", "fixed_size")


def _image_input(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    """The graph's inputs that are not initializers (old exporters list the weights as inputs too)."""
    weights = {init.name for init in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in weights]


def load_exported(path: str | Path, what: str = "model") -> onnx.ModelProto:
    """The ONNX graph at ``path``, checked to be one that quantization, the ORT conversion and the
    benchmark can feed: a readable file that ``onnx.checker`` accepts, with one float image input
    (N x C x H x W, or C x H x W for a whole detector) and readable metadata. Anything else is one
    ``ValueError`` naming the file (``what`` says which argument it came from), before anything is written."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path}: no such file" if not path.exists() else f"{what} {path} is not a file")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # protobuf's DecodeError, onnx's ValidationError, external-data errors
        cause = first_line(exc)
        raise ValueError(f"{what} {path} is not a readable ONNX model ({cause}); pass a .onnx file written by "
                         "`nasnet export`") from None
    inputs = _image_input(model)
    if len(inputs) != 1:
        raise ValueError(f"{what} {path} has {len(inputs)} inputs ({', '.join(i.name for i in inputs) or 'none'}); "
                         "only graphs with one image input (as `nasnet export` writes them) are supported")
    tensor = inputs[0].type.tensor_type
    dims = [d.dim_value or None for d in tensor.shape.dim] if inputs[0].type.HasField("tensor_type") else []
    if tensor.elem_type != onnx.TensorProto.FLOAT or len(dims) not in (3, 4) or not dims[-3]:
        shape = [d or "?" for d in dims]
        raise ValueError(f"{what} {path}: input {inputs[0].name} is {onnx.TensorProto.DataType.Name(tensor.elem_type)} "
                         f"{shape}; an image input is float, N x C x H x W (or C x H x W for a detector) with a "
                         "fixed channel count")
    meta = _metadata(model)
    for key in _JSON_METADATA:
        if key in meta:
            try:
                json.loads(meta[key])
            except ValueError:
                raise ValueError(f"{what} {path}: metadata {key}={meta[key]!r} is not a JSON value; re-export the "
                                 "model with `nasnet export`") from None
    try:
        conventions = read_conventions(model)
    except ValueError as exc:
        raise ValueError(f"{what} {path}: {exc}; re-export the model with `nasnet export`") from None
    if len(dims) == 4 and conventions.input_size is None:
        raise ValueError(f"{what} {path} takes any input size and its metadata records no input_size (an integer), "
                         "so there is no size to calibrate and check at; export it with `nasnet export` "
                         "(which records one) or with a fixed --input-size")
    return model


def _input_shape(model: onnx.ModelProto, conventions: InputConventions) -> tuple[int, int, int, int]:
    """(batch, channels, height, width) to feed: a dynamic batch becomes 1, a dynamic size the
    input size the conventions record."""
    dims = [d.dim_value for d in _image_input(model)[0].type.tensor_type.shape.dim]
    batch, channels, height, width = dims
    if not height or not width:
        if not conventions.input_size:
            raise ValueError("the model's input size is dynamic and its metadata does not record one")
        height = width = conventions.input_size
    return batch or 1, channels, height, width


def is_detector(model: onnx.ModelProto) -> bool:
    """A whole-detector graph from ``export_detector``: one CHW image in, boxes out."""
    return len(_image_input(model)[0].type.tensor_type.shape.dim) == 3


def detector_inputs(model: onnx.ModelProto, source: str | Path, count: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Images for a detector graph: drawn shapes for ``"synthetic"``, else a folder, prepared by the
    graph's input conventions: resized to their shortest side (the longest at most their longest
    side; for detectron2 its test transform's sizes, for torchvision the size its in-graph
    transform resizes to), in their channel order and value range (detectron2 0-255, torchvision 0-1)."""
    from PIL import Image

    conventions = read_conventions(model)
    short, longest = conventions.shortest_side, conventions.longest_side
    bgr = conventions.channel_order == "BGR"
    if str(source) == "synthetic":
        from detection.synthetic import draw_shapes_image

        rng = np.random.default_rng(seed)
        images = (draw_shapes_image(rng, short)[0] for _ in range(count))
    else:
        folder = Path(source)
        if not folder.is_dir():
            raise FileNotFoundError(f"calibration folder {folder} does not exist (or pass 'synthetic')")
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(files) < count:
            raise ValueError(f"{folder} has {len(files)} images; calibration and the held-out check need {count}")
        images = (open_rgb(f) for f in files[:count])
    for img in images:
        w, h = img.size
        scale = min(short / min(h, w), longest / max(h, w))
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.float32)[:, :, ::-1 if bgr else 1]
        yield np.ascontiguousarray(arr.transpose(2, 0, 1)) / (255.0 / conventions.pixel_max)


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt, rb = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2:] - x[:, :2]).clip(0).prod(-1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def matched_box_iou(fp32: list[list[np.ndarray]], int8: list[list[np.ndarray]], min_score: float = 0.5) -> float:
    """Mean, over FP32 detections scoring at least ``min_score``, of the best IoU with an INT8
    detection of the same class (0 when there is none)."""
    ious = []
    for (boxes, classes, scores, *_), (qboxes, qclasses, *_rest) in zip(fp32, int8):
        for box, cls in zip(boxes[scores >= min_score], classes[scores >= min_score]):
            same = qboxes[qclasses == cls]
            ious.append(float(_box_iou(box[None], same).max()) if len(same) else 0.0)
    return float(np.mean(ious)) if ious else float("nan")


def calibration_inputs(model: onnx.ModelProto, source: str | Path, count: int, seed: int = 0) -> Iterator[np.ndarray]:
    """``count`` preprocessed (1, C, H, W) float32 inputs from an image folder or ``"synthetic"``."""
    if is_detector(model):
        yield from detector_inputs(model, source, count, seed)
        return
    conventions = read_conventions(model)
    batch, channels, height, width = _input_shape(model, conventions)
    rng = np.random.default_rng(seed)
    if str(source) == "synthetic":
        import torch
        import torch.nn.functional as F

        for _ in range(count):
            low = torch.from_numpy(rng.uniform(-1, 1, (batch, channels, 8, 8)).astype(np.float32))
            yield F.interpolate(low, size=(height, width), mode="bilinear", align_corners=False).numpy()
        return
    folder = Path(source)
    if not folder.is_dir():
        raise FileNotFoundError(f"calibration folder {folder} does not exist (or pass 'synthetic')")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < count * batch:
        raise ValueError(f"{folder} has {len(files)} images; calibration and the held-out check need {count * batch}")
    from nasnet_backbones.transforms import ClassificationEval

    resize = conventions.resize_size or int(height / 0.875)
    transform = ClassificationEval(height, resize, conventions.interpolation, list(conventions.mean or (0.5,) * 3),
                                   list(conventions.std or (0.5,) * 3))
    order = rng.permutation(len(files))
    for start in range(0, count * batch, batch):
        images = []
        for index in order[start : start + batch]:
            images.append(transform(open_rgb(files[index])).numpy())
        yield np.stack(images)


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a list of inputs."""

    def __init__(self, name: str, inputs: list[np.ndarray]) -> None:
        self.name, self._it = name, iter(inputs)

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._it, None)
        return None if x is None else {self.name: x}

    def rewind(self) -> None:  # pragma: no cover - not used by quantize_static's MinMax calibration
        raise NotImplementedError


def run_outputs(path: str | Path, inputs: list[np.ndarray], outputs: list[str] | None = None) -> list[list[np.ndarray]]:
    """Each input's outputs (all, or the named ones in that order)."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return [session.run(outputs, {name: x}) for x in inputs]
    except Exception as exc:  # onnxruntime's own error types
        cause = first_line(exc)
        raise ExportVerificationError(f"onnxruntime cannot run {path}: {cause}") from None


# Ops that pass values through unchanged (a -inf padding value travels through them to the pooling).
_PASS_THROUGH = {"Slice", "Pad", "Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Concat"}


def infinite_padding_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes that carry a non-finite padding value: ``Pad`` nodes padding with -inf
    (max pooling's TF 'SAME' padding where the exporter did not fold it into the pooling, as with
    ``--dynamic-size``), the ops that pass those values on (the parity Slice), and the pooling that
    consumes them. The structure is the same from both exporters; nodes are matched by op type and
    constant value, never by the exporter's node names.

    They must stay FP32: MinMax calibration of a tensor holding -inf gives an infinite range, so
    its scale and zero point are meaningless and every value after it is wrong (this is why the
    INT8 of a dynamic-size export agreed with FP32 on 0% of images)."""
    consts = graph_constants(model)
    consumers = readers_of(model)
    excluded: list[str] = []
    for node in model.graph.node:
        value = consts.get(node.input[2]) if node.op_type == "Pad" and len(node.input) > 2 and node.input[2] else None
        if value is None or np.isfinite(value).all():
            continue
        frontier = [node]
        while frontier:
            current = frontier.pop()
            if current.name in excluded:
                continue
            excluded.append(current.name)
            if current.op_type in _PASS_THROUGH:
                frontier += [c for out in current.output for c in consumers.get(out, [])]
    return excluded


def _name_nodes(path: Path) -> onnx.ModelProto:
    """Give every node of the graph at ``path`` a unique name (exclusions are by name); saves it back."""
    model = onnx.load(str(path))
    seen: set[str] = set()
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{index}"
        seen.add(node.name)
    onnx.save(model, str(path))
    return model


def _agreement(fp32_out: list[list[np.ndarray]], int8_out: list[list[np.ndarray]]) -> float:
    """Share of held-out inputs (each image of a batch counts) where INT8's top-1 class is FP32's."""
    return float(np.mean(np.concatenate([a[0].argmax(1) == b[0].argmax(1) for a, b in zip(fp32_out, int8_out)])))


def _max_rel_error(fp32_out: list[list[np.ndarray]], int8_out: list[list[np.ndarray]]) -> float:
    """The worst output's max error relative to its FP32 scale; inf when INT8 gives NaN or inf."""
    worst = 0.0
    for fa, fb in zip(fp32_out, int8_out):
        for a, b in zip(fa, fb):
            if not np.isfinite(b).all():
                return float("inf")
            worst = max(worst, float(np.abs(b - a).max() / max(np.abs(a).max(), 1e-12)))
    return worst


_ADVICE = ("try per-channel weight scales (--per-channel), more calibration images (--num-calibration), "
           "calibration images like the deployment's (--calib FOLDER rather than 'synthetic'), or, if this "
           "accuracy is acceptable, {flag}")


def _gate(report: QuantizationReport, min_agreement: float, max_rel_error: float, min_box_iou: float) -> None:
    """Raise :class:`QuantizationCheckError` when the measured agreement misses its threshold."""
    held = f"on {report.held_out_images} held-out inputs"
    if report.mean_box_iou is not None:
        if np.isnan(report.mean_box_iou):
            logger.warning("%s: FP32 found no detections scoring at least the box score threshold on the %d held-out "
                           "images, so the box agreement was not measured; calibrate with images it detects "
                           "objects in (--calib FOLDER)", report.path, report.held_out_images)
        elif report.mean_box_iou < min_box_iou:
            raise QuantizationCheckError(
                f"{report.path} not written: mean IoU of INT8's boxes with FP32's is {report.mean_box_iou:.3f} {held}, "
                f"below the threshold {min_box_iou:g} (--min-box-iou); "
                + _ADVICE.format(flag="a lower --min-box-iou"))
        return
    if report.top1_agreement is not None:
        if not report.top1_agreement >= min_agreement:
            raise QuantizationCheckError(
                f"{report.path} not written: INT8 top-1 agreement with FP32 is {100 * report.top1_agreement:.1f}% "
                f"{held}, below the threshold {100 * min_agreement:.1f}% (--min-agreement {min_agreement:g}); "
                + _ADVICE.format(flag="a lower --min-agreement"))
        return
    if not report.max_rel_error <= max_rel_error:  # inf (NaN outputs) fails too
        raise QuantizationCheckError(
            f"{report.path} not written: INT8 outputs differ from FP32 by {report.max_rel_error:.3f} of their scale "
            f"{held}, over the threshold {max_rel_error:g} (--max-rel-error); "
            + _ADVICE.format(flag="a higher --max-rel-error"))


def quantize_onnx(fp32_path: str | Path, output: str | Path, calibration: str | Path = "synthetic",
                  per_channel: bool = True, num_calibration: int = 32, num_held_out: int = 16,
                  box_score_threshold: float = 0.5, *, min_agreement: float = DEFAULT_MIN_AGREEMENT,
                  max_rel_error: float = DEFAULT_MAX_REL_ERROR,
                  min_box_iou: float = DEFAULT_MIN_BOX_IOU, float_ops: Iterable[str] = DEFAULT_FLOAT_OPS,
                  fold_batchnorm: bool = True, pool_as_conv: bool = True, reduce_range: bool | None = None,
                  extra_options: dict[str, Any] | None = None) -> QuantizationReport:
    """Static INT8 (QDQ, u8 activations / s8 weights) with MinMax calibration, written only when it
    agrees with FP32 on the held-out inputs: a classifier's top-1 on at least ``min_agreement`` of
    them, a detector's confident boxes (FP32 score >= ``box_score_threshold``) with a mean IoU of at
    least ``min_box_iou`` with INT8's, any other graph's outputs within ``max_rel_error`` of their
    FP32 scale. Otherwise :class:`QuantizationCheckError` says by how much it missed and what to
    try, and nothing is written. (Random-weight models agree less than trained ones: callers that
    quantize them on purpose pass lower thresholds.) Pass-through ops carrying max pooling's -inf
    padding stay FP32 (:func:`infinite_padding_nodes`).

    Made for speed on onnxruntime's CPU kernels (BENCHMARKS.md has the profile behind each choice):
    BatchNorms behind a Concat are folded into the convolutions first (``fold_batchnorm``,
    :func:`fold_concat_batchnorm`); average pools that exclude padding become a depthwise
    convolution and a product (``pool_as_conv``, :func:`pools_as_convolutions`: onnxruntime's
    ``QLinearAveragePool`` is scalar code); where that cannot apply (a dynamic size), the ops in
    ``float_ops`` (default: ``AveragePool``) keep float outputs (:func:`keep_float`); ``reduce_range``
    (7-bit weights) is on where the host has no VNNI (None: decided by :func:`host_has_vnni`), as
    onnxruntime advises for u8 x s8 on AVX2 / AVX-512 without VNNI. ``extra_options`` go to
    ``quantize_static`` as they are."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_path, output = Path(fp32_path), Path(output)
    float_ops = [float_ops] if isinstance(float_ops, str) else list(float_ops)
    if reduce_range is None:
        reduce_range = not host_has_vnni()
    if num_calibration < 1 or num_held_out < 1:
        raise ValueError("calibration and the held-out check each need at least one image")
    for name, value in (("min_agreement", min_agreement), ("min_box_iou", min_box_iou)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], not {value!r}")
    if not max_rel_error >= 0.0:
        raise ValueError(f"max_rel_error must be a number >= 0, not {max_rel_error!r}")
    refuse_own_input(output, "-o/--output", {"input model": fp32_path})
    model = load_exported(fp32_path)
    inputs = list(calibration_inputs(model, calibration, num_calibration + num_held_out))
    calib, held_out = inputs[:num_calibration], inputs[num_calibration:]
    detector = is_detector(model)
    with tempfile.TemporaryDirectory(prefix="nasnet-quantize-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared))
        folded = fold_concat_batchnorm(graph) if fold_batchnorm else 0
        pools = pools_as_convolutions(graph) if pool_as_conv and not detector else 0
        if folded or pools:
            onnx.save(graph, str(prepared))
        excluded = infinite_padding_nodes(_name_nodes(prepared))
        quantized = Path(tmp) / "int8.onnx"
        # Detectors: only the convolutions and linear layers (NMS, RoIAlign and box arithmetic stay FP32).
        op_types = ["Conv", "Gemm", "MatMul"] if detector else None
        # MinMax calibration computes a scale for every float tensor, also for the -inf-carrying ones
        # of the nodes kept FP32 above; numpy's "invalid value" warnings there are about scales nothing uses.
        with np.errstate(invalid="ignore") if excluded else nullcontext():
            quantize_static(str(prepared), str(quantized), _Reader(_image_input(model)[0].name, calib),
                            quant_format=QuantFormat.QDQ, per_channel=per_channel, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                            op_types_to_quantize=op_types, nodes_to_exclude=excluded, reduce_range=reduce_range,
                            extra_options=dict(extra_options or {}))
        int8 = onnx.load(str(quantized))
        kept_float = keep_float(int8, float_ops)
        del int8.graph.value_info[:]  # shape annotations from pre-processing; onnxruntime infers them
        float_note = f", float {'/'.join(float_ops)} outputs ({kept_float})" if kept_float else ""
        float_note += f", {pools} average pools as depthwise convolutions" if pools else ""
        props = {**_metadata(int8), **_metadata(model), "quantization": "static INT8 QDQ, MinMax, "
                 f"{'per-channel' if per_channel else 'per-tensor'}{', reduce_range' if reduce_range else ''}"
                 f"{float_note}, {num_calibration} calibration inputs"}
        onnx.helper.set_model_props(int8, props)
        onnx.checker.check_model(int8)
        onnx.save(int8, str(quantized))
        # A detector's boxes, classes and scores by name (masks or semantic logits may sit between them).
        compared = ["boxes", "classes", "scores"] if detector else None
        fp32_out, int8_out = run_outputs(fp32_path, held_out, compared), run_outputs(quantized, held_out, compared)
        agreement = iou = None
        if detector:
            iou, rel = matched_box_iou(fp32_out, int8_out, box_score_threshold), float("nan")
        else:
            if [o.name for o in model.graph.output] == ["logits"]:
                agreement = _agreement(fp32_out, int8_out)
            rel = _max_rel_error(fp32_out, int8_out)
        fp32_bytes, int8_bytes = fp32_path.stat().st_size, quantized.stat().st_size
        report = QuantizationReport(str(output), fp32_bytes, int8_bytes, fp32_bytes / int8_bytes, len(calib),
                                    len(held_out), agreement, rel, iou, per_channel)
        _gate(report, min_agreement, max_rel_error, min_box_iou)
        with verified_output(output) as target:  # the very bytes measured, renamed into place
            shutil.copyfile(quantized, target)
    logger.info("%s", report.summary())
    return report
