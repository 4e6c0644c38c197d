"""Where children train: Ray tasks (the default), or the search process itself.

:class:`RayExecutor` runs each child evaluation as a Ray task: one GPU per child when the cluster
has GPUs, otherwise an even share of the CPUs. ``ray.init()`` starts a local cluster unless an
address is given (``auto`` or ``ray://host:10001`` joins an existing one). Workers keep their
process between tasks, so a dataset read by one child is reused by the next. A task whose worker
process dies (a node lost, an out-of-memory kill) is retried by Ray.

An address with nothing answering fails within ``connect_timeout_s`` (``ray.init`` itself would
retry for ever). A local cluster that this executor starts is stopped with it, and, should the
search be killed (``kill -9``), by a watchdog process (:mod:`search.ray_watchdog`).

:class:`InProcessExecutor` trains children one at a time in the calling process: for debugging
(breakpoints work) and for machines without Ray.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from typing import Any, Callable, Protocol

from nasnet_backbones.data import default_workers
from nasnet_backbones.genotype import Genotype

from .child import ChildSettings, evaluate_child

__all__ = ["Executor", "RayExecutor", "InProcessExecutor", "EXECUTORS", "ChildFailed", "check_ray_address",
           "RAY_CONNECT_TIMEOUT_S"]

logger = logging.getLogger(__name__)

RAY_CONNECT_TIMEOUT_S = 30.0  # how long an address given to join may take to answer


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a Ray address to probe: ``HOST:PORT``, ``ray://HOST:PORT``, or for ``auto``
    the cluster Ray itself would pick (None when it knows none: Ray then says so at once)."""
    if address in ("auto", "local"):
        try:  # Ray's own lookup: RAY_ADDRESS, else the address file of the latest local cluster
            from ray._private.services import canonicalize_bootstrap_address

            resolved = canonicalize_bootstrap_address(address, None)
        except Exception:  # noqa: BLE001 - no cluster known, or another Ray version: Ray decides
            return None
        if not resolved:
            return None
        address = resolved
    text = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--ray-address {address!r}: expected HOST:PORT (the head's GCS port, 6379 by default), "
                         "ray://HOST:PORT (Ray Client) or auto")
    return host.strip("[]"), int(port)


def check_ray_address(address: str, timeout_s: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """Raise ``ConnectionError`` naming ``address`` unless something accepts a connection there
    within ``timeout_s`` seconds (a refused connection fails at once)."""
    target = _host_port(address)
    if target is None:
        return
    host, port = target
    start = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return
    except OSError as exc:
        cause = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
    waited = time.monotonic() - start
    raise ConnectionError(
        f"--ray-address {address}: no Ray cluster answers at {host}:{port} ({cause} after {waited:.1f} s). Start one "
        f"on that machine with 'ray start --head --port {port}' (other machines join with 'ray start --address "
        f"{host}:{port}'), check the address and the firewall, or leave --ray-address out to start a local "
        "cluster for this search")


def _child_pids() -> set[int]:
    """PIDs of this process's live children (empty where ``/proc`` is missing)."""
    from . import ray_watchdog

    if not ray_watchdog.supported():
        return set()
    return {pid for pid, (ppid, _) in ray_watchdog.process_table().items() if ppid == os.getpid()}


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

    def __init__(self, workers: int, address: str | None = None, task: Callable[..., Any] = _run_child,
                 connect_timeout_s: float = RAY_CONNECT_TIMEOUT_S) -> None:
        import ray

        self._ray = ray
        self._watchdog = None
        self._owns_ray = not ray.is_initialized()  # a cluster this executor starts, it also stops
        if self._owns_ray:
            options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                                       "log_to_driver": False, "configure_logging": False}
            if address is None:  # a local cluster sized to the cores this process may use
                options["num_cpus"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
                before = _child_pids()
                ray.init(**options)
                self._start_watchdog(_child_pids() - before)
            else:
                check_ray_address(address, connect_timeout_s)
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

    def _start_watchdog(self, ray_pids: set[int]) -> None:
        """Have the local cluster's processes stopped should this process be killed."""
        from .ray_watchdog import start_watchdog

        try:
            self._watchdog = start_watchdog(ray_pids)
        except OSError as exc:  # the search still works; only a kill -9 would leave Ray's agents for a minute
            logger.warning("could not start the Ray watchdog (%s): a killed search may leave Ray processes behind", exc)

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
        if self._watchdog is not None:  # Ray stopped its processes itself: the watchdog may go
            self._watchdog.terminate()
            self._watchdog.wait()
            self._watchdog = None


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
