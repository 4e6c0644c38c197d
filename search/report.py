"""What a search leaves behind for people: the top-k table, the reward curves and cell diagrams.

The curves follow the paper's Fig. 6 (RL against random search): for each run, the mean reward of
the best 1, 5 and 25 distinct models found so far, against the number of models evaluated. Several
runs on one figure (``nasnet search compare``) show which strategy finds good cells sooner;
``--by time`` plots the best reward found against wall-clock time instead, which is the fair axis
between strategies whose "models" cost different amounts (a weight-sharing search evaluates
thousands of cells with shared weights and trains only a few).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nasnet_backbones.atomic import atomic_target, write_atomic
from nasnet_backbones.draw import draw_genotype
from nasnet_backbones.genotype import Genotype

__all__ = ["load_run", "read_rows", "run_strategy", "best_row", "best_genotype", "write_top_k", "write_plots",
           "top_k_table", "top_k_curve", "plot_runs", "best_over_time", "plot_runs_over_time", "write_report"]

logger = logging.getLogger(__name__)

TOP_KS = (1, 5, 25)
SEARCH_FILE = "search.json"
RESULTS_FILE = "results.jsonl"
BEST_FILE = "best_genotype.json"
TOP_K_FILE = "top_k.md"
PLOT_FILE = "rewards.png"


def read_rows(results: Path) -> list[dict[str, Any]]:
    """The complete lines of a ``results.jsonl`` (a half-written last line, from a search killed
    while appending, is not a result yet)."""
    data = results.read_bytes()
    complete = data[: data.rfind(b"\n") + 1].decode()
    rows = []
    for number, line in enumerate(complete.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{results}, line {number}: not valid JSON ({exc.msg}); restore the file or remove "
                             "that line") from None
    return rows


def run_strategy(run_dir: str | Path) -> str:
    """The strategy a search directory was started with (``?`` without a readable ``search.json``)."""
    meta_file = Path(run_dir) / SEARCH_FILE
    try:
        return str(json.loads(meta_file.read_text()).get("strategy", "?"))
    except (OSError, json.JSONDecodeError, AttributeError):
        return "?"


def load_run(run_dir: str | Path) -> tuple[str, list[dict[str, Any]]]:
    """(label, result rows) of a search directory; the label names the strategy and the folder."""
    run_dir = Path(run_dir).expanduser()
    results = run_dir / RESULTS_FILE
    if not results.is_file():
        raise FileNotFoundError(f"{run_dir} is not a search directory: {results} does not exist")
    return f"{run_strategy(run_dir)} ({run_dir.name})", read_rows(results)


def best_row(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The logged child with the highest reward (the earliest of equals)."""
    return max(rows, key=lambda r: r["reward"])


def best_genotype(rows: Sequence[dict[str, Any]], strategy: str, run_dir: str | Path) -> Genotype:
    """The best logged child's genotype, named after the search that found it."""
    best = best_row(rows)
    return Genotype.from_dict({**best["genotype"], "name": f"search-{strategy}-{best['hash']}",
                               "source": f"nasnet search {strategy} in {run_dir}: child {best['index']}, "
                                         f"reward {best['reward']:.4f}"})


def write_top_k(run_dir: str | Path, rows: Sequence[dict[str, Any]], label: str, k: int = 10) -> Path:
    """``top_k.md``, written atomically."""
    path = Path(run_dir) / TOP_K_FILE
    text = f"# Top {min(k, len(rows))} of {len(rows)} children: {label}\n\n" + top_k_table(rows, k)
    write_atomic(path, lambda tmp: tmp.write_text(text))
    return path


def write_plots(run_dir: str | Path, rows: Sequence[dict[str, Any]], label: str,
                best: Genotype) -> dict[str, Path]:
    """``rewards.png`` and the diagrams of the best cells, each written atomically."""
    run_dir = Path(run_dir)
    written = {}
    with atomic_target(run_dir / PLOT_FILE, suffix=".tmp.png") as tmp:
        plot_runs([(label, rows)], tmp, title=f"{label}: {len(rows)} models")
    written["plot"] = run_dir / PLOT_FILE
    for cell in ("normal", "reduce"):
        for suffix in ("png", "svg"):
            written[f"{cell}_{suffix}"] = draw_genotype(best, run_dir / f"best_{cell}.{suffix}", cells=(cell,))
    return written


def top_k_curve(rewards: Sequence[float], k: int) -> np.ndarray:
    """Mean of the ``k`` best rewards among the first ``n`` models, for n = k..len(rewards)."""
    out, best = [], []
    for r in rewards:
        best = sorted([*best, r], reverse=True)[:k]
        out.append(np.mean(best) if len(best) == k else np.nan)
    return np.array(out, dtype=np.float64)


def top_k_table(rows: Sequence[dict[str, Any]], k: int = 10) -> str:
    """A Markdown table of the ``k`` best children."""
    ranked = sorted(rows, key=lambda r: r["reward"], reverse=True)[:k]
    lines = ["| rank | reward | hash | params | mult-adds | child | seconds |", "|---:|---:|---|---:|---:|---:|---:|"]
    for rank, r in enumerate(ranked, 1):
        lines.append(f"| {rank} | {r['reward']:.4f} | `{r['hash']}` | {r.get('params', 0):,} | {r.get('madds', 0):,} | "
                     f"{r['index']} | {r.get('wall_time', float('nan')):.1f} |")
    return "\n".join(lines) + "\n"


def _figure() -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(7.5, 4.5))


def _save(fig: Any, ax: Any, path: str | Path, xlabel: str, ylabel: str, title: str) -> Path:
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def plot_runs(runs: Sequence[tuple[str, Sequence[dict[str, Any]]]], path: str | Path, title: str = "") -> Path:
    """Reward against models evaluated: top-1/5/25 mean curves per run (points too for one run)."""
    fig, ax = _figure()
    styles = {1: "-", 5: "--", 25: ":"}
    for index, (label, rows) in enumerate(runs):
        colour = f"C{index % 10}"
        rewards = [r["reward"] for r in rows]
        x = np.arange(1, len(rewards) + 1)
        if len(runs) == 1:
            ax.scatter(x, rewards, s=8, color="0.6", label="each model", zorder=1)
        for k in TOP_KS:
            curve = top_k_curve(rewards, k)
            if np.isfinite(curve).any():
                ax.plot(x, curve, styles[k], color=colour, label=f"{label}: top-{k} mean", zorder=2)
    return _save(fig, ax, path, "models evaluated", "validation accuracy (reward)",
                 title or "Reward of the best models found so far")


def best_over_time(rows: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(hours since the search started, best reward so far) at each finished child, in time order."""
    missing = [r["index"] for r in rows if "elapsed" not in r]
    if missing:
        raise ValueError(f"children {missing[:5]} have no elapsed time (a log from an older version); "
                         "compare them by models evaluated instead")
    ordered = sorted(rows, key=lambda r: r["elapsed"])
    hours = np.array([r["elapsed"] / 3600 for r in ordered])
    return hours, np.maximum.accumulate([r["reward"] for r in ordered])


def plot_runs_over_time(runs: Sequence[tuple[str, Sequence[dict[str, Any]]]], path: str | Path,
                        budget_hours: float | None = None, title: str = "") -> Path:
    """Best reward found against wall-clock time, one step curve per run, cut at ``budget_hours``."""
    fig, ax = _figure()
    curves = [(label, *best_over_time(rows)) for label, rows in runs]
    longest = budget_hours or max((hours[-1] for _, hours, _ in curves if len(hours)), default=1.0)
    unit, scale = ("hours", 1.0) if longest >= 2 else ("minutes", 60.0)
    for index, (label, hours, best) in enumerate(curves):
        if budget_hours is not None:
            keep = hours <= budget_hours
            hours, best = hours[keep], best[keep]
        if len(hours):
            ax.step(np.r_[0.0, hours] * scale, np.r_[np.nan, best], where="post", color=f"C{index % 10}",
                    label=f"{label}: best {best[-1]:.4f}")
            ax.plot(hours[:1] * scale, best[:1], "o", color=f"C{index % 10}")  # the run's first result
    if budget_hours is not None:
        ax.set_xlim(0, budget_hours * scale)
    return _save(fig, ax, path, f"wall-clock {unit} since the search started", "best reward so far",
                 title or "Best reward found against time")


def write_report(run_dir: str | Path, k: int = 10) -> dict[str, Path]:
    """Rebuild every derived file of a search directory from its log alone: ``best_genotype.json``,
    ``top_k.md``, ``rewards.png`` and the best cells' diagrams (so none can disagree with the log,
    whatever an earlier crash or full disk left)."""
    run_dir = Path(run_dir).expanduser()
    label, rows = load_run(run_dir)
    if not rows:
        raise ValueError(f"{run_dir}: no child has finished yet")
    best = best_genotype(rows, run_strategy(run_dir), run_dir)
    written = {"best": run_dir / BEST_FILE}
    best.to_json(written["best"])
    written["top_k"] = write_top_k(run_dir, rows, label, k)
    written.update(write_plots(run_dir, rows, label, best))
    return written
