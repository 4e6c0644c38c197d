"""export.ort_profile: the census of onnxruntime's optimized graph and the per-op profile, on real
exports of a small NASNet-A (FP32 channel-aligned and INT8) and a hand-built detector-shaped graph."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

import nasnet_backbones as nb
from export import export_classifier
from export.ort_profile import feed_for, graph_census, op_profile, profile_summary
from export.quantize import quantize_onnx
from nasnet_backbones.host import cpu_description

# onnxruntime's NCHWc transformer runs on x86 hosts with AVX2 or AVX-512 (MLAS's block size 8 or 16).
HAS_NCHWC = cpu_description()["machine"] in ("x86_64", "AMD64") and "avx2" in cpu_description()["isa"]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """A tiny NASNet-A (ImageNet stem, width 8, 96 px) exported FP32 aligned to 16, and its INT8."""
    root = tmp_path_factory.mktemp("ort_profile")
    torch.manual_seed(0)
    model = nb.build_nasnet(nb.genotypes.NASNET_A, num_cells=3, num_filters=8, stem="imagenet", num_classes=10,
                            img_size=96, aux_head=False).eval()
    fp32, int8 = root / "fp32.onnx", root / "int8.onnx"
    export_classifier(model, fp32, input_size=96, batch=1, align_channels=16)
    # Random weights: the agreement gate is about trained models (tests/test_int8_accuracy.py).
    quantize_onnx(fp32, int8, "synthetic", num_calibration=4, num_held_out=2, min_agreement=0.0,
                  max_rel_error=float("inf"))
    return fp32, int8


def _file_convs(path) -> int:
    return sum(n.op_type == "Conv" for n in onnx.load(str(path)).graph.node)


def test_census_of_an_aligned_fp32_export(exports):
    fp32, _ = exports
    census = graph_census(fp32)
    assert sum(census.op_counts.values()) == census.nodes
    # Every convolution of the file is still one convolution node, whatever kernel onnxruntime chose.
    assert census.convs == _file_convs(fp32)
    assert census.qlinear_convs == 0 and census.quantize_linear == census.dequantize_linear == 0
    if HAS_NCHWC:  # aligned channels: all of them take the blocked NCHWc kernels
        assert census.nchwc_convs == census.convs and census.nchwc_conv_share == 1.0
        assert census.reorders > 0 and census.nchwc_nodes >= census.nchwc_convs + census.reorders
    text = census.format()
    assert str(fp32) in text and f"convolutions {census.convs}" in text
    assert json.loads(json.dumps(census.as_dict()))["convs"] == census.convs


def test_census_of_an_int8_export(exports):
    _, int8 = exports
    census = graph_census(int8)
    file_nodes = onnx.load(str(int8)).graph.node
    assert census.convs == sum(n.op_type == "Conv" for n in file_nodes)  # the INT8 file keeps Conv in QDQ form
    assert census.qlinear_convs == census.convs and census.quantized_conv_share == 1.0
    assert census.nchwc_convs == 0 and census.fused_convs == 0
    # onnxruntime fuses most Q/DQ pairs into the QLinear kernels: what is left is fewer than the file's,
    # and at least the graph input's QuantizeLinear and one DequantizeLinear before the float outputs.
    file_qdq = sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in file_nodes)
    assert 1 <= census.quantize_linear and 1 <= census.dequantize_linear
    assert census.quantize_linear + census.dequantize_linear < file_qdq
    assert census.qdq_near_concat_add_pool <= census.quantize_linear + census.dequantize_linear
    assert "BatchNormalization" not in {k.partition(":")[2] for k in census.op_counts}  # folded by quantize_onnx


def test_op_profile_times_every_op(exports):
    fp32, int8 = exports
    for path in (fp32, int8):
        profile = op_profile(path, runs=3)
        assert profile.input_shape == (1, 3, 96, 96) and profile.runs == 3
        assert profile.total_ms > 0 and all(ms > 0 for ms in profile.op_ms.values())
        assert sum(profile.share(k) for k in profile.op_ms) == pytest.approx(1.0)
        top = profile.top(3)
        assert len(top) == 3 and [ms for _, ms, _ in top] == sorted((ms for _, ms, _ in top), reverse=True)
        conv_keys = [k for k in profile.op_ms if k.partition(":")[2] in ("Conv", "QLinearConv", "FusedConv")]
        assert conv_keys and sum(profile.conv_ms.values()) == pytest.approx(sum(profile.op_ms[k] for k in conv_keys))
        assert json.loads(json.dumps(profile.as_dict()))["total_ms"] == pytest.approx(profile.total_ms)
        assert str(path) in profile.format()
    assert any("QLinearConv" in k for k in op_profile(int8, runs=1).op_ms)


def test_profile_summary_has_both_views(exports):
    _, int8 = exports
    summary = profile_summary(int8, runs=2)
    text = summary.format()
    assert "after onnxruntime's optimizations" in text and "kernel time" in text
    assert set(summary.as_dict()) == {"census", "profile"}


def _detector_like(path) -> None:
    """One C x H x W image in (dynamic size), as a whole-detector export takes it; a convolution out."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], np.full(108, 0.01, np.float32).tolist())
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [0])
    graph = helper.make_graph(
        [helper.make_node("Unsqueeze", ["image", "axes"], ["batched"]),
         helper.make_node("Conv", ["batched", "w"], ["features"], pads=[1, 1, 1, 1])],
        "detector_like", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [3, "height", "width"])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, None)], [weight, axes])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_a_detector_input_gets_pixels(tmp_path):
    path = tmp_path / "detector.onnx"
    _detector_like(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = feed_for(session, path, input_size=40)["image"]
    assert x.shape == (3, 40, 40) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 255 and x.max() > 200
    profile = op_profile(path, runs=2, input_size=40)
    assert profile.input_shape == (3, 40, 40) and profile.total_ms > 0
    assert graph_census(path).convs == 1


@pytest.mark.parametrize("content", [None, b"not an onnx file", b""])
def test_unreadable_files_are_one_clear_error(tmp_path, content):
    path = tmp_path / "model.onnx"
    if content is not None:
        path.write_bytes(content)
    for call in (graph_census, op_profile, profile_summary):
        with pytest.raises(ValueError, match=str(path)):
            call(path)
