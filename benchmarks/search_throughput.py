"""Children evaluated per hour by ``nasnet search`` on this machine, and Ray's cost per child.

    python benchmarks/search_throughput.py [--preset cpu] [--children 4] [--workers 2] [--empty 50]

Part 1 runs a real search (random strategy, Ray executor, the same code as ``nasnet search``) at a
child preset and reports children per hour after Ray has started, and the mean child wall time.
CIFAR-10 cannot be downloaded here, so the children train on the synthetic dataset drawn at 32x32
with the preset's image counts: the same tensor shapes and step counts as CIFAR-10 at that preset
(CIFAR-10's PIL decoding and augmentation add well under a second per child).

Part 2 times empty children: a Ray task that returns at once, submitted and awaited one at a
time, against the same call made in-process. That round trip is Ray's overhead per child. Markdown
to stdout.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from search.child import CHILD_PRESETS
from search.executor import RayExecutor
from search.run import SearchConfig, SearchRun
from search.space import SearchSpace


def _empty_child(*args):
    return {"reward": 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu", choices=sorted(CHILD_PRESETS))
    parser.add_argument("--children", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--empty", type=int, default=50, help="empty children for the overhead measurement")
    args = parser.parse_args()

    import ray

    start = time.perf_counter()
    empty = RayExecutor(1, task=_empty_child)
    startup = time.perf_counter() - start
    empty.submit_call(-1)
    empty.wait()  # the first task starts a worker process
    trips = []
    for key in range(args.empty):
        t = time.perf_counter()
        empty.submit_call(key)
        empty.wait()
        trips.append(time.perf_counter() - t)
    local = []
    for _ in range(args.empty):
        t = time.perf_counter()
        _empty_child()
        local.append(time.perf_counter() - t)

    child = CHILD_PRESETS[args.preset].with_overrides(dataset="synthetic", img_size=32)
    if CHILD_PRESETS[args.preset].dataset == "synthetic":
        child = CHILD_PRESETS[args.preset]
    config = SearchConfig("random", SearchSpace(), child, seed=0)
    with tempfile.TemporaryDirectory() as out:
        run = SearchRun(out, config)
        t = time.perf_counter()
        rows = run.run(args.children, args.workers, lambda: RayExecutor(args.workers))
        elapsed = time.perf_counter() - t
    ray.shutdown()

    mean_child = statistics.mean(r["wall_time"] for r in rows)
    print("| preset | child (N, base width, epochs, train/val images, size) | workers | children/hour | mean child wall time |")
    print("|---|---|---:|---:|---:|")
    print(f"| {args.preset} | {child.cells}, {child.filters}, {child.epochs}, {child.train_size}/{child.val_size}, "
          f"{child.img_size}px | {args.workers} | {len(rows) * 3600 / elapsed:.1f} | {mean_child:.1f} s |")
    print()
    print("| empty child | median | p90 |")
    print("|---|---:|---:|")
    trips.sort()
    local.sort()
    print(f"| Ray task round trip ({args.empty}) | {statistics.median(trips) * 1e3:.2f} ms | "
          f"{trips[int(0.9 * len(trips))] * 1e3:.2f} ms |")
    print(f"| in-process call | {statistics.median(local) * 1e6:.2f} us | {local[int(0.9 * len(local))] * 1e6:.2f} us |")
    print(f"\nray.init (local cluster start): {startup:.1f} s")


if __name__ == "__main__":
    main()
