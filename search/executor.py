"""Where children train: Ray tasks (the default), or the search process itself.

:class:`RayExecutor` runs each child evaluation as a Ray task: one GPU per child when the cluster
has GPUs, otherwise an even share of the CPUs. ``ray.init()`` starts a local cluster unless an
address is given (``auto`` or ``ray://host:10001`` joins an existing one). Workers keep their
process between tasks, so a dataset read by one child is reused by the next. A task whose worker
process dies (a node lost, an out-of-memory kill) is retried by Ray.

:class:`InProcessExecutor` trains children one at a time in the calling process: for debugging
(breakpoints work) and for machines without Ray.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from typing import Any, Callable, Protocol

from nasnet_backbones.data import default_workers
from nasnet_backbones.genotype import Genotype

from .child import ChildSettings, evaluate_child

__all__ = ["Executor", "RayExecutor", "InProcessExecutor", "EXECUTORS", "ChildFailed"]

logger = logging.getLogger(__name__)


class ChildFailed(RuntimeError):
    """A child evaluation raised; the message carries the worker's error."""


class Executor(Protocol):
    def submit(self, key: int, genotype: Genotype, settings: ChildSettings, seed: int) -> None: ...

    def wait(self) -> list[tuple[int, dict[str, Any] | ChildFailed]]:
        """Block until at least one child finishes; return every finished (key, result)."""

    @property
    def pending(self) -> int: ...

    def shutdown(self) -> None: ...


def _run_child(genotype: dict[str, Any], settings: dict[str, Any], seed: int, threads: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(max(1, threads))
    return evaluate_child(Genotype.from_dict(genotype), ChildSettings.from_dict(settings), seed)


class RayExecutor:
    """Children as Ray tasks, at most ``workers`` at a time (the search loop keeps to that)."""

    def __init__(self, workers: int, address: str | None = None, task: Callable[..., Any] = _run_child) -> None:
        import ray

        self._ray = ray
        self._owns_ray = not ray.is_initialized()  # a cluster this executor starts, it also stops
        if self._owns_ray:
            options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                                       "log_to_driver": False, "configure_logging": False}
            if address is None:  # a local cluster sized to the cores this process may use
                options["num_cpus"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
            ray.init(address=address, **options)
            logger.info("Ray: %s", ray.cluster_resources())
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        cpus = float(resources.get("CPU", 1))
        if gpus:
            self.threads = max(1, int(cpus // max(1, gpus)))
            task_options = {"num_gpus": 1, "num_cpus": 1}
        else:
            self.threads = max(1, int(cpus // max(1, workers)))
            task_options = {"num_cpus": self.threads}
        self.resources = task_options
        self._task = ray.remote(max_retries=2)(task).options(**task_options)
        self._refs: dict[Any, int] = {}

    def submit(self, key: int, genotype: Genotype, settings: ChildSettings, seed: int) -> None:
        ref = self._task.remote(genotype.to_dict(), settings.to_dict(), seed, self.threads)
        self._refs[ref] = key

    def submit_call(self, key: int, *args: Any) -> None:
        """Run the executor's task on arbitrary arguments (benchmarks use an empty task)."""
        self._refs[self._task.remote(*args)] = key

    def wait(self) -> list[tuple[int, dict[str, Any] | ChildFailed]]:
        ready, _ = self._ray.wait(list(self._refs), num_returns=1)
        finished = []
        for ref in ready:
            key = self._refs.pop(ref)
            try:
                finished.append((key, self._ray.get(ref)))
            except self._ray.exceptions.RayError as exc:
                finished.append((key, ChildFailed(str(exc))))
        return finished

    @property
    def pending(self) -> int:
        return len(self._refs)

    def shutdown(self) -> None:
        for ref in self._refs:
            self._ray.cancel(ref, force=True)
        self._refs.clear()
        if self._owns_ray:
            self._ray.shutdown()


class InProcessExecutor:
    """Children one after another in this process, when :meth:`wait` is called."""

    def __init__(self, workers: int = 1, address: str | None = None) -> None:
        self._queue: deque[tuple[int, Genotype, ChildSettings, int]] = deque()
        self.resources = {"num_cpus": default_workers()}

    def submit(self, key: int, genotype: Genotype, settings: ChildSettings, seed: int) -> None:
        self._queue.append((key, genotype, settings, seed))

    def wait(self) -> list[tuple[int, dict[str, Any] | ChildFailed]]:
        key, genotype, settings, seed = self._queue.popleft()
        return [(key, evaluate_child(genotype, settings, seed))]

    @property
    def pending(self) -> int:
        return len(self._queue)

    def shutdown(self) -> None:
        self._queue.clear()


EXECUTORS: dict[str, type] = {"ray": RayExecutor, "inprocess": InProcessExecutor}
