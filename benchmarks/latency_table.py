"""How well the per-op latency table predicts measured onnxruntime latency of whole networks.

    python benchmarks/latency_table.py [--cells 4] [--filters 44] [--size 224] [--calibration 6] [--validation 6]

Builds :class:`search.latency.LatencyModel`'s table for the deployed network (default NASNet-A
mobile's shape: 4 cells per stack, base width 44, 224 px, ImageNet stem) with random cells of the
paper's space: every op timed alone at every input shape, the calibration fitted on measured
networks, the error taken on held-out measured networks. Also times the same held-out networks
again, as the noise floor the table cannot beat. Markdown to stdout.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from search.latency import LatencyModel, LatencySettings
from search.space import SearchSpace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=4)
    parser.add_argument("--filters", type=int, default=44)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--stem", default="imagenet")
    parser.add_argument("--calibration", type=int, default=6)
    parser.add_argument("--validation", type=int, default=6)
    args = parser.parse_args()
    space = SearchSpace()
    settings = LatencySettings(target_ms=100.0, cells=args.cells, filters=args.filters, img_size=args.size,
                               stem=args.stem)
    with tempfile.TemporaryDirectory() as tmp:
        model = LatencyModel(settings, space, tmp)
        start = time.perf_counter()
        table = model.build_table(args.calibration, args.validation)
        build_s = time.perf_counter() - start
        rng = np.random.default_rng(0)
        held_out = [space.decode(space.sample(rng)) for _ in range(args.calibration + args.validation)][args.calibration:]
        first = [model.cache[g.hash()] for g in held_out]
        model.cache.clear()
        again = [model.measure(g) for g in held_out]
    noise = np.abs(np.array(again) - np.array(first)) / np.array(first)
    print(f"deployed network: {args.cells} cells per stack, base width {args.filters}, {args.size} px, {args.stem} stem; "
          f"onnxruntime CPU, 1 thread, fastest of {settings.runs} runs\n")
    print("| op shapes timed | calibration networks | held-out networks | mean error | max error | re-measuring the same networks (mean / max) | build time |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {len(table['entries'])} | {args.calibration} | {args.validation} | {100 * table['mean_error']:.1f}% | "
          f"{100 * table['max_error']:.1f}% | {100 * noise.mean():.1f}% / {100 * noise.max():.1f}% | {build_s:.0f} s |")
    print(f"\nmeasured latencies of the held-out networks: {', '.join(f'{v:.1f}' for v in first)} ms; "
          f"table {'used' if table['used'] else 'not used'} (threshold {100 * settings.max_table_error:.0f}%)")


if __name__ == "__main__":
    main()
