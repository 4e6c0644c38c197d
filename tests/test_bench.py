"""``nasnet bench``: every row in one run (eager, eager optimized, onnxruntime FP32 unaligned and
aligned, INT8, the ORT format), for a classifier and for a whole detectron2 detector, with the host
record and the optional per-row profile; tiny networks at small sizes, 2 timed runs (no timed
assertions: speed is for benchmarks/)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("onnxruntime")

import nasnet_backbones as nb  # noqa: E402
from export.align_channels import auto_alignment  # noqa: E402
from nasnet_backbones.host import cpu_description, cpu_summary  # noqa: E402

from helpers import expect_clean_error, run_cli  # noqa: E402

FAST = ["--runs", "2", "--warmup", "1", "--threads", "1"]


@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "cell.json"
    nb.genotypes.NASNET_A.to_json(path)
    return path


def _check_rows(record: dict, backends: list[str]) -> None:
    assert [r["backend"] for r in record["rows"]] == backends
    for r in record["rows"]:
        assert 0 < r["median_ms"] <= r["p90_ms"] * 1.0001 and r["images_per_s"] > 0 and r["peak_rss_mb"] > 10
    assert record["rows"][0]["vs_first"] == 1.0
    assert record["host"] == cpu_description() and record["host"]["model"]
    assert record["threads"] == 1 and record["batch"] == 1 and record["clock"] == "thread"  # one thread: CPU time


def _aligned_rows() -> list[str]:
    return ["onnxruntime FP32 aligned"] if auto_alignment() else []


def test_bench_genotype_gives_every_row_with_the_host(cell, capsys):
    result = run_cli(capsys, "bench", "--genotype", cell, "--cells", "1", "--filters", "8", "--stem", "cifar",
                     "--input-size", "32", *FAST, "--json")
    assert result.code == 0, result.err
    record = json.loads(result.out)
    _check_rows(record, ["PyTorch eager", "PyTorch eager optimized", "onnxruntime FP32", *_aligned_rows(),
                         "onnxruntime INT8", ".ort FP32", ".ort INT8"])
    assert record["input_size"] == 32 and record["runs"] == 2 and record["warmup"] == 1
    assert record["order"] == "alternating"  # all loaded, one call each per round
    rows = {r["backend"]: r for r in record["rows"]}
    made_from = "onnxruntime FP32 aligned" if auto_alignment() else "onnxruntime FP32"
    assert rows["onnxruntime INT8"]["source"] == rows[".ort FP32"]["source"] == made_from
    assert rows[".ort INT8"]["source"] == "onnxruntime INT8"
    assert rows[".ort FP32"]["optimization_style"] == "Fixed" and rows[".ort FP32"]["batch"] == 1
    if auto_alignment():
        assert rows["onnxruntime FP32 aligned"]["alignment"] == auto_alignment()
    else:
        assert any("aligned" in note for note in record["notes"])
    assert not any("profile" in row for row in rows.values())  # only with --profile


def test_bench_compile_adds_the_compiled_row(cell, capsys):
    """--compile times optimize_for_inference(compile=True) after its one-time compile, beside the others."""
    result = run_cli(capsys, "bench", "--genotype", cell, "--cells", "1", "--filters", "8", "--stem", "cifar",
                     "--input-size", "32", *FAST, "--compile", "--no-align", "--no-int8", "--no-ort", "--json")
    assert result.code == 0, result.err
    _check_rows(json.loads(result.out), ["PyTorch eager", "PyTorch eager optimized", "PyTorch compiled",
                                         "onnxruntime FP32"])


def test_bench_file_prints_host_table_and_profile(cell, tmp_path, capsys):
    """Given files: timed as they are, plus the .ort converted from them; the text output's header
    names the host, and --profile prints each onnxruntime row's census and op profile."""
    from export import export_classifier

    model = nb.build_model(cell, cells=1, filters=8, stem="cifar").eval()
    onnx_file = tmp_path / "tiny.onnx"
    export_classifier(model, onnx_file, input_size=32, batch=1, align_channels="none")
    result = run_cli(capsys, "bench", "--onnx", onnx_file, *FAST, "--profile")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == f"host: {cpu_summary()}"
    assert "1 thread," in lines[1] and "thread CPU time" in lines[1]
    table = [line.split(" | ")[0].lstrip("| ") for line in lines if line.startswith("| ") and "---" not in line]
    assert table == ["backend", "onnxruntime FP32", ".ort FP32"]
    assert "## onnxruntime FP32" in result.out and "## .ort FP32" in result.out
    assert result.out.count("after onnxruntime's optimizations") == 2 and result.out.count("kernel time") == 2
    assert "nasnet-bench-" not in result.out  # temporary paths are not printed

    # --json --profile: each onnxruntime row carries its profile as plain JSON
    result = run_cli(capsys, "bench", "--onnx", onnx_file, *FAST, "--no-ort", "--profile", "--json", "--sequential")
    assert result.code == 0, result.err
    record = json.loads(result.out)
    _check_rows(record, ["onnxruntime FP32"])
    assert record["order"] == "sequential"
    assert record["rows"][0]["file"] == str(onnx_file) and "Conv" in json.dumps(record["rows"][0]["profile"])

    # with more than one thread the backends run one after another (idle thread pools spin)
    result = run_cli(capsys, "bench", "--onnx", onnx_file, "--int8", onnx_file, "--runs", "2", "--warmup", "1",
                     "--threads", "2", "--no-ort", "--json")
    assert result.code == 0, result.err
    record = json.loads(result.out)
    assert record["order"] == "sequential" and record["clock"] == "wall" and len(record["rows"]) == 2


def test_bench_detector_config_gives_detector_rows(cell, capsys):
    """The whole detector, eager (fast path off and on), exported and converted; one C x H x W image
    per call. (Alignment and INT8 are the classifier's code paths with the detector's exporter and
    gate; left out to keep the test short.)"""
    pytest.importorskip("detectron2")
    result = run_cli(capsys, "bench", "--config-file", "faster_rcnn_nasnet_a_mobile_FPN_1x", "--weights", "",
                     "--input-size", "64", *FAST, "--no-align", "--no-int8", "--json",
                     "--opts", "MODEL.NASNET.GENOTYPE", cell,
                     "MODEL.NASNET.CELLS", "1", "MODEL.NASNET.FILTERS", "8", "MODEL.NASNET.NORM", "BN",
                     "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0")
    assert result.code == 0, result.err
    record = json.loads(result.out)
    _check_rows(record, ["PyTorch eager", "PyTorch eager optimized", "onnxruntime FP32", ".ort FP32"])
    assert record["input_size"] == 64
    assert record["rows"][-1]["batch"] == "none"  # one C x H x W image: no batch to fix


@pytest.mark.parametrize("argv, names", [
    (["--config-file", "faster_rcnn_nasnet_a_mobile_FPN_1x", "--compile"], ["--config-file", "--compile"]),
    (["--model", "nasnet_a_mobile", "--no-optimize", "--compile"], ["--no-optimize", "--compile"]),
    (["--model", "nasnet_a_mobile", "--opts", "MODEL.DEVICE", "cpu"], ["--opts", "--config-file"]),
    (["--config-file", "faster_rcnn_nasnet_a_mobile_FPN_1x", "--batch", "2"], ["--batch 2", "--config-file"]),
    (["--onnx", "m.onnx", "--no-align"], ["--onnx", "--no-align"]),
    (["--onnx", "m.onnx", "--compile"], ["--onnx", "--compile"]),
    (["--genotype", "cell.json", "--int8", "q.onnx"], ["--genotype", "--int8"]),
    (["--model", "nasnet_a_mobile", "--config-file", "faster_rcnn_nasnet_a_mobile_FPN_1x"],
     ["--config-file", "--model"]),
    (["--model", "nasnet_a_mobile", "--calib", "no/such/folder"], ["--calib", "no/such/folder"]),
])
def test_bench_refuses_flags_that_do_not_go_together(argv, names, capsys):
    expect_clean_error(capsys, "bench", *argv, "--runs", "1", names=names)


def test_export_classifier_reports_mobile_coverage_and_the_batch_fix(cell, tmp_path, capsys):
    """(``nasnet export``, not bench: the ORT-format deliverable's wiring.) A dynamic batch leaves
    NNAPI and CoreML no nodes, and the command says which flag fixes it; with --batch 1 they take the graph."""
    base = ["export", "classifier", "--genotype", cell, "--cells", "1", "--filters", "8", "--stem", "cifar",
            "--random-weights", "--input-size", "32", "--exporter", "torchscript"]
    result = run_cli(capsys, *base, "-o", tmp_path / "dynamic.onnx")
    assert result.code == 0, result.err
    assert "mobile coverage of" in result.out and "NNAPI: 0 of" in result.out
    assert "re-export with --batch 1" in result.out
    result = run_cli(capsys, *base, "--batch", "1", "-o", tmp_path / "one.onnx", "--json")
    assert result.code == 0, result.err
    coverage = json.loads(result.out)["mobile_coverage"]
    assert coverage["fixed_input_shape"] is True
    nnapi = next(p for p in coverage["providers"] if p["provider"] == "NNAPI")
    assert nnapi["supported_nodes"] > 0.9 * nnapi["total_nodes"]
