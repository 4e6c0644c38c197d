"""Eager CPU latency of nasnet_backbones against the reference ports, same weights and outputs.

    python benchmarks/eager_latency.py [--threads 2] [--runs 10] [--batches 1 8] [--models mobile large]

For each model and batch size: build the reference (``pretrainedmodels`` nasnetamobile at 224, timm
nasnetalarge at 331), convert its random weights into ours, check the outputs agree, then time
both in eval mode under ``torch.inference_mode`` (warm-up runs excluded, runs interleaved so
machine noise hits both equally) and report the medians and their ratio (ours / reference).
Writes a Markdown table to stdout (and ``--json PATH`` if given).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import nasnet_backbones as nb
from nasnet_backbones.convert import convert_state_dict

CASES = {
    "mobile": ("nasnet_a_mobile", 224, lambda: __import__("pretrainedmodels").nasnetamobile(num_classes=1000, pretrained=None), "pretrainedmodels nasnetamobile"),
    "large": ("nasnet_a_large", 331, lambda: __import__("timm").create_model("nasnetalarge"), "timm nasnetalarge"),
}


def time_pair(ours, ref, x, runs: int, warmup: int = 2) -> tuple[list[float], list[float]]:
    with torch.inference_mode():
        for _ in range(warmup):
            ours(x), ref(x)
        t_ours, t_ref = [], []
        for _ in range(runs):
            for model, sink in ((ours, t_ours), (ref, t_ref)):
                start = time.perf_counter()
                model(x)
                sink.append(time.perf_counter() - start)
    return t_ours, t_ref


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--json", help="also write results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for key in args.models:
        name, size, make_ref, ref_name = CASES[key]
        ref = make_ref().eval()
        ours = nb.create_model(name).eval()
        ours.load_state_dict(convert_state_dict(ours, ref.state_dict()))
        for batch in args.batches:
            x = torch.randn(batch, 3, size, size)
            with torch.inference_mode():
                diff = (ours(x) - ref(x)).abs().max().item()
            t_ours, t_ref = time_pair(ours, ref, x, args.runs)
            m_ours, m_ref = statistics.median(t_ours) * 1e3, statistics.median(t_ref) * 1e3
            rows.append(dict(model=name, reference=ref_name, size=size, batch=batch, threads=args.threads,
                             runs=args.runs, ours_ms=round(m_ours, 1), reference_ms=round(m_ref, 1),
                             ratio=round(m_ours / m_ref, 3), max_abs_diff=diff))
    print("| model | reference | input | batch | ours (ms) | reference (ms) | ratio | max abs diff |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['reference']} | {r['size']} | {r['batch']} | {r['ours_ms']} | "
              f"{r['reference_ms']} | {r['ratio']} | {r['max_abs_diff']:.1e} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
