"""Exports through PyTorch's dynamo ONNX exporter (torch.export), the default, and the legacy
TorchScript one kept behind ``--exporter``: the same interface from both, the choice recorded,
no deprecation warnings, clear refusals, and the detectors that torch.export cannot capture yet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import nasnet_backbones as nb
from export import export_classifier
from export.exporters import EXPORTER_KEY, ExportTraceError
from export.onnx_export import export_module
from helpers import expect_clean_error, run_cli


def _tiny(img_size: int = 64) -> torch.nn.Module:
    torch.manual_seed(0)
    return nb.build_nasnet(nb.genotypes.NASNET_A, num_cells=3, num_filters=8, num_classes=10, img_size=img_size).eval()


def _dims(values) -> list[list[int | str]]:
    return [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values]


@pytest.mark.parametrize("exporter, opset", [("dynamo", 18), ("torchscript", 17)])
def test_both_exporters_give_the_same_interface_and_record_themselves(exporter, opset, tmp_path):
    model = _tiny()
    path = tmp_path / f"{exporter}.onnx"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = export_classifier(model, path, input_size=64, exporter=exporter)
    deprecations = [w for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))]
    assert not deprecations, [str(w.message)[:120] for w in deprecations]
    graph = onnx.load(str(path))
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta[EXPORTER_KEY] == exporter and meta["torch_version"] == torch.__version__
    assert "input_conventions" in meta and report.exporter == exporter and f"({exporter} exporter)" in report.summary()
    assert [op.version for op in graph.opset_import if op.domain in ("", "ai.onnx")] == [opset]
    # The same names and dimension names whichever exporter wrote it.
    assert _dims(graph.graph.input) == [["batch", 3, 64, 64]] and _dims(graph.graph.output) == [["batch", 10]]
    assert report.verified_inputs == [[1, 3, 64, 64], [3, 3, 64, 64]]  # traced at batch 2
    x = torch.randn(5, 3, 64, 64)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], model(x).numpy(), rtol=1e-4, atol=1e-5)
    if exporter == "dynamo":  # at a fixed size every TF 'SAME' pad is static, inside its Conv or MaxPool
        readers = {n.op_type for p in graph.graph.node if p.op_type == "Pad"
                   for n in graph.graph.node if p.output[0] in n.input}
        assert readers <= {"Slice"}, readers  # the factorized reduction's one-pixel shift is all that is left
        assert not {"Shape", "Gather", "Mod"} & {n.op_type for n in graph.graph.node}
    # No per-node debugging records (stack traces with this machine's paths) ship in the file.
    assert not any(n.metadata_props for n in graph.graph.node)
    assert str(Path(nb.__file__).parent).encode() not in path.read_bytes()


def test_cli_exporter_flag_and_opsets(tmp_path, capsys, genotype_file):
    base = ["export", "classifier", "--genotype", str(genotype_file), "--cells", "1", "--filters", "8",
            "--random-weights", "--input-size", "64", "--batch", "1"]
    out = tmp_path / "m.onnx"
    # The dynamo exporter writes opset 18 or later: refused before anything is built, naming the way out.
    expect_clean_error(capsys, *base, "--opset", "17", "-o", str(out),
                       names=["--opset 17", "18 or later", "--exporter torchscript"])
    assert not out.exists()
    result = run_cli(capsys, *base, "--exporter", "torchscript", "--opset", "17", "-o", str(out), "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["exporter"] == "torchscript"
    graph = onnx.load(str(out))
    assert {p.key: p.value for p in graph.metadata_props}[EXPORTER_KEY] == "torchscript"
    assert graph.opset_import[0].version == 17
    assert "legacy TorchScript-based ONNX export" not in result.err and "DeprecationWarning" not in result.err
    expect_clean_error(capsys, *base, "--exporter", "jit", "-o", str(tmp_path / "x.onnx"),
                       names=["--exporter", "invalid choice: 'jit'"])


def test_the_command_prints_its_report_and_no_exporter_chatter(tmp_path, genotype_file):
    """`nasnet export` logs at INFO; the dynamo exporter's passes would add a hundred INFO lines and
    PyTorch its deprecation notices: a user sees the report line only."""
    out = tmp_path / "m.onnx"
    result = subprocess.run([sys.executable, "-m", "nasnet_backbones.cli", "export", "classifier", "--genotype",
                             str(genotype_file), "--cells", "1", "--filters", "8", "--random-weights",
                             "--input-size", "64", "--batch", "1", "-o", str(out)],
                            capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert "(dynamo exporter): verified with onnxruntime" in result.stdout
    noise = [line for line in result.stderr.splitlines() if "export.onnx_export" not in line]
    assert noise == [], noise[:5]


class _DataDependent(torch.nn.Module):
    """A branch on a tensor's values: torch.export cannot capture it (the legacy tracer takes one side)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if x.sum() > 0 else x - 1


def test_a_module_torch_export_cannot_capture_is_one_clear_error(tmp_path):
    with pytest.raises(ExportTraceError, match=r"torch.export could not capture _DataDependent.*--exporter torchscript"):
        export_module(_DataDependent(), tmp_path / "op.onnx", 8, in_chans=2)
    assert list(tmp_path.iterdir()) == []


def test_torchvision_detectors_are_beyond_torch_export_so_far(tmp_path):
    """Why DETECTOR_EXPORTER is torchscript: torchvision's box post-processing branches on the number
    of boxes (batched_nms). When this starts passing, torchvision made it exportable: switch the default."""
    from detection.torchvision import torchvision_detector
    from export.torchvision_detector import export_torchvision_detector

    torch.manual_seed(0)
    model = torchvision_detector("fasterrcnn", nb.genotypes.NASNET_A, 4, cells=1, filters=4, min_size=64,
                                 max_size=96, fpn_channels=16, score_thresh=0.0).eval()
    with pytest.raises(ExportTraceError, match="torch.export could not capture .*data-dependent"):
        export_torchvision_detector(model, tmp_path / "det.onnx", (64, 96), exporter="dynamo")
    assert list(tmp_path.iterdir()) == []


def test_detectron2_detectors_are_beyond_torch_export_so_far(tmp_path, genotype_file):
    """detectron2's proposal filtering branches on tensor values (find_top_rpn_proposals)."""
    pytest.importorskip("detectron2")
    import detection
    from export.detectron2_detector import export_detector

    cfg = detection.get_config("faster_rcnn_nasnet_a_mobile_FPN_1x")
    cfg.MODEL.NASNET.GENOTYPE, cfg.MODEL.NASNET.CELLS, cfg.MODEL.NASNET.FILTERS = str(genotype_file), 1, 8
    cfg.MODEL.NASNET.NORM, cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = "BN", 0.0
    with pytest.raises(ExportTraceError, match="torch.export could not capture .*data-dependent"):
        export_detector(cfg, None, tmp_path / "det.onnx", (64, 96), exporter="dynamo")
    assert list(tmp_path.iterdir()) == []
