"""Verified ONNX export of NASNet classifiers and backbones (``nasnet export``).

Each export checks itself before it returns: ``onnx.checker`` (full check), no negative pads or
training-only ops, and onnxruntime against PyTorch on an input different from the traced one.

>>> import nasnet_backbones as nb, export
>>> report = export.export_classifier(nb.create_model("nasnet_a_mobile", pretrained=True), "mobile.onnx")

Still to come (see the README): whole-detector export, INT8 quantization, ORT format and ``nasnet bench``.
"""

from .onnx_export import ExportReport, ExportVerificationError, export_backbone, export_classifier, verify_onnx

__all__ = ["ExportReport", "ExportVerificationError", "export_backbone", "export_classifier", "verify_onnx"]
