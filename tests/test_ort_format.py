"""export/ort_format.py: ORT-format files optimized for a named target, verified against the .onnx,
with a fixed batch of 1 for NNAPI/CoreML and their coverage reported."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnxruntime.tools.onnx_model_utils import make_dim_param_fixed

import nasnet_backbones as nb
from export import export_classifier
from export.ort_format import (METADATA_KEY, RUNTIME_REPLAY_ENTRY, convert_to_ort, host_platform, mobile_coverage,
                               ort_session_options)
from export.quantize import quantize_onnx

from helpers import expect_clean_error, run_cli, snapshot

ON_X86 = host_platform() == "amd64"  # an amd64 file holds x86's NCHWc layout: it is verified (run) on x86 only


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny NASNet-A classifier (CIFAR stem, 32 px) exported with a dynamic batch, and its INT8 (QDQ)
    quantization (random weights: agreement is not the point here)."""
    folder = tmp_path_factory.mktemp("ort")
    torch.manual_seed(0)
    model = nb.build_nasnet(nb.genotypes.NASNET_A, num_cells=3, num_filters=8, stem="cifar", num_classes=10,
                            img_size=32).eval()
    export_classifier(model, folder / "fp32.onnx", input_size=32)
    quantize_onnx(folder / "fp32.onnx", folder / "int8.onnx", "synthetic", True, 4, 2, min_agreement=0.0)
    return folder


def _session(path, threads=1):
    return ort.InferenceSession(str(path), ort_session_options(threads=threads), providers=["CPUExecutionProvider"])


def _logits(path, x):
    session = _session(path)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _output_step(path):
    """The scale of the DequantizeLinear that produces the INT8 graph's logits."""
    graph = onnx.load(str(path)).graph
    (node,) = [n for n in graph.node if n.output[0] == graph.output[0].name]
    assert node.op_type == "DequantizeLinear"
    (scale,) = [onnx.numpy_helper.to_array(i) for i in graph.initializer if i.name == node.input[1]]
    return float(scale)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("style", ["Fixed", "Runtime"])
@pytest.mark.parametrize("target", [
    pytest.param("amd64", marks=pytest.mark.skipif(not ON_X86, reason="an amd64 file runs on x86-64 only")), "arm"])
def test_converts_for_each_target_and_style(tiny, tmp_path, precision, style, target):
    source = tiny / f"{precision}.onnx"
    out = tmp_path / f"{precision}.{target}.{style}.ort"
    report = convert_to_ort(source, out, target_platform=target, optimization_style=style)
    assert report.path == str(out) and out.is_file() and report.ort_bytes == out.stat().st_size
    assert (report.target_platform, report.optimization_style, report.quantized) == (target, style, precision == "int8")
    assert 0.0 <= report.max_abs_diff <= report.tolerance
    assert report.session_config == ({RUNTIME_REPLAY_ENTRY: "1"} if style == "Runtime" else {})
    # Checked again here, independently of the conversion's own check, on an input it did not use.
    x = np.random.default_rng(5).uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32)
    expected, got = _logits(source, x), _logits(out, x)
    diff = float(np.abs(expected - got).max())
    if precision == "fp32":
        assert "of the output scale" in report.tolerance_rule
        assert diff <= 1e-5 * max(float(np.abs(expected).max()), 1.0)
    else:  # dequantized logits: within one step of their grid
        step = _output_step(source)
        assert "quantization" in report.tolerance_rule and report.tolerance == pytest.approx(step, rel=1e-4)
        assert diff <= step * 1.0001
    if target == "amd64" and style == "Fixed":  # the .onnx session's own optimizations, saved: bit-exact
        assert diff == 0.0 and report.max_abs_diff == 0.0
    session = _session(out)
    record = json.loads(session.get_modelmeta().custom_metadata_map[METADATA_KEY])
    assert (record["target_platform"], record["optimization_style"]) == (target, style)
    # The export's own metadata travels into the .ort too (bench and predict read it).
    assert "input_conventions" in session.get_modelmeta().custom_metadata_map


def test_basic_level_int8_differs_by_one_rounding_step_only(tiny, tmp_path):
    """Why the old conversion's INT8 file 'computed something else': saved at the basic level, its
    QDQ nodes stay unfused (float simulation) while the .onnx's session runs fused integer kernels.
    The two round some logits to neighbouring grid points: more than the old tolerance (1e-4 of the
    output scale), never more than one quantization step."""
    source = tiny / "int8.onnx"
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(tmp_path / "basic.ort")
    options.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    step = _output_step(source)
    xs = np.random.default_rng(0).uniform(-1, 1, (16, 1, 3, 32, 32)).astype(np.float32)
    diffs = np.array([np.abs(_logits(source, x) - _logits(tmp_path / "basic.ort", x)).max() for x in xs])
    scale = max(float(np.abs(_logits(source, x)).max()) for x in xs)
    assert diffs.max() > 1e-4 * max(scale, 1.0)  # the old check refused it
    assert np.allclose(diffs / step, np.round(diffs / step), atol=1e-3) and diffs.max() <= step * 1.0001


def test_dynamic_batch_fixed_to_one_and_coverage_reported(tiny, tmp_path, capsys):
    out = tmp_path / "mobile.ort"
    result = run_cli(capsys, "export", "ort", tiny / "fp32.onnx", "-o", out, "--target-platform", "arm", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["batch"] == 1 and report["batch_fixed"] is True
    session = _session(out)
    assert session.get_inputs()[0].shape == [1, 3, 32, 32] and session.get_outputs()[0].shape == [1, 10]
    record = json.loads(session.get_modelmeta().custom_metadata_map[METADATA_KEY])
    assert record["batch"] == 1 and record["batch_fixed_from"] == "batch"
    coverage = report["coverage"]
    assert coverage["fixed_input_shape"] is True
    assert [p["provider"] for p in coverage["providers"]] == ["NNAPI", "CoreML NeuralNetwork", "CoreML MLProgram"]
    for p in coverage["providers"]:
        assert 0 < p["supported_nodes"] <= p["total_nodes"] and p["partitions"] >= 1, p
        assert p["nodes_with_dynamic_shapes"] == 0
    # The plain report prints the coverage too.
    result = run_cli(capsys, "export", "ort", tiny / "fp32.onnx", "-o", tmp_path / "again.ort",
                     "--target-platform", "arm")
    assert result.code == 0 and "batch 1 (was dynamic, fixed to 1)" in result.out
    assert "NNAPI: " in result.out and "CoreML MLProgram: " in result.out


def test_keep_dynamic_batch_and_coverage_of_any_onnx(tiny, tmp_path, capsys):
    out = tmp_path / "dynamic.ort"
    result = run_cli(capsys, "export", "ort", tiny / "int8.onnx", "-o", out, "--target-platform", "arm",
                     "--optimization-style", "Runtime", "--keep-dynamic-batch", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["batch"] == "batch" and report["batch_fixed"] is False
    assert [2, 3, 32, 32] in report["verified_inputs"]  # a kept dynamic batch is checked at batch 2 too
    assert _session(out).run(None, {"input": np.zeros((3, 3, 32, 32), np.float32)})[0].shape == (3, 10)
    # A dynamic batch leaves NNAPI and CoreML nothing of the convolutions: the reason for batch 1.
    dynamic = mobile_coverage(tiny / "fp32.onnx")
    assert dynamic.fixed_input_shape is False
    assert all(p.supported_nodes == 0 and p.nodes_with_dynamic_shapes > 0 for p in dynamic.providers)
    graph = onnx.load(str(tiny / "fp32.onnx"))  # the same graph at batch 1, by onnxruntime's own tool
    make_dim_param_fixed(graph.graph, "batch", 1)
    onnx.save(graph, str(tmp_path / "b1.onnx"))
    fixed = mobile_coverage(tmp_path / "b1.onnx")
    nnapi = fixed.providers[0]
    assert fixed.fixed_input_shape and 0 < nnapi.supported_nodes <= nnapi.total_nodes
    assert "NNAPI: " in fixed.summary()


def test_bad_input_is_one_clear_error_and_writes_nothing(tiny, tmp_path, capsys):
    (tmp_path / "garbage.onnx").write_bytes(b"not a protobuf")
    (tmp_path / "model.onnx").write_bytes((tiny / "fp32.onnx").read_bytes())
    before = snapshot(tmp_path)
    expect_clean_error(capsys, "export", "ort", tmp_path / "garbage.onnx",
                       names=[str(tmp_path / "garbage.onnx"), "not a readable ONNX model"])
    expect_clean_error(capsys, "export", "ort", tmp_path / "model.onnx", "-o", tmp_path / "model.bin",
                       names=[str(tmp_path / "model.bin"), "must end in .ort"])
    expect_clean_error(capsys, "export", "ort", tmp_path / "model.onnx", "--target-platform", "x86",
                       names=["--target-platform", "'x86'"])
    expect_clean_error(capsys, "export", "ort", tmp_path / "model.onnx", "--optimization-style", "fast",
                       names=["--optimization-style"])
    with pytest.raises(ValueError, match="--target-platform 'mips'"):
        convert_to_ort(tmp_path / "model.onnx", target_platform="mips")
    with pytest.raises(ValueError, match="checked on the .onnx"):
        mobile_coverage(tmp_path / "model.ort")
    assert snapshot(tmp_path) == before
