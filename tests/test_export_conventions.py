"""One record of an exported graph's input conventions: written by every export, kept by INT8, read
by quantize and bench; graphs written before the record existed read by the documented old defaults."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from detection.torchvision import torchvision_detector
from export import export_backbone, export_classifier, quantize_onnx
from export.conventions import CONVENTIONS_KEY, InputConventions, read_conventions, write_conventions
from export.exporters import EXPORTER_KEY
from export.quantize import calibration_inputs, load_exported
from export.torchvision_detector import export_torchvision_detector
from nasnet_backbones import build_nasnet, genotypes


def _graph(size: list, metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    """A one-convolution graph (3 -> 4 channels) with one input of shape ``size`` (3-D: a detector's)."""
    batched = size if len(size) == 4 else [1, *size]
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], np.ones(108, np.float32).tolist())
    nodes = [helper.make_node("Unsqueeze", ["x", "axes"], ["x4"], name="batch")] if len(size) == 3 else []
    axes = [helper.make_tensor("axes", TensorProto.INT64, [1], [0])] if len(size) == 3 else []
    nodes.append(helper.make_node("Conv", ["x4" if len(size) == 3 else "x", "w"], ["y"], name="conv", pads=[1] * 4))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, size)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, *batched[2:]])],
                              initializer=[weight, *axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if metadata:
        helper.set_model_props(model, metadata)
    return model


def test_classifier_and_backbone_exports_record_their_conventions(tiny_imagenet_model, tmp_path):
    export_classifier(tiny_imagenet_model, tmp_path / "fixed.onnx", input_size=96)
    fixed = read_conventions(onnx.load(str(tmp_path / "fixed.onnx")))
    assert fixed == InputConventions("nasnet", (0.0, 1.0), "RGB", "center_crop", False, 96, (0.5,) * 3, (0.5,) * 3,
                                     109, "bilinear")
    export_classifier(tiny_imagenet_model, tmp_path / "any.onnx", input_size=96, dynamic_size=True)
    assert read_conventions(onnx.load(str(tmp_path / "any.onnx"))).dynamic_size
    torch.manual_seed(0)
    features = build_nasnet(genotypes.NASNET_A, num_cells=3, num_filters=8, stem="imagenet", features_only=True)
    export_backbone(features, tmp_path / "backbone.onnx", input_size=64)
    assert read_conventions(onnx.load(str(tmp_path / "backbone.onnx"))).input_size == 64
    # INT8 keeps its source's record, and calibration follows it.
    quantize_onnx(tmp_path / "fixed.onnx", tmp_path / "int8.onnx", "synthetic", True, 2, 1, min_agreement=0.0)
    assert read_conventions(onnx.load(str(tmp_path / "int8.onnx"))) == fixed
    # Which exporter wrote them (the default: dynamo) is recorded beside the conventions, and INT8 keeps it.
    for name in ("fixed", "any", "backbone", "int8"):
        assert _exporter(tmp_path / f"{name}.onnx") == "dynamo", name


def _exporter(path) -> str:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}[EXPORTER_KEY]


def test_torchvision_detector_export_records_its_conventions(tmp_path):
    torch.manual_seed(0)
    model = torchvision_detector("fasterrcnn", genotypes.NASNET_A, 3, cells=1, filters=4, min_size=96, max_size=128,
                                 fpn_channels=32, score_thresh=0.0).eval()
    export_torchvision_detector(model, tmp_path / "det.onnx", (96, 128))
    conventions = read_conventions(onnx.load(str(tmp_path / "det.onnx")))
    assert conventions == InputConventions("torchvision", (0.0, 1.0), "RGB", "in_graph", True, shortest_side=96,
                                           longest_side=128)
    assert _exporter(tmp_path / "det.onnx") == "torchscript"  # detectors: export.detections.DETECTOR_EXPORTER


def test_detectron2_detector_export_records_its_conventions(tmp_path):
    pytest.importorskip("detectron2")
    import detection
    from export import export_detector

    cell = tmp_path / "cell.json"
    genotypes.NASNET_A.to_json(cell)
    cfg = detection.get_config("faster_rcnn_nasnet_a_mobile_FPN_1x")
    cfg.MODEL.NASNET.GENOTYPE, cfg.MODEL.NASNET.CELLS, cfg.MODEL.NASNET.FILTERS = str(cell), 1, 8
    cfg.MODEL.NASNET.NORM, cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = "BN", 0.0
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 96, 128
    export_detector(cfg, None, tmp_path / "det.onnx", (96, 96))
    model = onnx.load(str(tmp_path / "det.onnx"))
    assert _exporter(tmp_path / "det.onnx") == "torchscript"
    conventions = read_conventions(model)
    assert (conventions.framework, conventions.value_range, conventions.resize) == ("detectron2", (0.0, 255.0),
                                                                                    "shortest_side")
    assert (conventions.channel_order, conventions.shortest_side, conventions.longest_side) == (cfg.INPUT.FORMAT, 96, 128)
    images = list(calibration_inputs(model, "synthetic", 2))
    assert all(min(x.shape[1:]) == 96 and x.max() > 1.0 for x in images)  # 0-255, shortest side 96


def test_write_replaces_and_read_round_trips():
    model = _graph([1, 3, 8, 8])
    first = InputConventions("nasnet", (0.0, 1.0), "RGB", "center_crop", False, 8, (0.5,) * 3, (0.5,) * 3, 9)
    second = InputConventions("detectron2", (0.0, 255.0), "BGR", "shortest_side", True, shortest_side=64,
                              longest_side=96)
    write_conventions(model, first)
    write_conventions(model, second)
    assert [p.key for p in model.metadata_props].count(CONVENTIONS_KEY) == 1
    assert read_conventions(model) == second == InputConventions.from_json(second.to_json())


@pytest.mark.parametrize("size, metadata, expected", [
    ([1, 3, "h", "w"], {"input_size": "8"},
     InputConventions("nasnet", (0.0, 1.0), "RGB", "center_crop", True, 8, (0.5,) * 3, (0.5,) * 3, 9)),
    ([1, 3, 16, 16], {"mean": "[0.4, 0.5, 0.6]", "std": "[0.2, 0.2, 0.2]", "resize_size": "20",
                      "interpolation": '"bicubic"'},
     InputConventions("nasnet", (0.0, 1.0), "RGB", "center_crop", False, 16, (0.4, 0.5, 0.6), (0.2,) * 3, 20,
                      "bicubic")),
    ([3, "h", "w"], {"input": "CHW float 0-255, BGR, resized to shortest side 96", "min_size_test": "96",
                     "max_size_test": "128"},
     InputConventions("detectron2", (0.0, 255.0), "BGR", "shortest_side", True, shortest_side=96, longest_side=128)),
    ([3, "h", "w"], {}, InputConventions("detectron2", (0.0, 255.0), "RGB", "shortest_side", True, shortest_side=800,
                                         longest_side=1333)),
    ([3, "h", "w"], {"framework": "torchvision", "fixed_size": "[320, 320]"},
     InputConventions("torchvision", (0.0, 1.0), "RGB", "in_graph", True, shortest_side=320, longest_side=320)),
    ([3, "h", "w"], {"framework": "torchvision", "min_size": "[96]", "max_size": "128"},
     InputConventions("torchvision", (0.0, 1.0), "RGB", "in_graph", True, shortest_side=96, longest_side=128)),
])
def test_graphs_without_a_record_read_by_the_old_defaults(size, metadata, expected, tmp_path):
    model = _graph(size, metadata)
    assert read_conventions(model) == expected
    onnx.save(model, str(tmp_path / "old.onnx"))
    load_exported(tmp_path / "old.onnx")  # such graphs still load


@pytest.mark.parametrize("record, cause", [
    ("not json", "not JSON"),
    ('{"framework": "keras", "value_range": [0, 1], "channel_order": "RGB", "resize": "center_crop", '
     '"dynamic_size": false, "input_size": 8}', "framework 'keras'"),
    ('{"framework": "nasnet", "value_range": [0, 1], "channel_order": "RGB", "resize": "center_crop", '
     '"dynamic_size": false, "input_size": 8, "std": [0.5, 0, 0.5]}', "std"),
    ('{"framework": "detectron2", "value_range": [0, 255], "channel_order": "RGB", "resize": "shortest_side", '
     '"dynamic_size": true}', "shortest_side and longest_side"),
    ('{"framework": "nasnet"}', "lacks"),
])
def test_a_malformed_record_is_one_clear_error(record, cause, tmp_path):
    path = tmp_path / "bad.onnx"
    onnx.save(_graph([1, 3, 8, 8], {CONVENTIONS_KEY: record}), str(path))
    with pytest.raises(ValueError, match=cause) as info:
        load_exported(path)
    assert str(path) in str(info.value) and "re-export" in str(info.value)
