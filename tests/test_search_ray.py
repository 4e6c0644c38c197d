"""Search on a real local Ray cluster: a whole (tiny) search writes every output, and a search
killed with SIGKILL resumes without losing or repeating a child."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import ScriptedExecutor
from nasnet_backbones import Genotype
from nasnet_backbones.cli import main
from search import ChildSettings, SearchConfig, SearchRun, SearchSpace

# Children of a few seconds each: 8x8 synthetic images, one epoch on 200 of them.
TINY_CHILD = ["--dataset", "synthetic", "--child-epochs", "1", "--train-size", "200", "--val-size", "100",
              "--input-size", "8", "--child-batch-size", "25"]


@pytest.fixture
def ray_shutdown():
    yield
    import ray

    ray.shutdown()


def _rows(out: Path) -> list[dict]:
    path = out / "results.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def test_three_child_search_on_ray_writes_every_output(tmp_path, capsys, ray_shutdown):
    out = tmp_path / "ppo"
    assert main(["search", "--strategy", "ppo", "--trials", "3", "--workers", "2", "--seed", "3", "--output-dir", str(out),
                 *TINY_CHILD]) == 0
    printed = capsys.readouterr().out
    rows = _rows(out)
    assert len(rows) == 3 and len({r["hash"] for r in rows}) == 3
    for row in rows:
        assert 0.0 <= row["reward"] <= 1.0 and row["params"] > 0 and row["madds"] > 0 and row["wall_time"] > 0
        assert row["status"] == "ok" and row["seed"] == 3 + row["proposal"]
    best = Genotype.from_json(out / "best_genotype.json")
    assert best.hash() == max(rows, key=lambda r: r["reward"])["hash"]
    assert "| 1 |" in printed and "| 3 |" in printed and "best genotype" in printed
    for name in ("top_k.md", "rewards.png", "best_normal.png", "best_normal.svg", "best_reduce.png", "best_reduce.svg"):
        assert (out / name).stat().st_size > 0, name
    # the best cell builds through the model command
    assert main(["info", "--genotype", str(out / "best_genotype.json"), "--stem", "cifar", "--cells", "3",
                 "--filters", "8"]) == 0
    # TensorBoard scalars: reward, and the controller's entropy and baseline
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"search/reward", "search/best_reward", "ppo/entropy", "ppo/baseline"} <= tags
    assert [e.step for e in events.Scalars("search/reward")] == [1, 2, 3]

    # compare against a second run (random search, scored instantly) on one figure
    other = tmp_path / "random"
    SearchRun(other, SearchConfig("random", SearchSpace(), ChildSettings(dataset="synthetic"))).run(
        5, 1, lambda: ScriptedExecutor(lambda genotype, key: 0.1 * (key % 7)))
    figure = tmp_path / "compare.png"
    assert main(["search", "compare", str(out), str(other), "-o", str(figure)]) == 0
    assert figure.read_bytes()[:4] == b"\x89PNG"
    assert "ppo (ppo): 3 models" in capsys.readouterr().out
    by_time = tmp_path / "by_time.svg"
    assert main(["search", "compare", str(out), str(other), "--by", "time", "-o", str(by_time)]) == 0
    assert "best reward so far" in by_time.read_text()
    elapsed = [r["elapsed"] for r in _rows(out)]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0


def _search(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "nasnet_backbones.cli", "search", "--output-dir", str(out), *extra]


def test_sigkill_and_resume_keep_every_child_exactly_once(tmp_path):
    out = tmp_path / "evo"
    trials = 6
    cmd = _search(out, "--strategy", "evolution", "--population-size", "3", "--sample-size", "2", "--trials",
                  str(trials), "--workers", "2", *TINY_CHILD)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not _rows(out) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, f"the search ended before it could be killed: {proc.stderr.read()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _rows(out)
    assert 1 <= len(before) < trials
    done = subprocess.run(_search(out, "--resume"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _rows(out)
    assert len(rows) == trials and [r["index"] for r in rows] == list(range(trials))
    assert len({r["hash"] for r in rows}) == trials and len({r["proposal"] for r in rows}) == trials
    assert rows[: len(before)] == before
    assert (out / "best_genotype.json").is_file() and (out / "rewards.png").is_file()


# -- weight-sharing (ENAS) search ---------------------------------------------------------------

# A small space in which shared weights learn within a few epochs on a CPU.
ENAS_SMALL = ["--strategy", "enas", "--dataset", "synthetic", "--blocks", "1", "--ops",
              "sep_conv_3x3,max_pool_3x3,identity", "--controller-steps", "10", "--derive-samples", "12",
              "--child-epochs", "1", "--train-size", "1600", "--val-size", "400", "--input-size", "16"]


def _shared(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "shared_rewards.jsonl").read_text().splitlines()]


def test_short_enas_run_learns_and_writes_the_standard_outputs(tmp_path, capsys):
    out = tmp_path / "enas"
    assert main(["search", *ENAS_SMALL, "--enas-epochs", "4", "--trials", "2", "--executor", "inprocess",
                 "--output-dir", str(out)]) == 0
    shared = _shared(out)
    assert [r["epoch"] for r in shared] == [1, 2, 3, 4]
    assert shared[-1]["shared_reward"] > shared[0]["shared_reward"] + 0.1  # shared weights and controller learn
    rows = _rows(out)
    assert len(rows) == 2 and all(r["info"]["origin"] == "derived" for r in rows)
    assert rows[0]["info"]["shared_reward"] >= rows[1]["info"]["shared_reward"]  # best derived cell first
    for name in ("best_genotype.json", "top_k.md", "rewards.png", "best_normal.svg", "best_reduce.png", "supernet.pt"):
        assert (out / name).is_file(), name
    assert "best genotype" in capsys.readouterr().out


def test_enas_resumes_after_sigkill(tmp_path):
    out = tmp_path / "enas"
    cmd = _search(out, *ENAS_SMALL, "--enas-epochs", "5", "--trials", "2", "--executor", "inprocess")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    shared = out / "shared_rewards.jsonl"
    while not (shared.exists() and shared.read_text().count("\n") >= 2) and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, f"the search ended before it could be killed: {proc.stderr.read()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not _rows(out)  # killed during phase 1
    done = subprocess.run(_search(out, "--resume"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming the supernet at epoch" in done.stderr
    assert [r["epoch"] for r in _shared(out)] == [1, 2, 3, 4, 5]
    assert len(_rows(out)) == 2
