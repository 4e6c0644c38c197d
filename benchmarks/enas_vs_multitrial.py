"""Weight sharing against multi-trial search on this machine: wall-clock time to reach a proxy accuracy.

    python benchmarks/enas_vs_multitrial.py [--budget-minutes 6] [--target 0.85] [--enas-epochs 20]
                                            [--strategies enas ppo] [--out DIR]

Each strategy runs as ``nasnet search`` on the synthetic dataset with the ``tiny`` child preset
(the paper's full space, two workers on a local Ray cluster). Multi-trial strategies train
children until the budget runs out; ENAS trains its supernet for ``--enas-epochs`` epochs, derives
cells and retrains the best four as children. Reported: when each first found a child at or above
``--target`` held-out accuracy (stand-alone, trained from scratch, so the numbers are comparable),
its best, and the reward-against-time figure (``nasnet search compare --by time``). Markdown to stdout.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from search.weight_sharing import SHARED_REWARDS_FILE
from search.report import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-minutes", type=float, default=6.0)
    parser.add_argument("--target", type=float, default=0.85)
    parser.add_argument("--enas-epochs", type=int, default=20)
    parser.add_argument("--strategies", nargs="+", default=["enas", "ppo"])
    parser.add_argument("--out", help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="nasnet-enas-bench-"))
    base = [sys.executable, "-m", "nasnet_backbones.cli", "search", "--dataset", "synthetic", "--workers", "2",
            "--seed", "0"]
    rows = []
    for strategy in args.strategies:
        out = root / strategy
        if strategy == "enas":
            extra = ["--enas-epochs", str(args.enas_epochs), "--derive-samples", "50", "--trials", "4"]
        else:
            extra = ["--trials", "100000", "--budget-hours", str(args.budget_minutes / 60)]
        subprocess.run([*base, "--strategy", strategy, "--output-dir", str(out), *extra], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        results = load_run(out)[1]
        reached = sorted(r["elapsed"] for r in results if r["reward"] >= args.target)
        best = max(results, key=lambda r: r["reward"])
        phase1 = None
        if strategy == "enas":
            shared = [json.loads(line) for line in (out / SHARED_REWARDS_FILE).read_text().splitlines()]
            phase1 = shared[-1]["elapsed"]
        rows.append((strategy, len(results), reached[0] / 60 if reached else None, best["reward"],
                     max(r["elapsed"] for r in results) / 60, phase1))
    figure = root / "enas_vs_multitrial.png"
    subprocess.run([*base[:4], "compare", *[str(root / s) for s in args.strategies], "--by", "time", "-o", str(figure)],
                   check=True, stdout=subprocess.DEVNULL)
    print(f"target: {args.target:.2f} held-out accuracy (stand-alone); runs in {root}\n")
    print("| strategy | children trained | minutes to target | best | minutes in all | supernet minutes |")
    print("|---|---:|---:|---:|---:|---:|")
    for strategy, n, to_target, best, total, phase1 in rows:
        print(f"| {strategy} | {n} | {'not reached' if to_target is None else f'{to_target:.1f}'} | {best:.4f} | "
              f"{total:.1f} | {'' if phase1 is None else f'{phase1 / 60:.1f}'} |")
    print(f"\nfigure: {figure}")


if __name__ == "__main__":
    main()
