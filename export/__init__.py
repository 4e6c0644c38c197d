"""Verified ONNX export of NASNet classifiers, backbones and detectors, INT8 quantization, the ORT
format and latency benchmarks (``nasnet export``, ``nasnet bench``).

Each export checks itself before it returns: ``onnx.checker`` (full check), no negative pads or
training-only ops, and onnxruntime against PyTorch on an input different from the traced one.

>>> import nasnet_backbones as nb, export
>>> report = export.export_classifier(nb.create_model("nasnet_a_mobile", pretrained=True), "mobile.onnx")
"""

from .onnx_export import ExportReport, ExportVerificationError, export_backbone, export_classifier, verify_onnx
from .detectron2_detector import export_detector  # imports detectron2 only when called
from .ort_format import MobileCoverage, OrtReport, convert_to_ort, mobile_coverage
from .quantize import QuantizationCheckError, QuantizationReport, quantize_onnx
# The function, not its module: ``export.align_channels`` is the pass (import its helpers with
# ``from export.align_channels import ...``).
from .align_channels import AlignmentReport, align_channels

__all__ = ["AlignmentReport", "ExportReport", "ExportVerificationError", "MobileCoverage", "OrtReport",
           "QuantizationCheckError", "QuantizationReport", "align_channels", "convert_to_ort", "export_backbone",
           "export_classifier", "export_detector", "mobile_coverage", "quantize_onnx", "verify_onnx"]
