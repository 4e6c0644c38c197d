"""Training memory and step time of Faster R-CNN NASNet-A large FPN, with and without gradient
checkpointing of the cell stack (``MODEL.NASNET.GRAD_CHECKPOINTING``), and with detectron2's AMP.

    python benchmarks/train_memory.py [--size 800] [--steps 2] [--device cpu|cuda] [--amp]
                                      [--threads 2] [--max-rss-gb 20]

The paper's best COCO detector is NASNet-A large at 1200 px; what stops a user training it is
memory. Each configuration runs in its own subprocess: the shipped config
``faster_rcnn_nasnet_a_large_FPN_1x`` with random weights, one synthetic image of ``--size`` x
``--size`` with five boxes per step, detectron2's own ``SimpleTrainer`` (``AMPTrainer`` with
``--amp``), SGD. Reported: the step time (median after the first step, which allocates), and the
peak memory: on the CPU the process's peak resident set (VmHWM) and its growth over the built
model, on CUDA ``torch.cuda.max_memory_allocated``. A CPU child whose resident set passes
``--max-rss-gb`` is stopped and reported as such (so the run cannot take the host down).
Markdown to stdout, headed by the host's CPU and ISA flags.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

CONFIG = "faster_rcnn_nasnet_a_large_FPN_1x"


def _rss_mb(pid: str = "self", field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(*, checkpointing: bool, size: int, steps: int, device: str, amp: bool, threads: int) -> dict:
    import torch
    from detectron2.engine import AMPTrainer, SimpleTrainer
    from detectron2.modeling import build_model
    from detectron2.structures import Boxes, Instances
    from detectron2.utils.events import EventStorage

    import detection

    torch.set_num_threads(threads)
    cfg = detection.get_config(CONFIG)
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = device
    cfg.MODEL.NASNET.GRAD_CHECKPOINTING = checkpointing
    torch.manual_seed(0)
    model = build_model(cfg).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)

    def batches():
        g = torch.Generator().manual_seed(0)
        while True:
            corners = torch.rand(5, 2, generator=g) * (size * 0.6)
            boxes = torch.cat([corners, corners + 40 + torch.rand(5, 2, generator=g) * (size * 0.3)], 1)
            instances = Instances((size, size), gt_boxes=Boxes(boxes), gt_classes=torch.randint(0, 80, (5,), generator=g))
            yield [{"image": torch.randint(0, 256, (3, size, size), generator=g).float(), "instances": instances,
                    "height": size, "width": size}]

    trainer = (AMPTrainer if amp else SimpleTrainer)(model, batches(), optimizer)
    built_mb = _rss_mb()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    with EventStorage(0) as storage:
        trainer.storage = storage
        for step in range(steps):
            trainer.iter = step
            start = time.perf_counter()
            trainer.run_step()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
            storage.step()
    result = {"step_s": statistics.median(times[1:] or times), "first_step_s": times[0], "built_mb": built_mb,
              "peak_mb": _rss_mb(field="VmHWM")}
    if device == "cuda":
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def run_child(args: argparse.Namespace, checkpointing: bool) -> dict:
    """One configuration in a subprocess, stopped if its resident set passes --max-rss-gb."""
    cmd = [sys.executable, __file__, "--child", str(int(checkpointing)), "--size", str(args.size), "--steps",
           str(args.steps), "--device", args.device, "--threads", str(args.threads)] + (["--amp"] if args.amp else [])
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    high = 0.0
    while child.poll() is None:
        try:
            high = max(high, _rss_mb(str(child.pid)))
        except OSError:
            break
        if args.device == "cpu" and high > args.max_rss_gb * 1024:
            child.kill()
            child.wait()
            return {"stopped_mb": high}
        time.sleep(0.5)
    out, err = child.communicate()
    if child.returncode != 0:
        raise SystemExit(f"child (checkpointing={checkpointing}) failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=800)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--amp", action="store_true", help="detectron2's AMPTrainer (SOLVER.AMP.ENABLED); CUDA")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-rss-gb", type=float, default=20.0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(checkpointing=bool(int(args.child)), size=args.size, steps=args.steps,
                                 device=args.device, amp=args.amp, threads=args.threads)))
        return
    from nasnet_backbones.host import cpu_summary

    rows = {flag: run_child(args, flag) for flag in (False, True)}
    print(f"Faster R-CNN NASNet-A large FPN, training, {args.size}x{args.size}, batch 1, {args.device}"
          f"{' AMP' if args.amp else ''}, {args.threads} threads, {args.steps} steps; host: {cpu_summary()}\n")
    memory = "peak CUDA memory (MB)" if args.device == "cuda" else "peak RSS (MB) | over the built model (MB)"
    print(f"| gradient checkpointing | step (s) | first step (s) | {memory} |")
    print("|---|---|---|---|" + ("" if args.device == "cuda" else "---|"))
    for flag, r in rows.items():
        name = "on" if flag else "off"
        if "stopped_mb" in r:
            print(f"| {name} | stopped | - | > {r['stopped_mb']:.0f} (passed --max-rss-gb {args.max_rss_gb:g}) |"
                  + ("" if args.device == "cuda" else " - |"))
            continue
        mem = (f"{r['cuda_peak_mb']:.0f}" if args.device == "cuda"
               else f"{r['peak_mb']:.0f} | {r['peak_mb'] - r['built_mb']:.0f}")
        print(f"| {name} | {r['step_s']:.1f} | {r['first_step_s']:.1f} | {mem} |")
    done = [r for r in rows.values() if "stopped_mb" not in r]
    if len(done) == 2 and args.device == "cpu":
        off, on = rows[False], rows[True]
        print(f"\nWith checkpointing: {(on['peak_mb'] - on['built_mb']) / (off['peak_mb'] - off['built_mb']):.2f}x the "
              f"training memory over the model, {on['step_s'] / off['step_s']:.2f}x the step time.")


if __name__ == "__main__":
    main()
