"""Static INT8 quantization (QDQ) of exported models with onnxruntime.quantization, and ORT format.

Calibration reads real images (any folder, recursively) prepared exactly as the export's metadata
says (input size, resize, mean/std), or generated ones (``"synthetic"``: smooth random images,
for when no data is at hand). Held-out inputs, never seen in calibration, then measure how far
INT8 moves from FP32: top-1 agreement for a classifier's ``logits``, relative error otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx

from .onnx_export import verified_output

__all__ = ["QuantizationReport", "calibration_inputs", "quantize_onnx", "convert_to_ort"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}


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


def _input_shape(model: onnx.ModelProto) -> tuple[int, int, int, int]:
    """(batch, channels, height, width) to feed: a dynamic batch becomes 1, a dynamic size the
    ``input_size`` the export recorded."""
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    batch, channels, height, width = dims
    if not height or not width:
        recorded = _metadata(model).get("input_size")
        if not recorded:
            raise ValueError("the model's input size is dynamic and its metadata does not record one")
        height = width = int(json.loads(recorded))
    return batch or 1, channels, height, width


def is_detector(model: onnx.ModelProto) -> bool:
    """A whole-detector graph from ``export_detector``: one CHW image in, boxes out."""
    return len(model.graph.input[0].type.tensor_type.shape.dim) == 3


def detector_inputs(model: onnx.ModelProto, source: str | Path, count: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Images for a detector graph: drawn shapes for ``"synthetic"``, else a folder. For detectron2's
    graphs, 0-255 and resized as its test transform does (shortest side MIN_SIZE_TEST, longest at
    most MAX_SIZE_TEST); for torchvision's, 0-1 RGB at the size its in-graph transform resizes to."""
    from PIL import Image

    meta = _metadata(model)
    torchvision = meta.get("framework") == "torchvision"
    if torchvision:
        fixed = json.loads(meta.get("fixed_size", "null"))
        short = min(fixed) if fixed else int(json.loads(meta.get("min_size", "[800]"))[-1])
        longest = max(fixed) if fixed else int(json.loads(meta.get("max_size", "1333")))
    else:
        short = int(json.loads(meta.get("min_size_test", "800")))
        longest = int(json.loads(meta.get("max_size_test", "1333")))
    bgr = "BGR" in meta.get("input", "")
    if str(source) == "synthetic":
        from detection.synthetic import _image

        rng = np.random.default_rng(seed)
        images = (_image(rng, short)[0] for _ in range(count))
    else:
        folder = Path(source)
        if not folder.is_dir():
            raise FileNotFoundError(f"calibration folder {folder} does not exist (or pass 'synthetic')")
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(files) < count:
            raise ValueError(f"{folder} has {len(files)} images; calibration and the held-out check need {count}")
        images = (Image.open(f).convert("RGB") for f in files[:count])
    for img in images:
        w, h = img.size
        scale = min(short / min(h, w), longest / max(h, w))
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.float32)[:, :, ::-1 if bgr else 1]
        yield np.ascontiguousarray(arr.transpose(2, 0, 1)) / (255.0 if torchvision else 1.0)


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
    batch, channels, height, width = _input_shape(model)
    meta = _metadata(model)
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
    from PIL import Image

    from nasnet_backbones.transforms import ClassificationEval

    mean = json.loads(meta.get("mean", "[0.5, 0.5, 0.5]"))
    std = json.loads(meta.get("std", "[0.5, 0.5, 0.5]"))
    resize = int(json.loads(meta.get("resize_size", str(int(height / 0.875)))))
    transform = ClassificationEval(height, resize, json.loads(meta.get("interpolation", '"bilinear"')), mean, std)
    order = rng.permutation(len(files))
    for start in range(0, count * batch, batch):
        images = []
        for index in order[start : start + batch]:
            with Image.open(files[index]) as img:
                images.append(transform(img).numpy())
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


def _run(path: str | Path, inputs: list[np.ndarray], outputs: list[str] | None = None) -> list[list[np.ndarray]]:
    """Each input's outputs (all, or the named ones in that order)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return [session.run(outputs, {name: x}) for x in inputs]


def quantize_onnx(fp32_path: str | Path, output: str | Path, calibration: str | Path = "synthetic",
                  per_channel: bool = True, num_calibration: int = 32, num_held_out: int = 16,
                  box_score_threshold: float = 0.5) -> QuantizationReport:
    """Static INT8 (QDQ, u8 activations / s8 weights) with MinMax calibration; writes atomically.
    For detectors, FP32 detections scoring at least ``box_score_threshold`` are matched to INT8's."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_path, output = Path(fp32_path), Path(output)
    if not fp32_path.is_file():
        raise FileNotFoundError(f"{fp32_path} does not exist")
    if num_calibration < 1 or num_held_out < 1:
        raise ValueError("calibration and the held-out check each need at least one image")
    model = onnx.load(str(fp32_path))
    inputs = list(calibration_inputs(model, calibration, num_calibration + num_held_out))
    calib, held_out = inputs[:num_calibration], inputs[num_calibration:]
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent) as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantized = Path(tmp) / "int8.onnx"
        # Detectors: only the convolutions and linear layers (NMS, RoIAlign and box arithmetic stay FP32).
        op_types = ["Conv", "Gemm", "MatMul"] if is_detector(model) else None
        quantize_static(str(prepared), str(quantized), _Reader(model.graph.input[0].name, calib),
                        quant_format=QuantFormat.QDQ, per_channel=per_channel, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        op_types_to_quantize=op_types)
        int8 = onnx.load(str(quantized))
        del int8.graph.value_info[:]  # shape annotations from pre-processing; onnxruntime infers them
        props = {**_metadata(int8), **_metadata(model), "quantization": "static INT8 QDQ, MinMax, "
                 f"{'per-channel' if per_channel else 'per-tensor'}, {num_calibration} calibration inputs"}
        onnx.helper.set_model_props(int8, props)
        onnx.checker.check_model(int8)
        onnx.save(int8, str(quantized))
        # A detector's boxes, classes and scores by name (masks or semantic logits may sit between them).
        compared = ["boxes", "classes", "scores"] if is_detector(model) else None
        fp32_out, int8_out = _run(fp32_path, held_out, compared), _run(quantized, held_out, compared)
        os.replace(quantized, output)
    names = [o.name for o in model.graph.output]
    agreement = iou = None
    if is_detector(model):
        iou, rel = matched_box_iou(fp32_out, int8_out, box_score_threshold), float("nan")
    else:
        if names == ["logits"]:
            agreement = float(np.mean([a[0].argmax(1) == b[0].argmax(1) for a, b in zip(fp32_out, int8_out)]))
        rel = max(float(np.abs(b - a).max() / max(np.abs(a).max(), 1e-12))
                  for fa, fb in zip(fp32_out, int8_out) for a, b in zip(fa, fb))
    report = QuantizationReport(str(output), fp32_path.stat().st_size, output.stat().st_size,
                                fp32_path.stat().st_size / output.stat().st_size, len(calib), len(held_out), agreement,
                                rel, iou, per_channel)
    logger.info("%s", report.summary())
    return report


def convert_to_ort(onnx_path: str | Path, output: str | Path | None = None) -> tuple[Path, float]:
    """The ``.ort`` format onnxruntime mobile loads; verified by loading it back and comparing its
    outputs with the ``.onnx`` file's on a generated input. Returns (path, max abs difference)."""
    import onnxruntime as ort

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"{onnx_path} does not exist")
    output = Path(output) if output else onnx_path.with_suffix(".ort")
    if output.suffix != ".ort":
        raise ValueError(f"{output}: ORT-format files must end in .ort (onnxruntime tells the format by the suffix)")
    with verified_output(output, suffix=".tmp.ort") as tmp:  # onnxruntime tells the format by the suffix
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(tmp)
        options.add_session_config_entry("session.save_model_format", "ORT")
        ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        x = next(calibration_inputs(onnx.load(str(onnx_path)), "synthetic", 1, seed=1))
        (reference,), (loaded,) = _run(onnx_path, [x]), _run(tmp, [x])
        diff = max(float(np.abs(a - b).max()) for a, b in zip(reference, loaded))
        scale = max(float(np.abs(a).max()) for a in reference)
        if diff > 1e-4 * max(scale, 1.0):
            raise ValueError(f"the .ort file computes something else (max difference {diff:.3e})")
    return output, diff


