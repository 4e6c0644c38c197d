"""Bad input and faults for ``nasnet search``: a held run directory, a log two writers corrupted,
derived files after a failed write, nonsense numbers, an unreachable Ray cluster and a search
killed with its own Ray cluster. Each refusal is one clear message, and nothing is written or lost."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import expect_clean_error, run_cli, snapshot
from helpers import ScriptedExecutor
from nasnet_backbones import Genotype
from nasnet_backbones import genotype as genotype_module
from nasnet_backbones.runlock import run_lock
from search import ChildSettings, SearchConfig, SearchRun, SearchSpace
from search.run import BEST_FILE, RESULTS_FILE

SMALL = SearchSpace(num_blocks=1, ops=("sep_conv_3x3", "max_pool_3x3"))  # 16 genotypes per cell
# Children that train in about a second when a command really trains one.
TINY = ChildSettings(dataset="synthetic", cells=1, filters=4, epochs=1, batch_size=20, img_size=8, val_size=20,
                     train_size=40)
TINY_FLAGS = ["--dataset", "synthetic", "--blocks", "1", "--ops", "sep_conv_3x3,max_pool_3x3", "--child-cells", "1",
              "--child-filters", "4", "--child-epochs", "1", "--child-batch-size", "20", "--input-size", "8",
              "--val-size", "20", "--train-size", "40"]


def _rising(genotype, key: int) -> float:
    """A reward that grows with the proposal id: every child is the new best."""
    return key / 100


def _search(out: Path, trials: int = 5) -> Path:
    """A finished random search of ``trials`` instantly scored children in ``out``."""
    SearchRun(out, SearchConfig("random", SMALL, TINY, seed=0)).run(trials, 1, lambda: ScriptedExecutor(_rising))
    return out


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / RESULTS_FILE).read_text().splitlines()]


# -- one writer per run directory --------------------------------------------------------------

def test_a_held_run_directory_is_refused_naming_the_holder(tmp_path, capsys):
    out = _search(tmp_path / "run")
    fresh = tmp_path / "fresh"
    with run_lock(out), run_lock(fresh):  # another process's search (flock: another open file is another holder)
        before, before_fresh = snapshot(out), snapshot(fresh)
        err = expect_clean_error(capsys, "search", "--output-dir", out, "--resume", "--trials", "9",
                                 names=[str(out), f"held by PID {os.getpid()}", "in use"])
        assert "Traceback" not in err
        expect_clean_error(capsys, "search", "--output-dir", fresh, *TINY_FLAGS, "--trials", "1", "--executor", "inprocess",
                           names=[str(fresh), f"held by PID {os.getpid()}"])
        assert snapshot(out) == before and snapshot(fresh) == before_fresh  # nothing written, nothing lost
    assert not (fresh / "search.json").exists()


def test_a_log_two_writers_corrupted_is_refused_naming_file_and_lines(tmp_path, capsys):
    out = _search(tmp_path / "run")
    lines = (out / RESULTS_FILE).read_text().splitlines(keepends=True)
    with open(out / RESULTS_FILE, "a") as f:
        f.write(lines[2])  # proposal 2 logged a second time, as two concurrent resumes did
    before = snapshot(out)
    expect_clean_error(capsys, "search", "--output-dir", out, "--resume",
                       names=[str(out / RESULTS_FILE), "line 6", "already logged at line 3", "Delete the later"])
    assert snapshot(out) == before
    # the same genotype under another proposal id (two writers drew the same cell)
    twin = json.loads(lines[1])
    twin["proposal"] = 99
    (out / RESULTS_FILE).write_text("".join(lines) + json.dumps(twin) + "\n")
    expect_clean_error(capsys, "search", "--output-dir", out, "--resume", names=["line 6", f"genotype {twin['hash']}"])


# -- derived files follow the log --------------------------------------------------------------

def test_derived_files_follow_the_log_after_a_full_disk_and_a_stale_file(tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_write = genotype_module.write_atomic
    failures = []

    def full_disk_after_the_first_best(path, write):
        if Path(path).name == BEST_FILE and (Path(path).exists() or failures):
            failures.append(path)
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write(path, write)

    monkeypatch.setattr(genotype_module, "write_atomic", full_disk_after_the_first_best)
    rows = SearchRun(out, SearchConfig("random", SMALL, TINY, seed=0)).run(6, 1, lambda: ScriptedExecutor(_rising))
    assert len(failures) == 5 and max(rows, key=lambda r: r["reward"])["index"] == 5
    # the child-0 file that the disk could not replace is gone, not left naming the wrong child
    assert not (out / BEST_FILE).exists()
    assert f"`{rows[5]['hash']}`" in (out / "top_k.md").read_text().splitlines()[4]  # rank 1 is the log's best
    monkeypatch.setattr(genotype_module, "write_atomic", real_write)  # space again

    # a stale best_genotype.json and top_k.md (as a version without this check left them) ...
    Genotype.from_dict(rows[0]["genotype"]).to_json(out / BEST_FILE)
    (out / "top_k.md").write_text("stale\n")
    resumed = SearchRun(out, SearchConfig("random", SMALL, TINY, seed=0), resume=True)
    # ... are rebuilt from the log on resume, before any child runs
    best = Genotype.from_json(out / BEST_FILE)
    assert best.hash() == rows[5]["hash"] == max(_rows(out), key=lambda r: r["reward"])["hash"]
    assert f"child 5, reward {rows[5]['reward']:.4f}" in best.source
    assert f"`{rows[5]['hash']}`" in (out / "top_k.md").read_text()
    for name in ("rewards.png", "best_normal.svg", "best_reduce.png"):
        assert (out / name).stat().st_size > 0, name
    # and follow every further result
    resumed.run(9, 1, lambda: ScriptedExecutor(_rising))
    assert Genotype.from_json(out / BEST_FILE).hash() == max(_rows(out), key=lambda r: r["reward"])["hash"]
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


# -- numbers are checked before anything is written --------------------------------------------

BAD_NUMBERS = [
    ("--trials", "-1"), ("--trials", "0"), ("--child-lr", "nan"), ("--child-lr", "0"), ("--child-epochs", "0"),
    ("--child-epochs", "-1"), ("--child-batch-size", "0"), ("--child-cells", "0"), ("--child-filters", "-4"),
    ("--train-size", "0"), ("--val-size", "-1"), ("--input-size", "0"), ("--workers", "0"), ("--seed", "-1"),
    ("--blocks", "0"), ("--budget-hours", "0"), ("--budget-hours", "nan"), ("--budget-hours", "-2"),
    ("--latency-target", "0"), ("--latency-target", "-5"), ("--latency-target", "inf"), ("--latency-weight", "nan"),
    ("--latency-cells", "0"), ("--latency-size", "-224"), ("--latency-threads", "0"), ("--top-k", "0"),
    ("--ray-connect-timeout", "0"), ("--trials", "two"),
]
STRATEGY_NUMBERS = [
    ("ppo", "--controller-lr", "nan"), ("ppo", "--controller-lr", "-1"), ("ppo", "--controller-batch", "0"),
    ("ppo", "--entropy-weight", "-0.1"), ("evolution", "--population-size", "0"), ("evolution", "--sample-size", "-2"),
    ("enas", "--enas-epochs", "0"), ("enas", "--controller-steps", "0"), ("enas", "--derive-samples", "0"),
    ("enas", "--controller-lr", "inf"),
]


def test_nonsense_numbers_are_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    for flag, value in BAD_NUMBERS:
        err = expect_clean_error(capsys, "search", "--output-dir", out, *TINY_FLAGS, flag, value, names=[flag, repr(value)])
        assert not out.exists(), (flag, value, err)
    for strategy, flag, value in STRATEGY_NUMBERS:
        expect_clean_error(capsys, "search", "--output-dir", out, "--strategy", strategy, *TINY_FLAGS, flag, value,
                           names=[flag])
        assert not out.exists(), (flag, value)
    for bad in (["search", "compare", out, "--budget-hours", "nan"], ["search", "report", out, "--top-k", "-1"]):
        expect_clean_error(capsys, *bad, names=[bad[-2]])
    # the refused --trials -1 left nothing, so the corrected command runs (children really train)
    result = run_cli(capsys, "search", "--output-dir", out, *TINY_FLAGS, "--trials", "1", "--executor", "inprocess")
    assert result.code == 0, result.err
    assert len(_rows(out)) == 1 and (out / BEST_FILE).is_file()
    # on --resume a bad number changes nothing either
    before = snapshot(out)
    for flag, value in (("--trials", "-1"), ("--child-lr", "nan"), ("--budget-hours", "0")):
        expect_clean_error(capsys, "search", "--output-dir", out, "--resume", flag, value, names=[flag])
    assert snapshot(out) == before


# -- Ray ---------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_ray_address_fails_at_once_naming_it(tmp_path, capsys):
    out = tmp_path / "run"
    port = _free_port()
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        start = time.monotonic()
        expect_clean_error(capsys, "search", "--output-dir", out, *TINY_FLAGS, "--trials", "1", "--ray-address", address,
                           "--ray-connect-timeout", "5",
                           names=[f"--ray-address {address}", f"127.0.0.1:{port}", f"ray start --head --port {port}"])
        assert time.monotonic() - start < 5 and not out.exists()
    expect_clean_error(capsys, "search", "--output-dir", out, *TINY_FLAGS, "--ray-address", "headnode",
                       names=["--ray-address 'headnode'", "HOST:PORT"])
    assert not out.exists()


def _process_tree(root: int) -> dict[int, tuple[int, str]]:
    """Live descendants of ``root``: PID -> (start time, command line), read from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if fields[0] != "Z":
                table[int(entry.name)] = (int(fields[1]), int(fields[19]), cmdline)
    found, stack = {}, [root]
    while stack:
        parent = stack.pop()
        for pid, (ppid, start, cmdline) in table.items():
            if ppid == parent and pid not in found:
                found[pid] = (start, cmdline)
                stack.append(pid)
    return found


def _still_running(pid: int, start: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = fields[fields.rindex(")") + 2:].split()
    return fields[0] != "Z" and int(fields[19]) == start


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_search_leaves_no_ray_process_behind(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "nasnet_backbones.cli", "search", "--output-dir", str(out), *TINY_FLAGS,
                             "--trials", "50", "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        tree: dict[int, tuple[int, str]] = {}
        # Ray is up: its agents (started by the raylet) and the search's watchdog are running
        while proc.poll() is None and time.monotonic() < deadline:
            tree = _process_tree(proc.pid)
            names = " ".join(cmdline for _, cmdline in tree.values())
            if "ray::DashboardAgent" in names and "ray_watchdog" in names and "raylet" in names:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.5)  # one more round of the watchdog's bookkeeping
        tree = _process_tree(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 20
        left = tree
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = {pid: info for pid, info in left.items() if _still_running(pid, info[0])}
        assert not left, f"still running 20 s after the kill: {[info[1][:80] for info in left.values()]}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
