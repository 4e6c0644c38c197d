"""Verified ONNX export of NASNet classifiers, backbones and detectors, INT8 quantization, the ORT
format and latency benchmarks (``nasnet export``, ``nasnet bench``).

Each export checks itself before it returns: ``onnx.checker`` (full check), no negative pads or
training-only ops, and onnxruntime against PyTorch on an input different from the traced one.

>>> import nasnet_backbones as nb, export
>>> report = export.export_classifier(nb.create_model("nasnet_a_mobile", pretrained=True), "mobile.onnx")
"""

from .onnx_export import ExportReport, ExportVerificationError, export_backbone, export_classifier, verify_onnx
from .detectron2_detector import export_detector  # imports detectron2 only when called
from .ort_format import convert_to_ort
from .quantize import QuantizationCheckError, QuantizationReport, quantize_onnx

__all__ = ["ExportReport", "ExportVerificationError", "QuantizationCheckError", "QuantizationReport", "convert_to_ort",
           "export_backbone", "export_classifier", "export_detector", "quantize_onnx", "verify_onnx"]
