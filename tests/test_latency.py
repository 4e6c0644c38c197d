"""Latency-aware rewards: deployed networks exported to ONNX and timed in onnxruntime, the per-op
lookup table and its reported error, and the reward inside a search."""

from __future__ import annotations

import json

import pytest

from helpers import ScriptedExecutor
from nasnet_backbones.cli import main
from search import ChildSettings, SearchConfig, SearchRun, SearchSpace
from search.latency import LatencyModel, LatencySettings

SPACE = SearchSpace(num_blocks=2)
# A deployed network small enough to export and time in a second.
TINY = dict(cells=1, filters=8, img_size=32, stem="cifar", runs=10)


def _uniform(op: str):
    """Every op of both cells is ``op``; every input the cell input."""
    return SPACE.decode([SPACE.ops.index(op) if d.kind == "op" else 0 for d in SPACE.decisions()])


def test_slower_cells_get_lower_rewards_at_equal_accuracy(tmp_path):
    model = LatencyModel(LatencySettings(target_ms=1.0, **TINY), SPACE, tmp_path)
    slow, fast = _uniform("sep_conv_7x7"), _uniform("max_pool_3x3")
    slow_reward, slow_ms = model.reward(slow, 0.8)
    fast_reward, fast_ms = model.reward(fast, 0.8)
    assert slow_ms > 2 * fast_ms
    assert slow_reward < fast_reward
    assert slow_reward == pytest.approx(0.8 * (slow_ms / 1.0) ** -0.07)
    cached = json.loads((tmp_path / "latency_cache.json").read_text())
    assert cached == {slow.hash(): slow_ms, fast.hash(): fast_ms}
    assert LatencyModel(model.settings, SPACE, tmp_path).measure(slow) == slow_ms  # read back, not re-timed


def test_lookup_table_reports_its_error_and_ranks_cells(tmp_path):
    model = LatencyModel(LatencySettings(target_ms=1.0, **TINY), SPACE, tmp_path)
    table = model.build_table(calibration=5, validation=3)
    assert min(table["intercept"], table["ops_scale"], table["per_concat"]) >= 0
    assert table["validation_networks"] == 3 and 0 <= table["mean_error"] <= table["max_error"]
    assert table["used"] == (table["mean_error"] <= 0.10)
    ops = {key.split("|")[0] for key in table["entries"]}
    assert ops == set(SPACE.ops)
    slow, fast = _uniform("sep_conv_7x7"), _uniform("max_pool_3x3")
    assert model.op_cost(slow) > model.op_cost(fast)  # each op timed on its own ranks them
    # The calibrated prediction keeps that order, or ties it when the fit gives the ops no weight:
    # a tiny network's time on a loaded machine can be mostly fixed overhead (seen under CI).
    assert model.predict(slow) >= model.predict(fast)
    if table["ops_scale"] > 0:
        assert model.predict(slow) > model.predict(fast)
    assert json.loads((tmp_path / "latency_table.json").read_text())["mean_error"] == table["mean_error"]


def test_latency_settings_refuse_nonsense():
    with pytest.raises(ValueError, match="unknown latency device 'tpu'"):
        LatencySettings(target_ms=5, device="tpu")
    with pytest.raises(ValueError, match="must be <= 0"):
        LatencySettings(target_ms=5, weight=0.5)
    with pytest.raises(ValueError, match="positive number of milliseconds"):
        LatencySettings(target_ms=0)


def test_search_rows_carry_accuracy_latency_and_the_combined_reward(tmp_path, capsys):
    settings = LatencySettings(target_ms=0.5, weight=-0.1, **TINY)
    config = SearchConfig("random", SPACE, ChildSettings(dataset="synthetic"), latency=settings)
    rows = SearchRun(tmp_path / "run", config).run(3, 1, lambda: ScriptedExecutor(lambda genotype, key: 0.5))
    for row in rows:
        assert row["accuracy"] == 0.5 and row["latency_ms"] > 0
        assert row["reward"] == pytest.approx(0.5 * (row["latency_ms"] / 0.5) ** -0.1)
    assert main(["search", "--dataset", "synthetic", "--latency-weight", "-0.1", "--output-dir", str(tmp_path / "x")]) == 2
    assert "need --latency-target" in capsys.readouterr().err
