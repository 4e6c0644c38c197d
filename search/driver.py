"""A whole search, start or resume to report, as one keyword call (what ``nasnet search`` runs).

:func:`run_search` checks what can fail early (the data, a Ray cluster's address) before anything is
written, holds the run directory for the whole search, runs the strategy's preparation phase
(:meth:`~search.strategies.Strategy.prepare`: nothing for most strategies, the supernet for weight
sharing) and then the children, and rewrites the run's report. It never asks which strategy it
drives: what differs between strategies is declared on them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from .data import search_splits
from .executor import EXECUTORS, RAY_CONNECT_TIMEOUT_S, check_ray_address
from .report import write_report
from .run import SearchConfig, SearchRun

__all__ = ["run_search", "LATENCY_TABLE_MODES", "DEFAULT_TRIALS"]

logger = logging.getLogger(__name__)

LATENCY_TABLE_MODES = ("auto", "build", "off")
DEFAULT_TRIALS = 100  # a new search's target when none is given


def run_search(*, out: str | Path, config: SearchConfig, resume: bool = False, trials: int | None = None,
               workers: int = 1, executor: str = "ray", ray_address: str | None = None,
               ray_connect_timeout: float = RAY_CONNECT_TIMEOUT_S, device: str | torch.device = "cpu",
               latency_table: str = "auto", budget_hours: float | None = None, top_k: int = 10,
               download: bool = True) -> dict[str, Path]:
    """Run the search ``config`` in ``out`` (with ``resume``, continue the one there, whose settings
    ``config`` must match) until ``trials`` children have finished (default: a resumed run's own
    target, else ``DEFAULT_TRIALS``) or ``budget_hours`` have passed; ``workers`` children at a time
    on ``executor`` (a name in :data:`~search.executor.EXECUTORS`; ``ray`` joins ``ray_address``
    when given). ``device`` is where the strategy's preparation phase trains. ``latency_table``
    (``auto``, ``build``, ``off``): whether a latency-aware search times each op once and predicts
    latencies from the table; ``auto`` builds it for strategies that declare
    :attr:`~search.strategies.Strategy.wants_latency_table`. Returns the report's files by name
    (:func:`~search.report.write_report`, ``top_k`` rows)."""
    if latency_table not in LATENCY_TABLE_MODES:
        raise ValueError(f"latency_table must be one of {', '.join(LATENCY_TABLE_MODES)}, got {latency_table!r}")
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of {', '.join(sorted(EXECUTORS))}")
    out = Path(out).expanduser()
    # Read (or fetch) the data once here: a missing dataset fails now, before anything is written.
    child = config.child
    search_splits(child.dataset, child.data_dir, child.val_size, child.train_size, child.img_size, download=download)
    if executor == "ray" and ray_address:  # an unreachable cluster fails now, not after a hang
        check_ray_address(ray_address, timeout_s=ray_connect_timeout)
    with SearchRun(out, config, resume=resume, lock=True) as search:  # one writer, preparation phase included
        logger.info("search space: %s; strategy %s; children: %s", config.space.describe(), config.strategy, child)
        search.set_target(trials if trials is not None or resume else DEFAULT_TRIALS)
        search.save_state()  # the target survives a crash in any phase
        model = search.latency
        if model is not None and model.table is None and (
                latency_table == "build" or (latency_table == "auto" and search.strategy.wants_latency_table)):
            model.build_table()
        search.prepare(device=device)  # e.g. weight sharing's supernet; its derived cells are the children
        executor_cls = EXECUTORS[executor]
        factory = (lambda: executor_cls(workers, ray_address, connect_timeout_s=ray_connect_timeout)) \
            if executor == "ray" else (lambda: executor_cls(workers, ray_address))
        search.run(None, workers, factory, budget_hours)
        return write_report(out, k=top_k)
