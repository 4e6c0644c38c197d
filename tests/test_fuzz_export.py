"""Fuzz cases for ``nasnet export`` and ``nasnet bench``: an INT8 file that disagrees with FP32 is
not written, no command overwrites its own input, malformed ONNX files and nonsense numbers get one
clear error naming the file or flag, and a killed export's temporary is cleaned by the next one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from helpers import expect_clean_error, run_cli, snapshot
from export import export_classifier
from export.quantize import infinite_padding_nodes
from nasnet_backbones import build_nasnet, genotypes


def _tiny_classifier() -> torch.nn.Module:
    """The tests' tiny NASNet-A (ImageNet stem, 3 cells, width 8, 10 classes), random weights."""
    torch.manual_seed(0)
    return build_nasnet(genotypes.NASNET_A, num_cells=3, num_filters=8, stem="imagenet", num_classes=10, img_size=96,
                        aux_head=True).eval()


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """The tiny classifier exported at 96 x 96 with a fixed size, and with any size."""
    folder = tmp_path_factory.mktemp("exports")
    model = _tiny_classifier()
    export_classifier(model, folder / "fixed.onnx", input_size=96)
    export_classifier(model, folder / "any_size.onnx", input_size=96, dynamic_size=True)
    return folder


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# -- the INT8 agreement gate ------------------------------------------------------------------------

QUANTIZE = ("export", "quantize", "--calib", "synthetic", "--num-calibration", "4", "--num-held-out", "8")


def test_int8_below_the_agreement_threshold_is_not_written(exports, tmp_path, capsys):
    """Random weights: INT8 picks FP32's class on 6 of 8 held-out inputs, under the default 90%."""
    (tmp_path / "keep.txt").write_text("x")
    before = snapshot(tmp_path)
    out = tmp_path / "int8.onnx"
    err = expect_clean_error(capsys, *QUANTIZE, exports / "fixed.onnx", "-o", out,
                             names=[str(out), "not written", "75.0%", "90.0%", "--min-agreement", "--per-channel",
                                    "--num-calibration", "--calib"])
    assert err.count("error:") == 1
    assert snapshot(tmp_path) == before  # no INT8 file, no temporary
    # The same quantization passes a threshold it reaches, and the file it writes is the one measured.
    stale = tmp_path / f"int8.onnx.{_dead_pid()}-abcdef.tmp"  # left by a killed quantize
    stale.write_bytes(b"half")
    result = run_cli(capsys, *QUANTIZE, exports / "fixed.onnx", "-o", out, "--min-agreement", "0.7", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["top1_agreement"] == 0.75 and report["int8_bytes"] == out.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8.onnx", "keep.txt"]


def test_dynamic_size_int8_agrees_as_the_fixed_size_one_does(exports, tmp_path, capsys):
    """Max pooling's -inf padding in a --dynamic-size graph made MinMax calibration meaningless
    (0% agreement, outputs off by more than their scale); those nodes now stay FP32."""
    graph = onnx.load(str(exports / "any_size.onnx"))
    excluded = set(infinite_padding_nodes(graph))
    kinds = {n.op_type for n in graph.graph.node if n.name in excluded}
    assert {"Pad", "MaxPool"} <= kinds and not kinds & {"Conv", "AveragePool"}
    result = run_cli(capsys, *QUANTIZE, exports / "any_size.onnx", "-o", tmp_path / "int8.onnx",
                     "--min-agreement", "0.7", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["top1_agreement"] == 0.75 and report["max_rel_error"] < 0.5, report


def test_backbone_int8_over_the_error_bound_is_not_written(tmp_path, capsys):
    """Graphs without logits (backbone features) are held to a bound on their relative error."""
    from export import export_backbone

    torch.manual_seed(0)
    model = build_nasnet(genotypes.NASNET_A, num_cells=3, num_filters=8, stem="imagenet", img_size=64,
                         features_only=True).eval()
    export_backbone(model, tmp_path / "bb.onnx", input_size=64, batch=1)
    before = snapshot(tmp_path)
    out = tmp_path / "bb.int8.onnx"
    err = expect_clean_error(capsys, *QUANTIZE, tmp_path / "bb.onnx", "-o", out, "--max-rel-error", "0.001",
                             names=[str(out), "not written", "of their scale", "0.001", "--max-rel-error"])
    measured = float(err.split("differ from FP32 by ")[1].split()[0])
    assert 0.001 < measured < 0.5  # a real measurement, within the default bound
    assert snapshot(tmp_path) == before


# -- no command overwrites its own input ------------------------------------------------------------

def test_quantize_and_ort_refuse_to_overwrite_their_input(exports, tmp_path, capsys):
    fp32 = tmp_path / "model.onnx"
    fp32.write_bytes((exports / "fixed.onnx").read_bytes())
    os.link(fp32, tmp_path / "hardlink.onnx")
    (tmp_path / "model.ort").write_bytes(b"an ort file")
    before = snapshot(tmp_path)
    for output in (fp32, tmp_path / "hardlink.onnx", tmp_path / "sub" / ".." / "model.onnx"):
        expect_clean_error(capsys, *QUANTIZE, fp32, "-o", output, names=["-o/--output", "input model", str(output)])
    expect_clean_error(capsys, "export", "ort", fp32, "-o", fp32, names=["-o/--output", "input model"])
    expect_clean_error(capsys, "export", "ort", tmp_path / "model.ort", names=["-o/--output", "input model"])
    assert snapshot(tmp_path) == before


def test_exports_refuse_to_overwrite_their_weights_or_genotype(tmp_path, capsys):
    cell = tmp_path / "cell.json"
    genotypes.NASNET_A.to_json(cell)
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"not read")
    before = snapshot(tmp_path)
    tiny = ("--genotype", cell, "--cells", "1", "--filters", "8", "--input-size", "64")
    expect_clean_error(capsys, "export", "classifier", *tiny, "--random-weights", "-o", cell,
                       names=["-o/--output", "--genotype", str(cell)])
    expect_clean_error(capsys, "export", "backbone", *tiny, "--weights", weights, "-o", weights,
                       names=["-o/--output", "--weights"])
    expect_clean_error(capsys, "export", "detector", "--framework", "torchvision", "--model", "ssdlite",
                       "--backbone", cell, "--weights", weights, "-o", weights, names=["-o/--output", "--weights"])
    expect_clean_error(capsys, "export", "detector", "--framework", "torchvision", "--model", "ssdlite",
                       "--backbone", cell, "-o", cell, names=["-o/--output", "--backbone"])
    assert snapshot(tmp_path) == before


# -- malformed ONNX files ---------------------------------------------------------------------------

def _conv_graph(inputs: int, size: list, metadata: bool) -> onnx.ModelProto:
    """A one-convolution graph (3 -> 4 channels) with ``inputs`` image inputs of shape ``size``."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], np.ones(108, np.float32).tolist())
    names = [f"x{i}" for i in range(inputs)]
    nodes = [helper.make_node("Conv", [names[0], "w"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    if inputs > 1:
        nodes = [helper.make_node("Add", names[:2], ["s"], name="add"),
                 helper.make_node("Conv", ["s", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, size) for n in names],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, *size[2:]])],
                              initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if metadata:
        helper.set_model_props(model, {"input_size": "8"})
    return model


@pytest.fixture(scope="module")
def malformed(exports, tmp_path_factory):
    folder = tmp_path_factory.mktemp("malformed")
    data = (exports / "fixed.onnx").read_bytes()
    (folder / "truncated.onnx").write_bytes(data[: len(data) // 2])
    (folder / "text.onnx").write_text("this is not a model\n")
    onnx.save(_conv_graph(1, [1, 3, "h", "w"], metadata=False), str(folder / "no_metadata.onnx"))
    onnx.save(_conv_graph(2, [1, 3, 8, 8], metadata=True), str(folder / "two_inputs.onnx"))
    return folder


@pytest.mark.parametrize("name, cause", [("truncated.onnx", "not a readable ONNX model"),
                                         ("text.onnx", "not a readable ONNX model"),
                                         ("no_metadata.onnx", "records no input_size"),
                                         ("two_inputs.onnx", "has 2 inputs")])
def test_malformed_onnx_gets_one_clear_error(malformed, name, cause, tmp_path, capsys):
    model = malformed / name
    before = snapshot(malformed)
    expect_clean_error(capsys, *QUANTIZE, model, "-o", tmp_path / "q.onnx", names=[str(model), cause])
    expect_clean_error(capsys, "export", "ort", model, "-o", tmp_path / "q.ort", names=[str(model), cause])
    expect_clean_error(capsys, "bench", "--onnx", model, "--runs", "1", names=["--onnx", str(model), cause])
    assert snapshot(malformed) == before and list(tmp_path.iterdir()) == []


def test_bench_refuses_an_unloadable_ort_file(tmp_path, capsys):
    bad = tmp_path / "model.ort"
    bad.write_bytes(b"\x00" * 64)
    expect_clean_error(capsys, "bench", "--onnx", bad, "--runs", "1", names=["--onnx", str(bad)])


# -- nonsense numbers and conflicting flags ---------------------------------------------------------

@pytest.mark.parametrize("argv, flag", [
    (["export", "classifier", "--model", "nasnet_a_mobile", "--input-size", "0"], "--input-size"),
    (["export", "classifier", "--model", "nasnet_a_mobile", "--batch", "-1"], "--batch"),
    (["export", "classifier", "--model", "nasnet_a_mobile", "--opset", "5"], "--opset"),
    (["export", "backbone", "--model", "nasnet_a_mobile", "--rtol", "nan"], "--rtol"),
    (["export", "backbone", "--model", "nasnet_a_mobile", "--atol", "-1"], "--atol"),
    (["export", "detector", "--input-size", "0", "64"], "--input-size"),
    (["export", "detector", "--framework", "torchvision", "--model", "ssdlite", "--num-classes", "1"], "--num-classes"),
    (["export", "detector", "--framework", "torchvision", "--model", "ssdlite", "--score-thresh", "2"],
     "--score-thresh"),
    (["export", "detector", "--framework", "torchvision", "--model", "fasterrcnn", "--min-size", "0"], "--min-size"),
    (["export", "detector", "--score-atol", "inf"], "--score-atol"),
    (["export", "quantize", "m.onnx", "--calib", "synthetic", "--num-calibration", "0"], "--num-calibration"),
    (["export", "quantize", "m.onnx", "--calib", "synthetic", "--num-held-out", "-3"], "--num-held-out"),
    (["export", "quantize", "m.onnx", "--calib", "synthetic", "--min-agreement", "1.5"], "--min-agreement"),
    (["export", "quantize", "m.onnx", "--calib", "synthetic", "--max-rel-error", "-1"], "--max-rel-error"),
    (["export", "quantize", "m.onnx", "--calib", "synthetic", "--min-box-iou", "nan"], "--min-box-iou"),
    (["bench", "--model", "nasnet_a_mobile", "--runs", "0"], "--runs"),
    (["bench", "--model", "nasnet_a_mobile", "--warmup", "-1"], "--warmup"),
    (["bench", "--model", "nasnet_a_mobile", "--threads", "0"], "--threads"),
    (["bench", "--model", "nasnet_a_mobile", "--batch", "0"], "--batch"),
    (["bench", "--model", "nasnet_a_mobile", "--input-size", "-224"], "--input-size"),
])
def test_nonsense_numbers_are_refused(argv, flag, tmp_path, capsys):
    out = tmp_path / "out.onnx"
    needs_output = argv[0] == "export"
    expect_clean_error(capsys, *argv, *(["-o", out] if needs_output else []), names=[flag])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, flags", [
    (["bench", "--model", "nasnet_a_mobile", "--int8", "q.onnx"], ["--model", "--int8"]),
    (["bench", "--onnx", "m.onnx", "--no-int8"], ["--onnx", "--no-int8"]),
    (["bench", "--onnx", "m.onnx", "--weights", "w.pth"], ["--onnx", "--weights"]),
    (["export", "classifier", "--model", "nasnet_a_mobile", "--random-weights", "--weights", "w.pth", "-o", "x.onnx"],
     ["--random-weights", "--weights"]),
    (["export", "detector", "--framework", "torchvision", "--model", "fasterrcnn", "--allow-pickle", "-o", "d.onnx"],
     ["--allow-pickle", "--framework detectron2"]),
])
def test_conflicting_flags_are_refused(argv, flags, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    expect_clean_error(capsys, *argv, names=flags)
    assert list(tmp_path.iterdir()) == []


# -- a killed export's temporary --------------------------------------------------------------------

def test_next_export_removes_a_killed_exports_temporary(tmp_path, capsys):
    """A SIGKILLed export leaves ``model.onnx.<pid>-<hex>.tmp`` (up to tens of MB); the next export
    of the same file removes it, and keeps the temporaries of writers still alive."""
    stale = tmp_path / f"model.onnx.{_dead_pid()}-abcdef.tmp"
    stale.write_bytes(b"\x00" * 1000)
    folded = tmp_path / f"model.onnx.{_dead_pid()}-012345.tmp.folded"  # its constant-folding scratch file
    folded.write_bytes(b"\x00")
    cell = tmp_path / "cell.json"
    genotypes.NASNET_A.to_json(cell)
    result = run_cli(capsys, "export", "classifier", "--genotype", cell, "--cells", "1", "--filters", "8",
                     "--random-weights", "--input-size", "64", "--batch", "1", "-o", tmp_path / "model.onnx")
    assert result.code == 0, result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cell.json", "model.onnx"]
    mode = (tmp_path / "model.onnx").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # an ordinary file, not a private temporary's permissions
