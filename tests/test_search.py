"""Search without Ray: the space's encoding, the strategies' learning on a cheap reward, the run
directory's bookkeeping (dedup, resume, torn logs, refusals) and the child evaluation itself."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from helpers import ScriptedExecutor
from nasnet_backbones import Genotype, build_nasnet, genotypes
from nasnet_backbones.cli import main
from search import (ChildSettings, SearchConfig, SearchError, SearchRun, SearchSpace, SearchSpaceError,
                    create_strategy, evaluate_child)
from search.data import search_splits
from search.executor import EXECUTORS
from search.report import top_k_curve
from search.run import RESULTS_FILE, STATE_FILE
from search.strategies import STRATEGIES, Proposal, RandomSearch, register_strategy

SEPARABLE = ("sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7")


# -- the space ---------------------------------------------------------------------------------

def test_decision_sequence_has_the_papers_shape():
    space = SearchSpace()
    decisions = space.decisions()
    assert len(decisions) == space.num_decisions == 2 * 5 * 5
    assert [d.kind for d in decisions[:5]] == ["input", "input", "op", "op", "combine"]
    assert [d.num_choices for d in decisions if d.kind == "input"][:10:2] == [2, 3, 4, 5, 6]
    assert {d.num_choices for d in decisions if d.kind == "op"} == {13}
    assert decisions[25].cell == "reduce" and decisions[24].cell == "normal"


def test_round_trip_of_random_points():
    space = SearchSpace()
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        decisions = space.sample(rng)
        genotype = space.decode(decisions)  # validates at construction
        assert space.encode(genotype) == decisions
        assert space.decode(space.encode(genotype)) == genotype
        assert space.contains(genotype)
        seen.add(genotype.hash())
    assert len(seen) == 200


def test_nasnet_a_blocks_are_a_point_of_the_space():
    space = SearchSpace()
    decisions = space.encode(genotypes.NASNET_A)
    member = space.decode(decisions)
    assert member.normal.blocks == genotypes.NASNET_A.normal.blocks
    assert member.reduce.blocks == genotypes.NASNET_A.reduce.blocks
    assert space.encode(member) == decisions
    # TF-slim concatenates one state a block also reads in each cell; the paper's rule does not.
    assert genotypes.NASNET_A.normal.concat == (1, 2, 3, 4, 5, 6) and member.normal.concat == (2, 3, 4, 5, 6)
    assert genotypes.NASNET_A.reduce.concat == (3, 4, 5, 6) and member.reduce.concat == (4, 5, 6)
    assert not space.contains(genotypes.NASNET_A) and space.contains(member)


def test_sampled_genotypes_build_and_run():
    space = SearchSpace(combine_ops=("add", "concat"))
    rng = np.random.default_rng(1)
    for _ in range(3):
        genotype = space.decode(space.sample(rng))
        model = build_nasnet(genotype, num_cells=3, num_filters=4, stem="cifar", num_classes=10, img_size=16).eval()
        assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_configurable_space_and_its_errors():
    space = SearchSpace(num_blocks=3, ops=("sep_conv_3x3", "max_pool_3x3"), combine_ops=("add", "concat"))
    assert space.num_decisions == 30
    assert space.log10_size() == pytest.approx(2 * np.log10((2 * 2 * 4 * 2) * (3 * 3 * 4 * 2) * (4 * 4 * 4 * 2)))
    with pytest.raises(SearchSpaceError, match="unknown op.*'conv_9x9'"):
        SearchSpace(ops=("conv_9x9",))
    with pytest.raises(SearchSpaceError, match="unknown combine op"):
        SearchSpace(combine_ops=("multiply",))
    with pytest.raises(SearchSpaceError, match="expected 5 blocks"):
        SearchSpace().encode(space.decode([0] * 30))
    with pytest.raises(SearchSpaceError, match="op 'sep_conv_5x5' is not in this search space"):
        space.encode(SearchSpace(num_blocks=3).decode([0, 0, 11, 11, 0] + [0] * 25))
    with pytest.raises(SearchSpaceError, match=r"normal.blocks\[1\].input\[0\]: choice 3 out of range 0..2"):
        space.decode([0] * 5 + [3] + [0] * 24)


def test_mutation_changes_exactly_one_decision():
    space = SearchSpace()
    rng = np.random.default_rng(2)
    parent = space.sample(rng)
    for _ in range(50):
        child = space.mutate(parent, rng)
        assert sum(a != b for a, b in zip(parent, child)) == 1
        space.decode(child)


# -- strategies --------------------------------------------------------------------------------

def _separable_share(space: SearchSpace, decisions: list[int]) -> float:
    """A cheap reward that needs no training: the share of separable convs among the cell's ops."""
    genotype = space.decode(decisions)
    ops = [op for cell in (genotype.normal, genotype.reduce) for block in cell.blocks for op in block.ops]
    return sum(op in SEPARABLE for op in ops) / len(ops)


def _run_cheap(name: str, budget: int = 400, seed: int = 0, **options: Any) -> list[float]:
    """Four asynchronous workers: rewards arrive three proposals late."""
    space = SearchSpace()
    strategy = create_strategy(name, space, seed=seed, **options)
    rewards, pending = [], []
    for _ in range(budget):
        pending.append(strategy.propose())
        if len(pending) == 4:
            proposal = pending.pop(0)
            rewards.append(_separable_share(space, proposal.decisions))
            strategy.observe(proposal, rewards[-1])
    return rewards


@pytest.mark.parametrize("name,options", [("ppo", {}), ("evolution", {"population_size": 50, "sample_size": 10})])
def test_strategies_learn_where_random_search_does_not(name, options):
    random_rewards = _run_cheap("random")
    learned = _run_cheap(name, **options)
    # 3 of the 13 ops are separable: random search stays near 0.23; the paper's settings learn.
    assert np.mean(random_rewards[-100:]) < 0.3
    assert np.mean(learned[-100:]) > np.mean(random_rewards[-100:]) + 0.25
    assert np.nanmean(top_k_curve(learned, 5)[-50:]) > np.nanmean(top_k_curve(random_rewards, 5)[-50:]) + 0.15
    assert np.mean(learned[:50]) < 0.35  # it starts as random as random search


@pytest.mark.parametrize("name", ["ppo", "random", "evolution"])
def test_strategy_state_restores_exactly(name, tmp_path):
    space = SearchSpace()
    options = {"population_size": 4, "sample_size": 2} if name == "evolution" else {}
    options.update({"batch_size": 3} if name == "ppo" else {})
    first = create_strategy(name, space, seed=5, **options)
    for _ in range(8):  # past the first PPO update and the evolution's random phase
        p = first.propose()
        first.observe(p, _separable_share(space, p.decisions))
    torch.save(first.state_dict(), tmp_path / "state.pt")
    second = create_strategy(name, space, seed=99, **options)
    second.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    for _ in range(5):
        a, b = first.propose(), second.propose()
        assert (a.id, a.decisions) == (b.id, b.decisions)
        first.observe(a, 0.5)
        second.observe(b, 0.5)


def test_unknown_strategy_and_bad_options():
    with pytest.raises(ValueError, match="unknown search strategy .bayes.; choose one of enas, evolution, ppo, random"):
        create_strategy("bayes", SearchSpace())
    with pytest.raises(ValueError, match="strategy 'random'.*population_size"):
        create_strategy("random", SearchSpace(), population_size=3)
    with pytest.raises(ValueError, match="needs 'add' as the only combine op"):
        create_strategy("enas", SearchSpace(combine_ops=("add", "concat")))


# -- the run directory, with an executor that scores instantly ---------------------------------

def instant_executor(space: SearchSpace, crash_after: int | None = None) -> ScriptedExecutor:
    """Scores children by the cheap reward at once."""
    return ScriptedExecutor(lambda genotype, key: _separable_share(space, space.encode(genotype)), crash_after)


SMALL = SearchSpace(num_blocks=1, ops=("sep_conv_3x3", "max_pool_3x3"))  # 4 x 4 genotypes per cell


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / RESULTS_FILE).read_text().splitlines()]


def test_repeated_genotypes_are_never_evaluated_twice(tmp_path):
    config = SearchConfig("random", SMALL, ChildSettings(dataset="synthetic"), seed=0)
    executor = instant_executor(SMALL)
    run = SearchRun(tmp_path / "run", config)
    rows = run.run(40, workers=3, executor_factory=lambda: executor)
    assert len(rows) == 40 and len({r["hash"] for r in rows}) == 40
    assert len(executor.evaluated) == len(set(executor.evaluated)) == 40
    assert run.repeats > 0 and run.strategy.num_observed == 40 + run.repeats
    best = Genotype.from_json(tmp_path / "run" / "best_genotype.json")
    assert best.hash() == max(rows, key=lambda r: r["reward"])["hash"]


class _PreparedRandom(RandomSearch):
    """Random search with a preparation phase that records each run of it: a strategy from outside
    the package, which no command knows by name."""

    name = "prepared-random"
    calls: list[tuple[Path, str, bool, Any, int]] = []

    def prepare(self, search, *, device="cpu", reward_fn=None):
        type(self).calls.append((search.out, str(device), search.strategy is self, reward_fn, len(search.log.rows)))


def test_a_registered_strategy_s_preparation_phase_runs_without_the_command_naming_it(tmp_path, monkeypatch, request):
    register_strategy(_PreparedRandom)
    request.addfinalizer(lambda: STRATEGIES.pop(_PreparedRandom.name))
    monkeypatch.setattr(_PreparedRandom, "calls", [])
    monkeypatch.setitem(EXECUTORS, "inprocess", lambda workers, address: instant_executor(SMALL))
    out = tmp_path / "run"
    argv = ["search", "--output-dir", str(out), "--executor", "inprocess", "--workers", "1", "--device", "cpu"]
    assert main([*argv, "--strategy", "prepared-random", "--dataset", "synthetic", "--blocks", "1",
                 "--ops", ",".join(SMALL.ops), "--trials", "3"]) == 0
    assert _PreparedRandom.calls == [(out, "cpu", True, None, 0)]  # before the first child
    assert len(_rows(out)) == 3
    assert main([*argv, "--resume", "--trials", "5"]) == 0  # a resumed search prepares again (a done phase returns)
    assert _PreparedRandom.calls[1] == (out, "cpu", True, None, 3) and len(_PreparedRandom.calls) == 2
    assert len(_rows(out)) == 5
    assert register_strategy(_PreparedRandom) is _PreparedRandom  # registering it again changes nothing
    with pytest.raises(ValueError, match="'prepared-random' is already registered"):
        register_strategy(type("Another", (RandomSearch,), {"name": "prepared-random"}))
    with pytest.raises(TypeError, match="not a Strategy subclass"):
        register_strategy(dict)


@pytest.mark.parametrize("strategy,options", [("ppo", {"batch_size": 4}), ("evolution", {"population_size": 6, "sample_size": 3})])
def test_resume_after_a_crash_keeps_every_result_once(tmp_path, strategy, options):
    space = SearchSpace(num_blocks=2)
    config = SearchConfig(strategy, space, ChildSettings(dataset="synthetic"), options, seed=1)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        SearchRun(out, config).run(20, workers=3, executor_factory=lambda: instant_executor(space, crash_after=7))
    before = _rows(out)
    assert len(before) == 7
    # A torn line: the search died while appending a result; that child is still in flight.
    with open(out / RESULTS_FILE, "a") as f:
        f.write('{"index": 7, "proposal": ')
    state = torch.load(out / STATE_FILE, weights_only=True)
    in_flight = {p["id"] for p in state["in_flight"]}
    assert len(in_flight) == 3
    executor = instant_executor(space)
    resumed = SearchRun(out, config, resume=True)
    assert resumed.trials == 20
    rows = resumed.run(None, workers=3, executor_factory=lambda: executor)
    assert rows[:7] == before
    assert len(rows) == 20 and len({r["hash"] for r in rows}) == 20
    assert [r["index"] for r in rows] == list(range(20))
    assert in_flight <= {r["proposal"] for r in rows[7:]}  # the in-flight ones ran again
    assert not set(executor.evaluated) & {r["hash"] for r in before}
    assert _rows(out) == rows


def test_results_that_finished_after_the_last_state_save_are_observed_not_rerun(tmp_path):
    space = SearchSpace(num_blocks=2)
    config = SearchConfig("evolution", space, ChildSettings(dataset="synthetic"),
                          {"population_size": 4, "sample_size": 2})
    out = tmp_path / "run"
    run = SearchRun(out, config)
    run.run(6, workers=2, executor_factory=lambda: instant_executor(space))
    # Rewind state.pt to before the last result: as if killed between the log append and the save.
    rows = _rows(out)
    last = rows[-1]
    state = torch.load(out / STATE_FILE, weights_only=True)
    state["in_flight"] = [Proposal(last["proposal"], last["decisions"], {}).to_dict()]
    state["strategy"]["num_observed"] -= 1
    state["strategy"]["population"] = state["strategy"]["population"][:-1]
    torch.save(state, out / STATE_FILE)
    resumed = SearchRun(out, config, resume=True)
    assert resumed.requeue == [] and resumed.strategy.num_observed == 6
    executor = instant_executor(space)
    resumed.run(8, workers=2, executor_factory=lambda: executor)
    assert len(_rows(out)) == 8 and last["hash"] not in executor.evaluated


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_resume_refuses_another_search_and_changes_nothing(tmp_path, capsys):
    config = SearchConfig("random", SMALL, ChildSettings(dataset="synthetic", epochs=2))
    out = tmp_path / "run"
    SearchRun(out, config).run(5, workers=1, executor_factory=lambda: instant_executor(SMALL))
    before = _digest(out)
    other = SearchConfig("random", SearchSpace(num_blocks=2, ops=SMALL.ops), config.child)
    with pytest.raises(SearchError, match=r"other settings \(space.num_blocks: 1 -> 2\)"):
        SearchRun(out, other, resume=True)
    with pytest.raises(SearchError, match="other settings.*strategy: 'random' -> 'ppo'"):
        SearchRun(out, SearchConfig("ppo", SMALL, config.child), resume=True)
    with pytest.raises(SearchError, match="already holds a search; pass --resume"):
        SearchRun(out, config)
    assert main(["search", "--output-dir", str(out), "--resume", "--child-epochs", "7"]) == 2
    assert "child.epochs: 2 -> 7" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "search.json").write_text('{"strategy": ')
    assert main(["search", "--output-dir", str(broken), "--resume"]) == 2
    assert "search.json: not valid JSON" in capsys.readouterr().err
    # search.json edited by hand to match, but the log holds genotypes of the other space
    meta = json.loads((out / "search.json").read_text())
    meta["space"] = other.space.to_dict()
    (out / "search.json").write_text(json.dumps(meta))
    before["search.json"] = _digest(out)["search.json"]
    with pytest.raises(SearchError, match=r"results.jsonl, line 1: genotype \w+ is not in this search space"):
        SearchRun(out, other, resume=True)
    assert _digest(out) == before


# -- children ----------------------------------------------------------------------------------

def test_synthetic_splits_are_fixed_and_disjoint():
    train, val = search_splits("synthetic", None, val_size=40, train_size=120, img_size=16)
    again_train, again_val = search_splits("synthetic", None, val_size=40, train_size=120, img_size=16)
    assert len(train) == 120 and len(val) == 40
    assert not set(train.indices) & set(val.indices)
    assert torch.equal(train[3][0], again_train[3][0]) and val.indices == again_val.indices
    labels = torch.stack([val[i][1] for i in range(len(val))])
    assert labels.unique().numel() == 10


def test_cifar10_split_holds_out_training_images(tiny_cifar):
    train, val = search_splits("cifar10", tiny_cifar, val_size=10, download=False)
    assert len(train) + len(val) == 40  # 5 batches of 8: the training set only
    assert not set(train.indices) & set(val.indices)
    with pytest.raises(ValueError, match="val_size must be between 1 and 39"):
        search_splits("cifar10", tiny_cifar, val_size=40, download=False)


def test_a_child_trains_and_is_scored():
    settings = ChildSettings(dataset="synthetic", cells=1, filters=4, epochs=1, batch_size=20, img_size=8,
                             val_size=20, train_size=40)
    result = evaluate_child(genotypes.NASNET_A, settings, seed=0)
    assert result["status"] == "ok" and 0.0 <= result["reward"] <= 1.0
    assert result["params"] > 0 and result["madds"] > 0 and result["seed"] == 0
    diverged = evaluate_child(genotypes.NASNET_A, settings.with_overrides(lr=1e12), seed=0)
    assert diverged["status"] == "diverged" and diverged["reward"] == 0.0


# -- the command line --------------------------------------------------------------------------

def test_missing_cifar10_offline_fails_before_writing(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["search", "--dataset", "cifar10", "--data-dir", str(tmp_path / "nothing"), "--no-download",
                 "--output-dir", str(out)])
    assert code == 2 and not out.exists()
    assert "CIFAR-10 is not in" in capsys.readouterr().err


def test_command_line_refusals(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["search", "--dataset", "synthetic", "--ops", "sep_conv_3x3,conv_9x9", "--output-dir", out]) == 2
    assert "unknown op(s) 'conv_9x9'" in capsys.readouterr().err
    assert main(["search", "--strategy", "random", "--population-size", "4", "--dataset", "synthetic", "--output-dir", out]) == 2
    assert "--population-size is a setting of the evolution strategy" in capsys.readouterr().err
    assert main(["search", "--output-dir", out, "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["search", "--strategy", "bayes", "--output-dir", out])
    assert "invalid choice: 'bayes'" in capsys.readouterr().err
    assert not Path(out).exists()


def test_draw_command(tmp_path, capsys):
    svg = tmp_path / "cell.svg"
    assert main(["draw", "nasnet_a", "-o", str(svg)]) == 0
    text = svg.read_text()
    assert "sep_conv_7x7" in text and "reduction cell" in text
    cell = tmp_path / "cell.json"
    genotypes.DARTS_V2.to_json(cell)
    assert main(["draw", str(cell), "-o", str(tmp_path / "normal.png"), "--cell", "normal"]) == 0
    assert (tmp_path / "normal.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["draw", str(cell), "-o", str(tmp_path / "cell.bmp")]) == 2
    assert "use a .png, .svg or .pdf name" in capsys.readouterr().err
