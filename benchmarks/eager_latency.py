"""Eager CPU latency of nasnet_backbones against the reference ports, same weights and outputs.

    python benchmarks/eager_latency.py [--threads 1] [--runs 20] [--batches 1 8] [--models mobile large] [--compile]

For each model and batch size: build the reference (``pretrainedmodels`` nasnetamobile at 224, timm
nasnetalarge at 331), convert its random weights into ours, check the outputs agree, then time the
reference, our model as built, and ``optimize_for_inference`` of it (BatchNorm folded,
channels_last, oneDNN-prepacked convolutions; with ``--compile`` also its ``torch.compile``d
version, after a one-time compile) in eval mode under ``torch.inference_mode``. Warm-up runs are
excluded and the variants alternate run by run, so machine noise hits all of them alike. With one
thread the clock is the thread's CPU time (``time.thread_time``), which other processes on the
host do not inflate; with more it is wall time. Reports medians and ratios to the reference, and
the host's CPU and ISA flags. Writes a Markdown table to stdout (and ``--json PATH`` if given).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import nasnet_backbones as nb
from nasnet_backbones.convert import convert_state_dict
from nasnet_backbones.host import cpu_description, cpu_summary

CASES = {
    "mobile": ("nasnet_a_mobile", 224, lambda: __import__("pretrainedmodels").nasnetamobile(num_classes=1000, pretrained=None), "pretrainedmodels nasnetamobile"),
    "large": ("nasnet_a_large", 331, lambda: __import__("timm").create_model("nasnetalarge"), "timm nasnetalarge"),
}


def time_variants(variants: dict[str, torch.nn.Module], x: torch.Tensor, runs: int, warmup: int = 2) -> dict[str, list[float]]:
    clock = time.thread_time if torch.get_num_threads() == 1 else time.perf_counter
    times: dict[str, list[float]] = {name: [] for name in variants}
    with torch.inference_mode():
        for _ in range(warmup):
            for model in variants.values():
                model(x)
        for _ in range(runs):
            for name, model in variants.items():
                start = clock()
                model(x)
                times[name].append(clock() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--compile", action="store_true", help="also time optimize_for_inference(compile=True)")
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
        variants = {"reference": ref, "ours": ours, "optimized": nb.optimize_for_inference(ours)}
        if args.compile:
            variants["compiled"] = nb.optimize_for_inference(ours, compile=True)
        for batch in args.batches:
            x = torch.randn(batch, 3, size, size)
            with torch.inference_mode():
                want = ref(x)
                diff = max((model(x) - want).abs().max().item() for model in variants.values())
            times = time_variants(variants, x, args.runs)
            ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            rows.append(dict(model=name, reference=ref_name, size=size, batch=batch, threads=args.threads,
                             runs=args.runs, **{f"{k}_ms": round(v, 1) for k, v in ms.items()},
                             **{f"{k}_ratio": round(v / ms["reference"], 3) for k, v in ms.items() if k != "reference"},
                             max_abs_diff=diff))
    clock = "thread CPU time" if args.threads == 1 else "wall time"
    print(f"{cpu_summary()}; {args.threads} thread(s), {clock}, median of {args.runs} alternating runs")
    names = [k for k in ("ours", "optimized", "compiled") if any(f"{k}_ms" in r for r in rows)]
    print("| model | input | batch | reference (ms) | " + " | ".join(f"{k} (ms) | {k} / ref" for k in names)
          + " | max abs diff |")
    print("|---|---|---|---|" + "---|---|" * len(names) + "---|")
    for r in rows:
        print(f"| {r['model']} vs {r['reference']} | {r['size']} | {r['batch']} | {r['reference_ms']} | "
              + " | ".join(f"{r[k + '_ms']} | {r[k + '_ratio']:.2f}" for k in names) + f" | {r['max_abs_diff']:.1e} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"host": cpu_description(), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
