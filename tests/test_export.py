"""export/: ONNX files that verify themselves, and leave nothing behind when they fail."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

import nasnet_backbones as nb
from export import ExportVerificationError, export_backbone, export_classifier
from export import onnx_export
from export.onnx_export import graph_problems
from nasnet_backbones.cli import main

from helpers import randomize_batchnorm


@pytest.fixture(scope="module")
def mobile_weights(cadene_mobile, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "nasnetamobile.pth"
    torch.save(cadene_mobile.state_dict(), path)
    return path


def _run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})


def test_classifier_with_reference_weights_matches_pytorch(mobile_weights, cadene_mobile, tmp_path, capsys):
    out = tmp_path / "mobile.onnx"
    assert main(["export", "classifier", "--model", "nasnet_a_mobile", "--weights", str(mobile_weights), "-o", str(out),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["verified_inputs"] == [[1, 3, 224, 224], [3, 3, 224, 224]] and report["max_rel_error"] < 1e-4
    x = torch.randn(4, 3, 224, 224)  # a fourth batch size: the batch axis is dynamic
    with torch.no_grad():
        expected = cadene_mobile(x).numpy()
    (logits,) = _run(out, x)
    assert np.abs(logits - expected).max() <= 1e-4 * np.abs(expected).max()
    graph = onnx.load(str(out))
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta["source_model"] == "nasnet_a_4_1056" and meta["input_size"] == "224" and meta["exporter"] == "dynamo"
    assert json.loads(meta["class_names"])[0] == "tench"
    assert graph_problems(graph) == []
    ops = {n.op_type for n in graph.graph.node}
    assert "BatchNormalization" not in ops or sum(n.op_type == "BatchNormalization" for n in graph.graph.node) <= 4
    # Static pads in the convolutions and pools: a Pad only for each factorized reduction's shift.
    assert sum(n.op_type == "Pad" for n in graph.graph.node) <= 4
    assert not ops & {"Dropout", "RandomUniformLike", "Bernoulli"}


@pytest.mark.parametrize("weights", ["random", "converted"])
def test_backbone_outputs_are_named_by_stride(tmp_path, weights, mobile_weights):
    torch.manual_seed(0)
    if weights == "converted":  # Cadene's checkpoint converted on loading: the mobile network
        model = nb.create_model("nasnet_a_mobile", features_only=True, pretrained=mobile_weights).eval()
    else:  # a tiny network (the dynamo exporter's time grows with the graph)
        model = nb.build_nasnet(nb.genotypes.NASNET_A, num_cells=3, num_filters=8, features_only=True).eval()
        randomize_batchnorm(model)
    report = export_backbone(model, tmp_path / "bb.onnx", input_size=128, batch=2)
    assert report.outputs == ["stride2", "stride4", "stride8", "stride16", "stride32"]
    session = ort.InferenceSession(str(tmp_path / "bb.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == report.outputs
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        expected = model(x)
    for name, got in zip(report.outputs, _run(tmp_path / "bb.onnx", x)):
        ref = expected[name].numpy()
        assert got.shape == ref.shape and np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


def test_exports_are_in_eval_mode_without_training_ops(tmp_path, tiny_imagenet_model):
    tiny_imagenet_model.train()  # drop path and the aux head are on in training
    export_classifier(tiny_imagenet_model, tmp_path / "tiny.onnx", input_size=96)
    graph = onnx.load(str(tmp_path / "tiny.onnx"))
    assert [o.name for o in graph.graph.output] == ["logits"]  # no auxiliary logits
    assert graph_problems(graph) == []


def test_failed_verification_leaves_no_file(tmp_path, tiny_imagenet_model, capsys):
    out = tmp_path / "never.onnx"
    with pytest.raises(ExportVerificationError, match="over the tolerance"):
        export_classifier(tiny_imagenet_model, out, input_size=96, rtol=0.0, atol=0.0)
    assert list(tmp_path.iterdir()) == []


def test_broken_graph_fails_the_command_and_leaves_no_file(tmp_path, monkeypatch, capsys):
    real = onnx_export._fold_constants

    def drop_a_node(path):
        graph = real(path)
        del graph.graph.node[3]  # an output some later node reads: no longer a valid graph
        return graph

    monkeypatch.setattr(onnx_export, "_fold_constants", drop_a_node)
    cell = tmp_path / "cell.json"
    nb.genotypes.NASNET_A.to_json(cell)
    out = tmp_path / "out" / "broken.onnx"
    code = main(["export", "classifier", "--genotype", str(cell), "--cells", "1", "--filters", "8", "--random-weights",
                 "--input-size", "96", "-o", str(out)])
    assert code == 2
    assert "nasnet export: error:" in capsys.readouterr().err
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_graph_problems_finds_negative_pads_and_random_ops():
    pads = helper.make_tensor("pads", TensorProto.INT64, [8], [0, 0, -1, 0, 0, 0, 1, 0])
    nodes = [helper.make_node("Pad", ["x", "pads"], ["y"], name="bad_pad"),
             helper.make_node("RandomUniformLike", ["y"], ["z"], name="noise")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], initializer=[pads])
    problems = graph_problems(helper.make_model(graph))
    assert any("negative pads" in p for p in problems) and any("RandomUniformLike" in p for p in problems)


def test_fixed_batch_and_bad_arguments(tmp_path, tiny_imagenet_model, capsys):
    report = export_classifier(tiny_imagenet_model, tmp_path / "b1.onnx", input_size=96, batch=1)
    assert report.input_shape == [1, 3, 96, 96] and report.verified_inputs == [[1, 3, 96, 96]]
    with pytest.raises(ValueError, match="features_only"):
        export_backbone(tiny_imagenet_model, tmp_path / "x.onnx")
    with pytest.raises(SystemExit):
        main(["export", "classifier", "--model", "nasnet_a_mobile", "--batch", "zero", "-o", str(tmp_path / "y.onnx")])
    assert "--batch must be 'dynamic'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def trained_classifier(tmp_path_factory):
    """A small NASNet-A classifier trained for a few epochs on generated colour-class images."""
    from PIL import Image

    from nasnet_backbones.data import load_image_folder
    from nasnet_backbones.training import Trainer, recipe_for
    from nasnet_backbones.training.distributed import DistContext
    from nasnet_backbones.transforms import ClassificationEval

    root = tmp_path_factory.mktemp("quant")
    rng = np.random.default_rng(0)
    for c in range(10):
        (root / "images" / f"class_{c}").mkdir(parents=True)
        base = rng.integers(0, 255, 3)
        for i in range(8):
            arr = np.clip(base + rng.normal(0, 25, (40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / "images" / f"class_{c}" / f"{i}.png")
    torch.manual_seed(0)
    # Mobile width (44): at small widths the graph structure, not the weights, dominates the file.
    model = nb.build_nasnet(nb.genotypes.NASNET_A, num_cells=6, num_filters=44, stem="cifar", num_classes=10,
                            img_size=32, aux_head=False, drop_path_prob=0.0)
    data = load_image_folder(root / "images", ClassificationEval(32, 36))
    recipe = recipe_for("folder").with_overrides(epochs=4, batch_size=16, lr=0.05, aux_weight=0.0)
    Trainer(model, recipe, data, None, root / "run", DistContext(0, 1, 0, torch.device("cpu")), workers=0).fit()
    path = root / "fp32.onnx"
    export_classifier(model.eval(), path, input_size=32)
    return root, path


def test_int8_is_smaller_and_agrees_with_fp32(trained_classifier, tmp_path, capsys):
    root, fp32 = trained_classifier
    out = tmp_path / "int8.onnx"
    assert main(["export", "quantize", str(fp32), "--calib", str(root / "images"), "--per-channel",
                 "--num-calibration", "32", "--num-held-out", "40", "-o", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["size_ratio"] >= 3.0, report
    # Stated threshold: INT8 picks the same class as FP32 on at least 90% of 40 held-out images.
    assert report["top1_agreement"] >= 0.9, report
    graph = onnx.load(str(out))
    assert any(n.op_type == "QuantizeLinear" for n in graph.graph.node)
    assert {p.key for p in graph.metadata_props} >= {"source_model", "quantization"}
    assert {p.key: p.value for p in graph.metadata_props}["exporter"] == "dynamo"  # the FP32 source's record


def test_quantize_flags_reach_the_graph(trained_classifier, tmp_path, capsys):
    root, fp32 = trained_classifier
    quantization = {}
    for flags in ([], ["--reduce-range", "on", "--no-pool-as-conv"]):
        out = tmp_path / f"int8{len(flags)}.onnx"
        assert main(["export", "quantize", str(fp32), "--calib", str(root / "images"), "--num-calibration", "8",
                     "--num-held-out", "8", "--min-agreement", "0", "-o", str(out), *flags]) == 0
        graph = onnx.load(str(out))
        quantization[len(flags)] = {p.key: p.value for p in graph.metadata_props}["quantization"]
        pools = [n for n in graph.graph.node if n.op_type == "AveragePool"]
        assert bool(pools) == bool(flags)  # by default the 3x3 pools run as depthwise convolutions
    capsys.readouterr()
    assert "reduce_range" in quantization[3] and "as depthwise convolutions" in quantization[0]
    assert "as depthwise convolutions" not in quantization[3]
    # this host's VNNI decides the default
    from nasnet_backbones.host import host_has_vnni
    assert ("reduce_range" in quantization[0]) == (not host_has_vnni())


def test_ort_format_loads_back(trained_classifier, tmp_path, capsys):
    _, fp32 = trained_classifier
    assert main(["export", "ort", str(fp32), "-o", str(tmp_path / "model.ort")]) == 0
    assert "verified against" in capsys.readouterr().out
    session = ort.InferenceSession(str(tmp_path / "model.ort"), providers=["CPUExecutionProvider"])
    # A mobile export's batch is fixed to 1 (NNAPI and CoreML take no nodes with a dynamic one).
    assert session.run(None, {"input": np.zeros((1, 3, 32, 32), np.float32)})[0].shape == (1, 10)


def test_quantize_needs_enough_images(trained_classifier, tmp_path, capsys):
    _, fp32 = trained_classifier
    (tmp_path / "few").mkdir()
    assert main(["export", "quantize", str(fp32), "--calib", str(tmp_path / "few"), "-o", str(tmp_path / "q.onnx")]) == 2
    assert "has 0 images" in capsys.readouterr().err and not (tmp_path / "q.onnx").exists()


def test_bench_reports_each_backend(trained_classifier, tmp_path, capsys):
    _, fp32 = trained_classifier
    assert main(["bench", "--onnx", str(fp32), "--int8", str(fp32), "--runs", "3", "--warmup", "1", "--batch", "2",
                 "--no-ort", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    rows = record["rows"]
    assert record["batch"] == 2 and record["host"]["model"]
    assert [r["backend"] for r in rows] == ["onnxruntime FP32", "onnxruntime INT8"]
    for r in rows:
        assert 0 < r["median_ms"] <= r["p90_ms"] * 1.0001 and r["images_per_s"] > 0 and r["peak_rss_mb"] > 10


@pytest.fixture(scope="module")
def any_size(tmp_path_factory):
    """The tiny NASNet-A classifier (ImageNet stem) exported for any height and width, with its report."""
    torch.manual_seed(0)
    model = nb.build_nasnet(nb.genotypes.NASNET_A, num_cells=3, num_filters=8, stem="imagenet", num_classes=10,
                            img_size=96, aux_head=True).eval()
    path = tmp_path_factory.mktemp("any_size") / "any_size.onnx"
    return model, path, export_classifier(model, path, input_size=96, dynamic_size=True)


def test_dynamic_size_export_is_exact_at_other_sizes(any_size):
    model, path, report = any_size
    assert report.input_shape == ["batch", 3, "height", "width"] and [1, 3, 129, 127] in report.verified_inputs
    graph = onnx.load(str(path))
    assert [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.graph.input] == [
        ["batch", 3, "height", "width"]]
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta["exporter"] == "dynamo" and meta["min_input_size"] == "64"  # 2 x the deepest stride, 32
    for h, w in [(64, 64), (64, 65), (97, 130), (111, 96), (128, 127)]:  # both parities, both dimensions
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            expected = model(x).numpy()
        (got,) = _run(path, x)
        assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max(), (h, w)
    # The pads follow the size's parity, so they are graph arithmetic (tests/test_onnx_padding.py
    # evaluates them); nothing else a deployment would trip on.
    assert [p for p in graph_problems(graph) if "computed at run time" not in p] == []


def test_detector_export_matches_pytorch_at_another_size(tmp_path, capsys):
    pytest.importorskip("detectron2")
    cell = tmp_path / "cell.json"
    nb.genotypes.NASNET_A.to_json(cell)
    out = tmp_path / "det.onnx"
    assert main(["export", "detector", "--config-file", "faster_rcnn_nasnet_a_mobile_FPN_1x", "--weights", "",
                 "--input-size", "128", "160", "-o", str(out), "--opts", "MODEL.NASNET.GENOTYPE", str(cell),
                 "MODEL.NASNET.CELLS", "1", "MODEL.NASNET.FILTERS", "8", "MODEL.NASNET.NORM", "BN",
                 "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]) == 0
    assert "verified with onnxruntime on inputs [[3, 161, 129]]" in capsys.readouterr().out
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()][:3] == ["boxes", "classes", "scores"]
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["class_names"])[0] == "person"  # the config's COCO test set names the classes
    boxes, classes, scores, _ = session.run(None, {"image": np.random.default_rng(0).uniform(0, 255, (3, 100, 140))
                                                   .astype(np.float32)})
    assert boxes.shape[1] == 4 and len(classes) == len(scores) > 0


@pytest.mark.parametrize("config, outputs", [
    ("mask_rcnn_nasnet_a_mobile_FPN_1x", ["boxes", "classes", "masks", "scores", "image_size"]),
    ("panoptic_fpn_nasnet_a_mobile_1x", ["boxes", "classes", "masks", "scores", "image_size", "sem_seg"]),
])
def test_mask_and_panoptic_detectors_export_with_their_outputs(config, outputs, tmp_path):
    """Mask probabilities and semantic logits are outputs too, named and verified at another size."""
    pytest.importorskip("detectron2")
    import detection
    from export.detectron2_detector import export_detector

    cell = tmp_path / "cell.json"
    nb.genotypes.NASNET_A.to_json(cell)
    cfg = detection.get_config(config)
    cfg.MODEL.NASNET.GENOTYPE, cfg.MODEL.NASNET.CELLS, cfg.MODEL.NASNET.FILTERS = str(cell), 1, 8
    cfg.MODEL.NASNET.NORM, cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = "BN", 0.0
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 2
    report = export_detector(cfg, None, tmp_path / "det.onnx", (96, 128))
    assert int(report.metadata["verified_detections"]) > 0
    session = ort.InferenceSession(str(tmp_path / "det.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == outputs
    got = dict(zip(outputs, session.run(None, {"image": np.full((3, 100, 90), 128, np.float32)})))
    assert got["masks"].shape[1:] == (1, 28, 28) and len(got["masks"]) == len(got["scores"])
    assert ((got["masks"] >= 0) & (got["masks"] <= 1)).all()
    if "sem_seg" in got:
        assert got["sem_seg"].shape == (2, 128, 96)  # padded to a multiple of 32


def test_detector_int8_reports_box_agreement(tmp_path, capsys):
    pytest.importorskip("detectron2")
    import detection
    from export.detectron2_detector import export_detector
    from export.quantize import quantize_onnx

    cell = tmp_path / "cell.json"
    nb.genotypes.NASNET_A.to_json(cell)
    cfg = detection.get_config("faster_rcnn_nasnet_a_mobile_FPN_1x")
    cfg.MODEL.NASNET.GENOTYPE, cfg.MODEL.NASNET.CELLS, cfg.MODEL.NASNET.FILTERS = str(cell), 1, 8
    cfg.MODEL.NASNET.NORM, cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = "BN", 0.0
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 96, 128
    export_detector(cfg, None, tmp_path / "det.onnx", (96, 96))
    # Random weights score nothing highly; match every FP32 detection.
    report = quantize_onnx(tmp_path / "det.onnx", tmp_path / "det.int8.onnx", "synthetic", True, 4, 2,
                           box_score_threshold=0.0)
    assert report.size_ratio > 1.5 and report.top1_agreement is None
    assert 0.0 <= report.mean_box_iou <= 1.0  # random weights: the value itself means little here
    graph = onnx.load(str(tmp_path / "det.int8.onnx"))
    assert {"RoiAlign", "QuantizeLinear"} <= {n.op_type for n in graph.graph.node}  # RoIAlign stays FP32


def test_quantize_ort_and_bench_accept_every_export_shape(tmp_path, any_size, capsys):
    import shutil

    from export.ort_format import convert_to_ort
    from export.quantize import quantize_onnx

    model, path, _ = any_size
    shutil.copyfile(path, tmp_path / "any_size.onnx")
    export_classifier(model, tmp_path / "batch2.onnx", input_size=96, batch=2)
    for name in ("any_size", "batch2"):
        # Random weights: near-tied logits flip under INT8 (3 of 4 images agree), below the 90% default.
        report = quantize_onnx(tmp_path / f"{name}.onnx", tmp_path / f"{name}.int8.onnx", "synthetic", True, 4, 2,
                               min_agreement=0.5)
        onnx.checker.check_model(onnx.load(str(tmp_path / f"{name}.int8.onnx")), full_check=True)
        assert report.top1_agreement is not None
    ort_file = convert_to_ort(tmp_path / "any_size.onnx").path
    assert main(["bench", "--onnx", str(ort_file), "--runs", "2", "--warmup", "1", "--json"]) == 0
    # an .ort is timed as it is (nothing converted from it)
    assert [r["backend"] for r in json.loads(capsys.readouterr().out)["rows"]] == [".ort FP32"]
    with pytest.raises(ValueError, match="must end in .ort"):
        convert_to_ort(tmp_path / "any_size.onnx", tmp_path / "model.bin")
    with pytest.raises(ValueError, match="at least one image"):
        quantize_onnx(tmp_path / "batch2.onnx", tmp_path / "x.onnx", "synthetic", True, 4, 0)
    assert not (tmp_path / "x.onnx").exists()
