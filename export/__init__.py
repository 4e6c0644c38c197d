"""ONNX export, onnxruntime verification, INT8 quantization and latency benchmarks.

Not implemented yet: this package is filled by the export issue.
"""
