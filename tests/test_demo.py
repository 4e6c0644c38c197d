"""`nasnet demo --quick`: every step of the product on generated data, and every artifact valid."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from nasnet_backbones import Genotype
from nasnet_backbones.cli import main


@pytest.fixture
def ray_shutdown():
    yield
    import ray

    ray.shutdown()


def test_quick_demo_writes_valid_artifacts(tmp_path, capsys, ray_shutdown):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--output-dir", str(out)]) == 0
    assert f"report: {out / 'REPORT.md'}" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == ["search", "backbones", "detect", "export", "report"]

    best = Genotype.from_json(metrics["search"]["genotype"])
    assert best.hash() == metrics["search"]["best_hash"] and metrics["search"]["children"] == 2
    rows = {r["backbone"]: r for r in metrics["backbones"]["rows"]}
    assert set(rows) == {"searched cell", "NASNet-A"}
    assert all(r["params"] > 0 and r["madds"] > 0 and r["onnxruntime_ms"] > 0 for r in rows.values())

    detect = metrics["detect"]
    assert isinstance(detect["AP"], float) and math.isfinite(detect["AP"]) and 0 <= detect["AP50"] <= 100
    assert Image.open(detect["predictions"][0]).size == (64, 64)

    export = metrics["export"]
    x = np.random.default_rng(0).standard_normal((1, 3, 96, 96)).astype(np.float32)
    for name in ("classifier", "classifier_int8"):
        logits = ort.InferenceSession(export[name], providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
        assert logits.shape == (1, 1000) and np.isfinite(logits).all()
    detector = ort.InferenceSession(export["detector"], providers=["CPUExecutionProvider"])
    image = np.asarray(Image.open(detect["predictions"][0]).convert("RGB"), dtype=np.float32).transpose(2, 0, 1)
    assert len(detector.run(None, {detector.get_inputs()[0].name: image})) >= 3  # boxes, classes, scores
    assert [r["backend"] for r in export["latency"]] == ["PyTorch eager", "onnxruntime FP32", "onnxruntime INT8"]

    report = (out / "REPORT.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", report)
    assert len(links) >= 10
    missing = [link for link in links if not (out / link).is_file()]
    assert not missing, missing


def test_demo_refuses_unknown_steps_and_incomplete_full_runs(tmp_path, capsys):
    assert main(["demo", "--steps", "search,train", "--output-dir", str(tmp_path / "a")]) == 2
    assert "unknown demo step(s) train" in capsys.readouterr().err
    assert main(["demo", "--full", "--output-dir", str(tmp_path / "b")]) == 2
    assert "give --cifar-dir and --coco-dir" in capsys.readouterr().err
    assert main(["demo", "--steps", "backbones", "--output-dir", str(tmp_path / "c")]) == 2
    assert "run the search step first" in capsys.readouterr().err
    assert not Path(tmp_path / "a").exists()
