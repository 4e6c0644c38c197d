"""ONNX export of torchvision detectors with NASNet backbones: one graph for every image size,
verified on another size than the traced one, and ``nasnet export detector --framework torchvision``."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from export import ExportVerificationError
from export.detections import DETECTOR_EXPORTER, check_image, match_detections
from export.exporters import write_onnx
from export.torchvision_detector import OneImageDetector, eager_resize, export_torchvision_detector
from nasnet_backbones import genotypes
from nasnet_backbones.cli import main
from detection.torchvision import torchvision_detector

TINY = dict(cells=1, filters=4)
RCNN = dict(min_size=96, max_size=128, fpn_channels=32, score_thresh=0.0)


def _distinct_scores(model: torch.nn.Module, weight_std: float, bias_std: float) -> None:
    """Redraw the classification head. Untrained RetinaNet and SSDlite heads score almost every box
    alike (a 0.01 prior, or uniform over the classes), and boxes of equal score come out of top-k
    and NMS in an arbitrary order, so PyTorch and onnxruntime may keep different ones; with
    spread-out scores the comparison is about the graph, not about tie-breaking."""
    g = torch.Generator().manual_seed(0)
    for m in model.head.classification_head.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.weight.data.normal_(0.0, weight_std, generator=g)
            if m.bias is not None:
                m.bias.data.normal_(0.0, bias_std, generator=g)


def _run(path, image: torch.Tensor) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"image": image.numpy()})))


def _eager(model: torch.nn.Module, image: torch.Tensor, masks: bool = False) -> dict[str, np.ndarray]:
    names = ["boxes", "classes", "scores", "masks"] if masks else ["boxes", "classes", "scores"]
    with torch.no_grad():
        return dict(zip(names, (t.numpy() for t in OneImageDetector(model.eval(), masks)(image))))


@pytest.mark.parametrize("kind, settings, spread", [
    ("fasterrcnn", RCNN, None),
    ("maskrcnn", RCNN, None),
    ("fcos", {**RCNN, "fpn_channels": 64}, None),  # GroupNorm(32) needs more than one value per group at P7
    ("retinanet", {**RCNN, "score_thresh": 0.5}, (0.03, 0.5)),
    ("ssdlite", dict(min_size=96, score_thresh=0.5), (0.01, 1.0)),
])
def test_export_matches_pytorch_at_other_sizes(kind, settings, spread, tmp_path):
    torch.manual_seed(0)
    model = torchvision_detector(kind, genotypes.NASNET_A, 4, **TINY, **settings).eval()
    if spread:
        _distinct_scores(model, *spread)
    out = tmp_path / f"{kind}.onnx"
    report = export_torchvision_detector(model, out, (96, 128), metadata={"detector": kind})
    assert report.verified_inputs == [[3, 129, 97]]  # not the traced 96 x 128, and the other parity
    assert int(report.metadata["verified_detections"]) > 0 and report.max_abs_error < 0.05
    masks = kind == "maskrcnn"
    assert report.outputs == ["boxes", "classes", "scores"] + (["masks"] if masks else [])
    graph = onnx.load(str(out))
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta["framework"] == "torchvision" and meta["detector"] == kind and "0-1, RGB" in meta["input"]
    # A third size, landscape, straight from the file: the same detections as the PyTorch model.
    image = check_image((150, 230), None, bgr=False) / 255.0
    got, expected = _run(out, image), _eager(model, image, masks)
    assert len(expected["scores"]) > 0
    assert match_detections(got, expected, 1e-3, 0.005 * 230) < 0.05
    assert (got["boxes"][:, 2] <= 230).all() and (got["boxes"][:, 3] <= 150).all()  # the input image's pixels
    if masks:
        assert got["masks"].shape == (len(got["scores"]), 1, 150, 230)
        assert np.abs(got["masks"] - expected["masks"]).max() < 1e-3


def test_failed_verification_leaves_no_file(tmp_path):
    torch.manual_seed(0)
    model = torchvision_detector("fasterrcnn", genotypes.NASNET_A, 4, **TINY, **RCNN)
    with pytest.raises(ExportVerificationError, match="onnxruntime has no detection matching PyTorch's detection 0"):
        export_torchvision_detector(model, tmp_path / "det.onnx", (96, 128), score_atol=-1.0)  # nothing can pass
    assert list(tmp_path.iterdir()) == []
    assert model.training  # the caller's mode is restored


def test_traced_resize_picks_the_eager_size(tmp_path):
    """torchvision's traced resize works in float32 and is a pixel short at some sizes (97 x 129 gave
    95 x 127); the export's resize is the eager one at every size."""
    transform = GeneralizedRCNNTransform(96, 128, [0.0] * 3, [1.0] * 3).eval()

    class Resize(torch.nn.Module):
        def forward(self, image):
            return transform.resize(image, None)[0]

    with eager_resize():  # traced as the detector exports trace it (export.detections.DETECTOR_EXPORTER)
        write_onnx(Resize(), (torch.rand(3, 96, 128),), tmp_path / "resize.onnx", exporter=DETECTOR_EXPORTER, opset=17,
                   input_names=["image"], output_names=["resized"], dynamic_axes={"image": {1: "h", 2: "w"}})
    session = ort.InferenceSession(str(tmp_path / "resize.onnx"), providers=["CPUExecutionProvider"])
    for h, w in [(97, 129), (129, 97), (397, 300), (61, 333), (96, 128), (500, 500)]:
        image = torch.rand(3, h, w)
        (got,) = session.run(None, {"image": image.numpy()})
        with torch.no_grad():
            expected = transform.resize(image, None)[0].numpy()
        assert got.shape == expected.shape, (h, w)
        np.testing.assert_allclose(got, expected, atol=1e-4)  # same size, same sampling: float rounding only


def test_cli_exports_the_saved_detector(tmp_path, capsys):
    cell = tmp_path / "cell.json"
    genotypes.NASNET_A.to_json(cell)
    torch.manual_seed(1)  # not the export's own seed: the file must hold these weights
    model = torchvision_detector("fasterrcnn", cell, 3, **TINY, **RCNN)
    torch.save(model.state_dict(), tmp_path / "det.pth")
    out = tmp_path / "det.onnx"
    args = ["export", "detector", "--framework", "torchvision", "--model", "fasterrcnn", "--backbone", str(cell),
            "--cells", "1", "--filters", "4", "--num-classes", "3", "--fpn-channels", "32", "--min-size", "96",
            "--max-size", "128", "--score-thresh", "0.0", "--input-size", "96", "128", "-o", str(out)]
    assert main([*args, "--weights", str(tmp_path / "det.pth")]) == 0
    assert "verified with onnxruntime on inputs [[3, 129, 97]]" in capsys.readouterr().out
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["detector"] == "fasterrcnn" and meta["num_classes"] == "3" and meta["weights"].endswith("det.pth")
    assert meta["exporter"] == "torchscript"  # export.detections.DETECTOR_EXPORTER
    assert json.loads(meta["min_size"]) == [96] and json.loads(meta["max_size"]) == 128
    image = check_image((120, 90), None, bgr=False) / 255.0
    got, expected = _run(out, image), _eager(model, image)
    assert len(expected["scores"]) > 0 and match_detections(got, expected, 1e-3, 0.6) < 0.05

    # A file of another detector is one clear error, and writes nothing.
    bad = tmp_path / "bad.onnx"
    assert main([*args[:-1], str(bad), "--num-classes", "5", "--weights", str(tmp_path / "det.pth")]) == 2
    err = capsys.readouterr().err
    assert "det.pth does not fit this FasterRCNN" in err and "with another shape: roi_heads.box_predictor" in err
    assert "Traceback" not in err and not bad.exists()


def test_cli_refuses_mixed_frameworks(tmp_path, capsys):
    out = str(tmp_path / "x.onnx")
    assert main(["export", "detector", "--framework", "torchvision", "-o", out]) == 2
    err = capsys.readouterr().err
    assert "--framework torchvision needs --model (fasterrcnn, maskrcnn, retinanet, fcos, ssdlite)" in err
    assert main(["export", "detector", "--framework", "torchvision", "--model", "ssdlite", "--config-file", "x.yaml",
                 "-o", out]) == 2
    assert "--config-file and --opts are for --framework detectron2" in capsys.readouterr().err
    assert main(["export", "detector", "--model", "ssdlite", "--min-size", "320", "-o", out]) == 2
    assert "--model, --min-size: for --framework torchvision only" in capsys.readouterr().err
    assert main(["export", "detector", "-o", out]) == 2
    assert "--framework detectron2 (the default) needs --config-file" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_int8_quantization_feeds_torchvision_graphs_their_own_input(tmp_path):
    """`nasnet export quantize` calibrates a torchvision graph on 0-1 RGB images at its transform's
    size (not detectron2's 0-255 convention) and reports box agreement with FP32."""
    from export.quantize import detector_inputs, quantize_onnx

    torch.manual_seed(0)
    model = torchvision_detector("fasterrcnn", genotypes.NASNET_A, 4, **TINY, **RCNN).eval()
    export_torchvision_detector(model, tmp_path / "det.onnx", (96, 128))
    images = list(detector_inputs(onnx.load(str(tmp_path / "det.onnx")), "synthetic", 2))
    assert all(x.shape == (3, 96, 96) and 0.0 <= x.min() and x.max() <= 1.0 for x in images)
    report = quantize_onnx(tmp_path / "det.onnx", tmp_path / "det.int8.onnx", "synthetic", True, 4, 2,
                           box_score_threshold=0.0)
    assert report.size_ratio > 1.5 and 0.0 <= report.mean_box_iou <= 1.0
