"""Channel alignment (export.align_channels): padded graphs compute what the unpadded ones do, for
every genotype, backbones and detectors; their channel counts really are multiples of the block;
the exports record it; ``none`` changes nothing; a bad ``--align-channels`` is one argparse error."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from helpers import expect_clean_error, randomize_batchnorm, run_cli
from export.align_channels import ALIGNMENT_KEY, align_channels, auto_alignment, conv_cost, parse_alignment
from export.onnx_export import export_backbone, export_classifier
from export.ort_format import convert_to_ort
from export.quantize import quantize_onnx
from nasnet_backbones import build_nasnet, genotypes
from nasnet_backbones.host import cpu_description


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _assert_close(got: list[np.ndarray], expected: list[np.ndarray]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        scale = max(float(np.abs(e).max()), 1e-6)
        assert float(np.abs(g - e).max()) <= 1e-5 * scale, float(np.abs(g - e).max()) / scale


def _assert_aligned(model: onnx.ModelProto, multiple: int) -> int:
    """Every convolution writes a multiple of ``multiple`` channels and, past the graph input,
    reads one (but one that only writes a graph output keeps its count: padding gains nothing
    there); returns how many convolutions there are."""
    weights = {i.name: i for i in model.graph.initializer}
    inputs = {i.name for i in model.graph.input}
    outputs = {o.name for o in model.graph.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv" and n.output[0] not in outputs]
    for node in convs:
        w = weights[node.input[1]]
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        assert w.dims[0] % multiple == 0, (node.name, list(w.dims))
        if node.input[0] not in inputs:
            assert (w.dims[1] * group) % multiple == 0, (node.name, list(w.dims), group)
    return len(convs)


def _tiny(genotype, stem: str = "imagenet", **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    size = 64 if stem == "imagenet" else 32
    model = build_nasnet(genotype, num_cells=3, num_filters=6, stem=stem, num_classes=10, img_size=size, **kwargs)
    randomize_batchnorm(model)
    return model.eval()


@pytest.mark.parametrize("name, stem", [("NASNET_A", "imagenet"), ("PNASNET_5", "imagenet"),
                                        ("AMOEBANET_A", "cifar"), ("DARTS_V2", "cifar")])
def test_aligned_graph_equals_unaligned_for_each_genotype(name, stem, tmp_path):
    model = _tiny(getattr(genotypes, name), stem)
    size = 64 if stem == "imagenet" else 32
    path = tmp_path / "plain.onnx"
    export_classifier(model, path, input_size=size, exporter="torchscript", align_channels="none")
    plain = onnx.load(str(path))
    x = np.random.default_rng(1).standard_normal((2, 3, size, size)).astype(np.float32)
    expected = _run(plain, x)
    for multiple in (8, 16):
        aligned = _copy(plain)
        report = align_channels(aligned, multiple)
        onnx.checker.check_model(aligned, full_check=True)
        assert report.convs_padded > 0 and report.channels_added > 0
        _assert_aligned(aligned, multiple)
        assert report.mult_adds_after > report.mult_adds_before == conv_cost(plain)
        _assert_close(_run(aligned, x), expected)
        assert [o.type for o in aligned.graph.output] == [o.type for o in plain.graph.output]


def test_classifier_export_verifies_the_aligned_graph_and_records_it(tmp_path):
    model = _tiny(genotypes.NASNET_A)
    path = tmp_path / "m.onnx"
    report = export_classifier(model, path, input_size=64, align_channels=16)  # the dynamo exporter
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta[ALIGNMENT_KEY] == "16" and int(meta["channel_alignment_channels_added"]) > 0
    assert report.alignment["multiple"] == 16 and report.alignment["convs_padded"] > 0
    assert report.max_rel_error < 1e-4  # against the unpadded PyTorch model, on inputs other than the traced one
    graph = onnx.load(str(path))
    _assert_aligned(graph, 16)
    assert [[d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in graph.graph.output] == [
        ["batch", 10]]
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        np.testing.assert_allclose(_run(graph, x.numpy())[0], model(x).numpy(), rtol=1e-4, atol=1e-5)
    # INT8 and the ORT format take the aligned graph (each verifies itself against it).
    quantize_onnx(path, tmp_path / "m.int8.onnx", "synthetic", num_calibration=4, num_held_out=4, min_agreement=0.0)
    assert convert_to_ort(path, tmp_path / "m.ort", target_platform="amd64").max_abs_diff <= 1e-4


def test_none_leaves_the_graph_unchanged_and_auto_follows_the_host(tmp_path):
    model = _tiny(genotypes.NASNET_A, "cifar")
    path = tmp_path / "m.onnx"
    export_classifier(model, path, input_size=32, exporter="torchscript", align_channels="none")
    graph = onnx.load(str(path))
    assert {p.key: p.value for p in graph.metadata_props}[ALIGNMENT_KEY] == "none"
    before = graph.SerializeToString()
    for value in ("none", None):
        assert align_channels(graph, value).multiple is None
        assert graph.SerializeToString() == before
    isa = set(cpu_description()["isa"])
    assert auto_alignment() == (16 if "avx512f" in isa else 8 if "avx2" in isa else None)
    assert parse_alignment("16") == 16 and parse_alignment(8) == 8 and parse_alignment("AUTO") == "auto"
    for bad in (12, "4", "yes", True):
        with pytest.raises(ValueError, match="auto, none, 8, 16"):
            parse_alignment(bad)
    with pytest.raises(ValueError, match="align_channels"):  # refused before anything is traced or written
        export_classifier(model, tmp_path / "bad.onnx", input_size=32, align_channels=12)
    assert not (tmp_path / "bad.onnx").exists()


def test_dynamic_size_backbone_keeps_real_outputs_and_proves_its_computed_pads(tmp_path):
    model = _tiny(genotypes.PNASNET_5, features_only=True)
    path = tmp_path / "bb.onnx"
    report = export_backbone(model, path, input_size=64, exporter="torchscript", dynamic_size=True,
                             align_channels=16)  # verified at another size of the other parity
    assert report.alignment["convs_padded"] > 0
    assert "Pad" not in report.alignment["ops_kept_real"]  # batch and channel pads proved 0 in the graph arithmetic
    graph = onnx.load(str(path))
    x = torch.randn(1, 3, 97, 75)
    with torch.no_grad():
        expected = [t.numpy() for t in model(x).values()]
    got = _run(graph, x.numpy())
    assert [g.shape[1] for g in got] == [f["num_chs"] for f in model.feature_info]  # the real channel counts
    _assert_close(got, expected)


def _conv(name: str, cin: int, cout: int, rng, group: int = 1, k: int = 3) -> list:
    w = numpy_helper.from_array(rng.standard_normal((cout, cin // group, k, k)).astype(np.float32), f"{name}_w")
    b = numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), f"{name}_b")
    return [w, b]


def test_concat_interleaving_depthwise_and_ops_the_pass_does_not_know():
    """A hand-built graph with every situation: a Concat of padded pieces (interleaved padding)
    added to a convolution's output, a depthwise convolution with two filters per channel, a
    per-channel BatchNorm and Mul, Softmax over the channels (read with real channels only), Shape
    of a padded tensor, and outputs of odd channel counts."""
    rng = np.random.default_rng(0)
    inits = [*_conv("a", 3, 5, rng), *_conv("b", 3, 7, rng), *_conv("c", 3, 12, rng), *_conv("dw", 12, 24, rng, 12),
             *_conv("d", 24, 6, rng, k=1)]
    inits += [numpy_helper.from_array(v.astype(np.float32), n) for n, v in (
        ("bn_s", rng.random(12) + 0.5), ("bn_b", rng.standard_normal(12)), ("bn_m", rng.standard_normal(12) * 0.1),
        ("bn_v", rng.random(12) + 0.5), ("scale", rng.standard_normal((1, 12, 1, 1))))]
    nodes = [
        helper.make_node("Conv", ["x", "a_w", "a_b"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "b_w", "b_b"], ["b"], pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["a", "b"], ["ab"], axis=1),
        helper.make_node("Conv", ["x", "c_w", "c_b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["ab", "c"], ["sum"]),
        helper.make_node("BatchNormalization", ["sum", "bn_s", "bn_b", "bn_m", "bn_v"], ["bn"]),
        helper.make_node("Mul", ["bn", "scale"], ["scaled"]),
        helper.make_node("Relu", ["scaled"], ["relu"]),
        helper.make_node("MaxPool", ["relu"], ["pool"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["pool", "dw_w", "dw_b"], ["dw"], group=12, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["dw", "d_w", "d_b"], ["d"]),
        helper.make_node("Softmax", ["relu"], ["soft"], axis=1),
        helper.make_node("Shape", ["dw"], ["shape"]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", c, 8, 8])
                               for n, c in (("d", 6), ("soft", 12), ("ab", 12))]
                              + [helper.make_tensor_value_info("shape", TensorProto.INT64, [4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    expected = _run(model, x)
    for multiple in (8, 16):
        aligned = _copy(model)
        report = align_channels(aligned, multiple)
        onnx.checker.check_model(aligned, full_check=True)
        _assert_aligned(aligned, multiple)
        got = _run(aligned, x)
        _assert_close(got[:3], expected[:3])
        assert got[3].tolist() == expected[3].tolist() == [2, 24, 8, 8]  # Shape reports the real channels
        assert report.ops_kept_real == {"Softmax": 1}
        dw = next(n for n in aligned.graph.node if n.op_type == "Conv" and n.input[1].startswith("dw_w"))
        assert next(a.i for a in dw.attribute if a.name == "group") % multiple == 0


def test_torchvision_detector_export_aligns_its_backbone(tmp_path):
    from detection.torchvision import torchvision_detector
    from export.torchvision_detector import export_torchvision_detector

    torch.manual_seed(0)
    model = torchvision_detector("fasterrcnn", genotypes.NASNET_A, 4, cells=1, filters=4, min_size=96, max_size=128,
                                 fpn_channels=32, score_thresh=0.0).eval()
    report = export_torchvision_detector(model, tmp_path / "det.onnx", (96, 128), align_channels=16)
    assert int(report.metadata["verified_detections"]) > 0  # verified against PyTorch at another size
    assert report.metadata[ALIGNMENT_KEY] == "16" and int(report.metadata["channel_alignment_convs_padded"]) > 20


def test_cli_flag_and_bad_value(tmp_path, capsys, genotype_file):
    base = ["export", "classifier", "--genotype", str(genotype_file), "--cells", "1", "--filters", "6",
            "--random-weights", "--input-size", "32", "--batch", "1", "--exporter", "torchscript"]
    out = tmp_path / "m.onnx"
    err = expect_clean_error(capsys, *base, "--align-channels", "12", "-o", str(out), names=["--align-channels", "'12'"])
    assert err.count("error:") == 1 and "auto" in err and not out.exists()
    for kind in ("backbone", "detector"):
        expect_clean_error(capsys, "export", kind, "--align-channels", "32", "-o", str(out), names=["--align-channels"])
    result = run_cli(capsys, *base, "--align-channels", "8", "-o", str(out), "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["alignment"]["multiple"] == 8
    assert {p.key: p.value for p in onnx.load(str(out)).metadata_props}[ALIGNMENT_KEY] == "8"
    _assert_aligned(onnx.load(str(out)), 8)
