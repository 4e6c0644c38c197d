"""The search loop: propose, evaluate on workers, observe, and never lose a finished child.

A run directory holds:

* ``search.json``: what defines the search (space, strategy and its settings, child settings, seed);
  a resumed search must match it.
* ``results.jsonl``: one line per finished child (genotype, hash, reward, params, mult-adds, wall
  time, seed), appended and flushed to disk as each child finishes. It is the record of truth and
  the cache: a genotype whose hash is in it is never trained again.
* ``state.pt``: the strategy's state and the proposals in flight, rewritten (atomically) after
  every proposal and every result.
* outputs, derived from the log alone (:meth:`SearchRun.refresh_outputs`): ``best_genotype.json``
  and ``top_k.md`` after every result, ``rewards.png`` and ``best_normal.{png,svg}``,
  ``best_reduce.{png,svg}`` every minute or so and at the end; all of them again at every resume,
  so whatever a crash or a full disk left, they cannot disagree with the log for long. TensorBoard
  scalars in ``tensorboard/``.

One process writes a run directory at a time: ``nasnet search`` holds its lock (``.lock``) for the
whole run, and a log that two writers did corrupt (the same proposal or genotype twice) is refused.

Resuming after any crash, ``kill -9`` included: the log is read (a half-written last line is cut
off), results that finished after the last state save are observed, and the proposals still in
flight are submitted again under their own ids and seeds. Nothing else is re-evaluated.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

from nasnet_backbones.atomic import write_atomic
from nasnet_backbones.genotype import Genotype, GenotypeError
from nasnet_backbones.runlock import run_lock

from .child import ChildSettings
from .executor import ChildFailed, Executor
from .latency import LatencyModel, LatencySettings
from .report import PLOT_FILE, TOP_K_FILE, best_genotype, best_row, write_plots, write_top_k
from .space import SearchSpace
from .strategies import Proposal, create_strategy

__all__ = ["SearchConfig", "SearchRun", "SearchError", "ResultsLog", "read_search_file", "SEARCH_FILE", "RESULTS_FILE", "STATE_FILE",
           "BEST_FILE"]

logger = logging.getLogger(__name__)

SEARCH_FILE = "search.json"
RESULTS_FILE = "results.jsonl"
STATE_FILE = "state.pt"
BEST_FILE = "best_genotype.json"
FORMAT_VERSION = 1
MAX_REPEATS_IN_A_ROW = 1000  # a strategy that only re-proposes evaluated cells has converged
PLOT_INTERVAL_S = 60.0  # while a search runs, its plots are redrawn at most this often (and at every resume)


class SearchError(ValueError):
    """A search that cannot start or continue as asked; nothing on disk was changed."""


@dataclass
class SearchConfig:
    """Everything that defines a search: two runs with equal configs are comparable."""

    strategy: str
    space: SearchSpace = field(default_factory=SearchSpace)
    child: ChildSettings = field(default_factory=ChildSettings)
    strategy_options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    latency: LatencySettings | None = None  # a latency-aware reward (MnasNet form) when given

    def to_dict(self, strategy_settings: dict[str, Any]) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "strategy": self.strategy, "strategy_settings": strategy_settings,
                "space": self.space.to_dict(), "child": self.child.to_dict(), "seed": self.seed,
                "latency": self.latency.to_dict() if self.latency else None}


class ResultsLog:
    """``results.jsonl``: append-only, one JSON object per line, each flushed and fsynced."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []

    def read(self, space: SearchSpace, repair: bool = True) -> None:
        """Load existing rows; refuse rows outside ``space`` and repeated proposals or genotypes;
        with ``repair``, cut off a torn last line (without it, the file is only read)."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        rows = []
        proposals: dict[Any, int] = {}
        hashes: dict[str, int] = {}
        for number, line in enumerate(complete.decode(errors="replace").splitlines(), 1):
            try:
                row = json.loads(line)
                genotype = Genotype.from_dict(row["genotype"])
                proposal, key = row["proposal"], row["hash"]
            except (json.JSONDecodeError, KeyError, TypeError, GenotypeError) as exc:
                raise SearchError(f"{self.path}, line {number}: not a result of this tool ({exc}); move the file "
                                  "aside or start a new search with another --output-dir") from None
            if not space.contains(genotype):
                raise SearchError(f"{self.path}, line {number}: genotype {row.get('hash')} is not in this search space "
                                  f"({space.describe()}); the log is from a different search. Resume it with its own "
                                  "settings or start a new search with another --output-dir")
            for what, value, seen in (("proposal", proposal, proposals), ("genotype", key, hashes)):
                if value in seen:
                    raise SearchError(
                        f"{self.path}, line {number}: {what} {value} was already logged at line {seen[value]}: two "
                        "searches wrote this directory at once (a version without the run lock). Delete the later "
                        "repeats (keep the first line of each proposal) and resume, or start a new search with "
                        "another --output-dir")
                seen[value] = number
            rows.append(row)
        if repair and len(complete) != len(data):  # only once the log is known to be this search's
            logger.warning("%s: dropping a half-written last line (a child that was being recorded when the search "
                           "stopped; it is still in flight and runs again)", self.path)
            with open(self.path, "r+b") as f:
                f.truncate(len(complete))
        self.rows = rows

    def append(self, row: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.rows.append(row)


def read_search_file(path: Path) -> dict[str, Any]:
    """A run's ``search.json``, with one clear error when it is not one."""
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SearchError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); restore it, or start a new "
                          "search with another --output-dir") from None
    missing = [k for k in ("strategy", "strategy_settings", "space", "child", "seed") if k not in saved]
    if missing:
        raise SearchError(f"{path}: not a search file of this tool (missing {', '.join(missing)})")
    return saved


def _differences(saved: Any, now: Any, prefix: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(now, dict):
        out = []
        for key in sorted(set(saved) | set(now)):
            out += _differences(saved.get(key), now.get(key), f"{prefix}{key}.")
        return out
    if saved != now and not (isinstance(saved, list) and isinstance(now, tuple) and saved == list(now)):
        return [f"{prefix.rstrip('.')}: {saved!r} -> {now!r}"]
    return []


class SearchRun:
    """One search in ``out_dir``: ``run(trials)`` evaluates children until ``trials`` have finished."""

    def __init__(self, out_dir: str | Path, config: SearchConfig, resume: bool = False, lock: bool = False) -> None:
        """Start a new search in ``out_dir``, or with ``resume`` continue the one there. Every
        refusal (another search there, other settings, a log that is not this search's) comes before
        anything is written. With ``lock`` the directory is held (:func:`~nasnet_backbones.runlock.run_lock`)
        until :meth:`close`, so a second process is refused instead of writing the same log; use the
        run as a context manager then."""
        self.out = Path(out_dir).expanduser()
        self.config = config
        self.space = config.space
        self.strategy = create_strategy(config.strategy, config.space, seed=config.seed, **config.strategy_options)
        self.log = ResultsLog(self.out / RESULTS_FILE)
        self.in_flight: dict[int, Proposal] = {}
        self.waiting: dict[str, list[Proposal]] = {}  # repeats of a genotype that is still training
        self.requeue: list[Proposal] = []
        self.repeats = 0
        self.trials: int | None = None  # the target of the run, saved so --resume can keep it
        self.elapsed_before = 0.0  # seconds the search ran in earlier sessions
        self._session_start = time.perf_counter()
        self._best_written: str | None = None  # hash of the genotype best_genotype.json holds
        self._plotted_at = time.monotonic()
        self._check(resume)
        self._held = ExitStack()
        try:
            if lock:
                self._held.enter_context(run_lock(self.out))
            self._open(resume)
            self.cache = {row["hash"]: row["reward"] for row in self.log.rows}
            self.latency = LatencyModel(config.latency, config.space, self.out) if config.latency else None
            if resume:  # whatever an earlier session's crash or full disk left, the outputs follow the log
                self.refresh_outputs(plots=True)
        except BaseException:
            self._held.close()
            raise

    def close(self) -> None:
        """Release the run directory (when it was locked)."""
        self._held.close()

    def __enter__(self) -> "SearchRun":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- start / resume ------------------------------------------------------------------------

    def _check(self, resume: bool) -> None:
        """Refuse a search that cannot start or continue here, reading files only."""
        search_file = self.out / SEARCH_FILE
        if not resume:
            if search_file.exists() or (self.out / RESULTS_FILE).exists():
                raise SearchError(f"{self.out} already holds a search; pass --resume to continue it, or choose another --output-dir")
            return
        if not search_file.is_file():
            raise SearchError(f"nothing to resume: {search_file} does not exist")
        saved = read_search_file(search_file)
        comparable = lambda d: {"latency": None, **d,  # noqa: E731 - runs from before latency-aware rewards
                                "child": ChildSettings.from_dict(d["child"]).reward_defining()}
        changed = _differences(comparable(saved), comparable(self.config.to_dict(self.strategy.settings())))
        if changed:
            raise SearchError(f"{self.out} holds a search with other settings ({'; '.join(changed)}). Resume it with "
                              "the same settings, or start a new search with another --output-dir")
        ResultsLog(self.log.path).read(self.space, repair=False)

    def _open(self, resume: bool) -> None:
        """Write a new search's settings, or load a resumed one's log and state (the directory is
        held by now when the run locks it; :meth:`_check` has passed)."""
        search_file = self.out / SEARCH_FILE
        if not resume:
            self.out.mkdir(parents=True, exist_ok=True)
            wanted = self.config.to_dict(self.strategy.settings())
            write_atomic(search_file, lambda p: p.write_text(json.dumps(wanted, indent=2) + "\n"))
            return
        self.log.read(self.space)
        state_file = self.out / STATE_FILE
        if state_file.is_file():
            state = torch.load(state_file, map_location="cpu", weights_only=True)
            self.strategy.load_state_dict(state["strategy"])
            self.repeats = int(state["repeats"])
            self.trials = state.get("trials")
            self.elapsed_before = float(state.get("elapsed", 0.0))
            pending = [Proposal.from_dict(p) for p in state["in_flight"]]
            pending += [Proposal.from_dict(p) for group in state["waiting"] for p in group]
        else:
            pending = []
        logged = {row["proposal"]: row for row in self.log.rows}
        late = [p for p in pending if p.id in logged]  # finished after the last state save
        for proposal in late:
            self.strategy.observe(proposal, logged[proposal.id]["reward"])
        self.requeue = [p for p in pending if p.id not in logged]
        logger.info("resuming %s: %d children finished, %d observed late, %d re-queued", self.out, len(self.log.rows),
                    len(late), len(self.requeue))

    def save_state(self) -> None:
        state = {"strategy": self.strategy.state_dict(), "repeats": self.repeats, "trials": self.trials,
                 "elapsed": self.elapsed,
                 "in_flight": [p.to_dict() for p in self.in_flight.values()],
                 "waiting": [[p.to_dict() for p in group] for group in self.waiting.values()]}
        write_atomic(self.out / STATE_FILE, lambda p: torch.save(state, p))

    @property
    def elapsed(self) -> float:
        """Seconds this search has run, over all its sessions (for reward-against-time plots)."""
        return self.elapsed_before + time.perf_counter() - self._session_start

    # -- the loop ------------------------------------------------------------------------------

    def _next_proposal(self) -> Proposal:
        return self.requeue.pop(0) if self.requeue else self.strategy.propose()

    def _submit_more(self, executor: Executor, trials: int, workers: int, budget_s: float | None) -> bool:
        """Fill the free workers; False when the strategy only repeats evaluated genotypes."""
        in_flight_hashes = {self.space.decode(p.decisions).hash(): p for p in self.in_flight.values()}
        repeats_in_a_row = 0
        while executor.pending < workers and len(self.log.rows) + executor.pending < trials and (
                budget_s is None or self.elapsed < budget_s):
            proposal = self._next_proposal()
            genotype = self.space.decode(proposal.decisions)
            key = genotype.hash()
            if key in self.cache or key in in_flight_hashes:
                self.repeats += 1
                repeats_in_a_row += 1
                if key in self.cache:
                    self.strategy.observe(proposal, self.cache[key])
                else:
                    self.waiting.setdefault(key, []).append(proposal)
                if repeats_in_a_row >= MAX_REPEATS_IN_A_ROW:
                    self.save_state()
                    return False
                continue
            repeats_in_a_row = 0
            self.in_flight[proposal.id] = proposal
            in_flight_hashes[key] = proposal
            self.save_state()  # before submitting: a crash now re-queues it
            executor.submit(proposal.id, genotype, self.config.child, self.config.seed + proposal.id)
        self.save_state()
        return True

    def _record(self, proposal: Proposal, result: dict[str, Any]) -> dict[str, Any]:
        genotype = self.space.decode(proposal.decisions)
        scores = {"reward": float(result["reward"])}
        if self.latency is not None:  # the child's accuracy, weighed by the deployed network's latency
            reward, latency_ms = self.latency.reward(genotype, scores["reward"])
            scores = {"reward": reward, "accuracy": scores["reward"], "latency_ms": latency_ms}
        row = {"index": len(self.log.rows), "proposal": proposal.id, "hash": genotype.hash(),
               **scores, **{k: v for k, v in result.items() if k != "reward"},
               "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "elapsed": self.elapsed,
               "info": proposal.info, "decisions": proposal.decisions, "genotype": genotype.to_dict()}
        self.log.append(row)  # the commit point
        self.cache[row["hash"]] = row["reward"]
        self.strategy.observe(proposal, row["reward"])
        for repeat in self.waiting.pop(row["hash"], []):
            self.strategy.observe(repeat, row["reward"])
        self.refresh_outputs()
        return row

    def write_best(self) -> Genotype | None:
        """Write ``best_genotype.json``: the log's best child (None while the log is empty)."""
        if not self.log.rows:
            return None
        genotype = best_genotype(self.log.rows, self.config.strategy, self.out)
        genotype.to_json(self.out / BEST_FILE)
        self._best_written = best_row(self.log.rows)["hash"]
        return genotype

    def refresh_outputs(self, plots: bool = False) -> None:
        """Rebuild the derived files from the log alone: ``best_genotype.json`` (when the best
        changed, or an earlier write failed) and ``top_k.md`` after every result; the reward plot and
        the best cells' diagrams with ``plots``, else at most every ``PLOT_INTERVAL_S``.

        A derived file that cannot be written (a full disk) is removed instead, with a warning,
        so that no stale file contradicts the log (the log is the record of truth; the next result or
        ``--resume`` writes the file again). The search goes on: the log append is what must succeed."""
        rows = self.log.rows
        if not rows:
            for name in (BEST_FILE, TOP_K_FILE):  # a log emptied by hand: nothing may name a best child
                self._discard(name)
            return
        if best_row(rows)["hash"] != self._best_written or not (self.out / BEST_FILE).is_file():
            self._derived((BEST_FILE,), self.write_best)
        label = f"{self.config.strategy} ({self.out.name})"
        self._derived((TOP_K_FILE,), lambda: write_top_k(self.out, rows, label))
        if plots or time.monotonic() - self._plotted_at >= PLOT_INTERVAL_S:
            names = (PLOT_FILE, *(f"best_{c}.{x}" for c in ("normal", "reduce") for x in ("png", "svg")))
            best = best_genotype(rows, self.config.strategy, self.out)
            if self._derived(names, lambda: write_plots(self.out, rows, label, best)):
                self._plotted_at = time.monotonic()

    def _derived(self, names: tuple[str, ...], write: Callable[[], object]) -> bool:
        """Run ``write``; on an OSError, warn and remove the files ``names`` (possibly stale)."""
        try:
            write()
            return True
        except OSError as exc:
            logger.warning("could not write %s (%s): removed so that it cannot disagree with %s; it is written again "
                           "from the log after the next result, by --resume or by 'nasnet search report'",
                           ", ".join(names), exc, self.log.path)
            if BEST_FILE in names:
                self._best_written = None
            for name in names:
                self._discard(name)
            return False

    def _discard(self, name: str) -> None:
        try:
            (self.out / name).unlink(missing_ok=True)
        except OSError as exc:
            logger.warning("could not remove %s: %s", self.out / name, exc)

    def prepare(self, *, device: str | torch.device = "cpu") -> None:
        """Run the strategy's preparation phase (:meth:`~search.strategies.Strategy.prepare`; most
        strategies have none, weight sharing trains its supernet and derives its cells there) on
        ``device``, scoring cells as the children are scored: by the latency-aware reward when the
        search has one. Call it before :meth:`run`, on every resume too (a finished phase returns at once)."""
        model = self.latency
        reward_fn = None if model is None else (lambda genotype, accuracy: model.reward(genotype, accuracy)[0])
        self.strategy.prepare(self, device=device, reward_fn=reward_fn)

    def set_target(self, trials: int | None) -> None:
        """How many children the search evaluates: ``trials``, or with None the target it already
        has (a resumed run's); checked here, before any phase of the search spends time."""
        trials = trials if trials is not None else self.trials
        if trials is None:
            raise SearchError("--trials is needed: how many children to evaluate")
        if trials < 1:
            raise SearchError(f"--trials must be >= 1, got {trials}")
        self.trials = trials

    def run(self, trials: int | None, workers: int, executor_factory: Callable[[], Executor],
            budget_hours: float | None = None) -> list[dict[str, Any]]:
        """Evaluate children until ``trials`` (default: a resumed run's own target) have finished, or
        until the search has run ``budget_hours`` (no child starts after that; those running finish)."""
        self.set_target(trials)
        trials = self.trials
        if workers < 1:
            raise SearchError(f"--workers must be >= 1, got {workers}")
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=len(self.log.rows) or None)
        bar = tqdm(total=trials, initial=min(len(self.log.rows), trials), desc=f"search ({self.config.strategy})",
                   unit="child", dynamic_ncols=True)
        executor = executor_factory() if len(self.log.rows) < trials else None
        start = time.perf_counter()
        try:
            while executor is not None:
                if not self._submit_more(executor, trials, workers, budget_hours and budget_hours * 3600):
                    logger.warning("the %s strategy proposed only evaluated genotypes %d times in a row: it has "
                                   "converged; stopping at %d children", self.config.strategy, MAX_REPEATS_IN_A_ROW,
                                   len(self.log.rows))
                if executor.pending == 0:
                    break
                for key, outcome in executor.wait():
                    proposal = self.in_flight[key]
                    if isinstance(outcome, ChildFailed):
                        raise SearchError(f"child {proposal.id} ({self.space.decode(proposal.decisions).hash()}) "
                                          f"failed: {outcome}. Fix the cause and continue with --resume; it will run again")
                    del self.in_flight[key]
                    row = self._record(proposal, outcome)
                    self.save_state()
                    step = len(self.log.rows)
                    best = max(r["reward"] for r in self.log.rows)
                    writer.add_scalar("search/reward", row["reward"], step)
                    writer.add_scalar("search/best_reward", best, step)
                    writer.add_scalar("search/child_seconds", row["wall_time"], step)
                    for tag, value in self.strategy.metrics().items():
                        writer.add_scalar(tag, value, step)
                    bar.update(1)
                    bar.set_postfix(best=f"{best:.4f}", last=f"{row['reward']:.4f}")
        finally:
            bar.close()
            writer.close()
            if executor is not None:
                executor.shutdown()
        elapsed = time.perf_counter() - start
        logger.info("%d children in %s (%.1f s of this session)", len(self.log.rows), self.out, elapsed)
        return self.log.rows
