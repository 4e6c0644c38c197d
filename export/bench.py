"""``nasnet bench``: every way this package runs a model, timed on this machine in one run.

For a registered classifier (``--model``) or a genotype (``--genotype``): PyTorch eager as built, eager optimized
(:func:`nasnet_backbones.optimize_for_inference`: BatchNorm folded, channels_last), compiled
(``--compile``), onnxruntime FP32 unaligned and channel-aligned (:mod:`export.align_channels`),
INT8 (:func:`export.quantize.quantize_onnx` of the aligned FP32) and the ORT format of both
(:func:`export.ort_format.convert_to_ort`: Fixed optimizations for this host's platform). For a
detectron2 config (``--config-file``) the same rows for the whole detector, one C x H x W image
per call. For given files (``--onnx``/``--int8``) their rows and the ``.ort`` files made from them.

Each backend runs in its own subprocess, so the peak resident memory reported is that backend's
alone (model, runtime and activations); the onnxruntime child never imports torch. With one
thread (the default order there) all of them load, then take turns, one call each per round in
rotating order (a slower or busier stretch of the run falls on every row alike: the ratios come
from one run). With more threads they run one after another, one model in memory at a time (what
``--sequential`` asks for at one thread too): between calls, an idle child's thread pools keep
spinning (OpenMP's and onnxruntime's wait policies), and with the children taking turns on the
same cores that spin took the CPU from the one being timed (NASNet-A mobile eager, 2 threads on 2
cores: 95.6 ms taking turns, 37.8 ms one after another). Warm-up runs are excluded;
latency is per call (median and 90th percentile), throughput is images per second at the median.
With one thread the clock is the thread's CPU time (``time.thread_time``: PyTorch and onnxruntime
then compute on the calling thread, and the figure does not move with other load on the machine);
with more, wall time. Every result records the host's CPU model and ISA flags
(:mod:`nasnet_backbones.host`): the same file is faster or slower on hosts of the same kind.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np


__all__ = ["BenchRun", "add_parser", "check_target", "clock_for", "measure", "measure_alternating", "measure_in_child",
           "prepare", "run_backends", "timed"]

CLOCKS = {"wall": time.perf_counter, "thread": time.thread_time}
# export.ort_format.RUNTIME_REPLAY_ENTRY; spelled here because the onnxruntime child imports nothing of the package.
_RUNTIME_REPLAY_ENTRY = "session.enable_saved_runtime_optimizations"
_PROTOCOL = "@nasnet-bench"  # the alternating children's lines on stdout


def peak_rss_mb() -> float:
    """This process's peak resident memory. /proc's VmHWM starts afresh at exec; ru_maxrss (the
    fallback off Linux) keeps the parent's high-water mark across fork and exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], Any], runs: int, warmup: int, clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """Seconds per call of ``fn`` by ``clock``, ``runs`` times after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = clock()
        fn()
        times.append(clock() - start)
    return times


def clock_for(threads: int) -> str:
    """``thread`` (CPU time of the calling thread) with one thread, where all the work runs on it;
    ``wall`` otherwise (worker threads' time would be missed)."""
    return "thread" if threads == 1 else "wall"


def prepare(backend: str, target: str, batch: int, size: int, threads: int, pixel_max: float = 255.0, *,
            weights: str = "", optimize: bool = False, compile: bool = False, opts: Sequence[str] = (),
            session_config: dict[str, str] | None = None,
            architecture: dict[str, Any] | None = None) -> tuple[Callable[[], Any], int, int]:
    """Load one backend in this process: ``(step, images per call, warm-up calls it needs at least)``.

    ``eager``: target is a registered model name or a genotype JSON file (built by
    :func:`nasnet_backbones.build_model` with ``architecture``: ``cells``, ``filters``, ``stem``)
    with ``weights`` (``""``: random), run as built or, with ``optimize``, through
    :func:`nasnet_backbones.optimize_for_inference` (``compile`` too: its compile happens in a
    warm-up call, so at least one). ``detector``: target is a detectron2 config file or shipped
    name with ``opts`` overrides and ``weights`` (``""``: none), ``optimize`` its
    ``MODEL.NASNET.OPTIMIZE_FOR_INFERENCE``; it gets one C x H x W image of uniform pixels up to
    ``pixel_max``. ``ort``: target is an .onnx/.ort file, opened with ``session_config`` entries; a
    whole detector (3-D input) gets the same image as the eager detector. The parent reads the
    input conventions: this child imports neither onnx nor, for onnxruntime, torch."""
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    image = np.random.default_rng(0).uniform(0, pixel_max, (3, size, size)).astype(np.float32)
    if backend in ("eager", "detector"):
        import torch

        torch.set_num_threads(threads)
        if backend == "eager":
            import nasnet_backbones as nb

            model = nb.build_model(target, pretrained=weights or False, **(architecture or {})).eval()
            if optimize:
                model = nb.optimize_for_inference(model, compile=compile)
            inputs: Any = torch.from_numpy(x)
        else:
            model = _detectron2_model(target, weights, list(opts), optimize)
            inputs = [{"image": torch.from_numpy(image)}]

        def step() -> None:
            with torch.inference_mode():
                model(inputs)

        return step, 1 if backend == "detector" else batch, 1 if compile else 0
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    for key, value in (session_config or {}).items():
        options.add_session_config_entry(key, value)
    session = ort.InferenceSession(target, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    feed = image if len(session.get_inputs()[0].shape) == 3 else x  # a whole detector: one image per call

    def run() -> None:
        session.run(None, {name: feed})

    return run, 1 if feed is image else batch, 0


def _summary(times: list[float], per_call: int) -> dict[str, Any]:
    median = statistics.median(times)
    return {"median_ms": 1000 * median, "p90_ms": 1000 * float(np.percentile(times, 90)),
            "images_per_s": per_call / median, "peak_rss_mb": peak_rss_mb()}


def measure(backend: str, target: str, batch: int, size: int, threads: int, runs: int, warmup: int,
            pixel_max: float = 255.0, *, clock: str = "wall", **extra: Any) -> dict[str, Any]:
    """Time one backend (:func:`prepare`; ``extra``: its keyword arguments) in this process:
    ``median_ms``, ``p90_ms``, ``images_per_s`` and this process's ``peak_rss_mb``."""
    step, per_call, least = prepare(backend, target, batch, size, threads, pixel_max, **extra)
    return _summary(timed(step, runs, max(warmup, least), CLOCKS[clock]), per_call)


def _serve(spec: dict[str, Any]) -> None:
    """The alternating child: load and warm up, say ``ready``, then one timed call per ``run`` line
    on stdin (answered with its seconds) until ``done`` (answered with the summary). Protocol lines
    start with :data:`_PROTOCOL`; anything a library prints to stdout is skipped by the parent."""
    clock = CLOCKS[spec.pop("clock")]
    warmup = spec.pop("warmup")
    spec.pop("runs", None)
    step, per_call, least = prepare(spec.pop("backend"), spec.pop("target"), spec.pop("batch"), spec.pop("size"),
                                    spec.pop("threads"), spec.pop("pixel_max", 255.0), **spec)
    for _ in range(max(warmup, least)):
        step()
    times = []
    print(_PROTOCOL, "ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "run":
            start = clock()
            step()
            times.append(clock() - start)
            print(_PROTOCOL, repr(times[-1]), flush=True)
        elif line.strip() == "done":
            print(_PROTOCOL, json.dumps(_summary(times, per_call)), flush=True)
            return


def _detectron2_model(config: str, weights: str, opts: list[str], optimize: bool) -> Any:
    """The detector ``config`` describes, in eval mode on the CPU, as ``nasnet export detector`` builds it."""
    from detection.checkpoint import build_cpu_detector
    from detection.engine import merge_overrides
    from detection.model_zoo import get_config

    cfg = get_config(config)
    merge_overrides(cfg, opts)
    cfg.defrost()
    if "OPTIMIZE_FOR_INFERENCE" in cfg.MODEL.NASNET:
        cfg.MODEL.NASNET.OPTIMIZE_FOR_INFERENCE = optimize
    elif optimize:
        raise ValueError("this detection package has no MODEL.NASNET.OPTIMIZE_FOR_INFERENCE")
    return build_cpu_detector(cfg, weights)  # what export_detector builds: the same random layers


def measure_in_child(backend: str, target: str, *, batch: int, input_size: int, threads: int, runs: int,
                     warmup: int, pixel_max: float = 255.0, clock: str = "wall", **extra: Any) -> dict[str, Any]:
    """:func:`measure` (``extra``: its keyword arguments) in a fresh process running this file as a
    plain script, so that an onnxruntime child never imports torch (it would count in its memory)
    and each backend's peak memory is its own; ``ValueError`` with the child's last lines if it fails."""
    spec = dict(backend=backend, target=target, batch=batch, size=input_size, threads=threads, runs=runs,
                warmup=warmup, pixel_max=float(pixel_max), clock=clock, **extra)
    cmd = [sys.executable, str(Path(__file__).resolve()), json.dumps(spec)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=max(600, 20 * runs))
    except subprocess.TimeoutExpired:
        raise ValueError(f"benchmarking {backend} {target} did not finish in time") from None
    if out.returncode != 0:
        tail = " | ".join(out.stderr.strip().splitlines()[-3:])
        raise ValueError(f"benchmarking {backend} {target} failed: {tail}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _conventions(path: str) -> Any:
    """The input conventions of an .onnx or .ort file (read through onnxruntime, which reads both)."""
    import onnxruntime as ort

    from .conventions import conventions_from_metadata

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    try:
        return conventions_from_metadata(session.get_modelmeta().custom_metadata_map, session.get_inputs()[0].shape)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}; re-export the model with `nasnet export`") from None


def _recorded_size(path: str) -> int:
    """The square input size of an .onnx or .ort file: its fixed height, or the size its export recorded."""
    size = _conventions(path).input_size
    if not size:
        raise ValueError(f"{path} takes any input size and records none; pass --input-size")
    return size


@dataclass(frozen=True)
class BenchRun:
    """What :func:`run_backends` measured: one row per backend, at ``input_size``, on ``host``
    (:func:`nasnet_backbones.host.cpu_description`), with ``notes`` on rows left out and, with
    ``profile``, ``profiles``: ``(backend, text)`` per onnxruntime row."""

    rows: list[dict[str, Any]]
    input_size: int
    host: dict[str, Any] = field(default_factory=dict)
    batch: int = 1
    threads: int = 2
    runs: int = 20
    warmup: int = 3
    clock: str = "wall"
    notes: list[str] = field(default_factory=list)
    profiles: list[tuple[str, str]] = field(default_factory=list)
    order: str = "sequential"  # or "alternating": one call per backend per round

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` record: ``host``, ``rows``, ``input_size``, ``batch``, ``threads``, ``runs``,
        ``warmup``, ``clock``, ``order`` and ``notes`` (each row's ``profile``, when profiled, is in
        the row)."""
        return {"host": self.host, "rows": self.rows, "input_size": self.input_size, "batch": self.batch,
                "threads": self.threads, "runs": self.runs, "warmup": self.warmup, "clock": self.clock,
                "order": self.order, "notes": self.notes}


class _Server:
    """One alternating child (:func:`_serve`): its stdout read by a thread into a queue, so that a
    wait can time out and lines a library prints are skipped; stderr kept in a file for errors."""

    def __init__(self, label: str, spec: dict[str, Any]) -> None:
        import queue
        import threading

        self.label = label
        self.stderr = tempfile.TemporaryFile(mode="w+")
        cmd = [sys.executable, str(Path(__file__).resolve()), json.dumps({**spec, "serve": True})]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                     text=True, bufsize=1)
        self.lines: Any = queue.Queue()

        def pump() -> None:
            for line in self.proc.stdout:
                if line.startswith(_PROTOCOL + " "):
                    self.lines.put(line[len(_PROTOCOL) + 1:].strip())
            self.lines.put(None)  # the child's stdout closed: it exited

        threading.Thread(target=pump, daemon=True).start()

    def answer(self, timeout: float) -> str:
        import queue

        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise ValueError(f"benchmarking {self.label} did not answer within {timeout:.0f} s") from None
        if line is None:
            self.proc.wait()
            self.stderr.seek(0)
            tail = " | ".join(self.stderr.read().strip().splitlines()[-3:])
            raise ValueError(f"benchmarking {self.label} failed: {tail}")
        return line

    def ask(self, command: str, timeout: float) -> str:
        try:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # it exited; answer() says why
        return self.answer(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.stderr.close()


def measure_alternating(jobs: Sequence[tuple[str, str, str, dict[str, Any]]], *, runs: int,
                        timeout: float = 600.0) -> list[dict[str, Any]]:
    """Time several backends in turn, one call each per round, each in its own process.

    ``jobs``: ``(label, backend, target, spec)`` with ``spec`` as :func:`measure_in_child` takes
    it (``batch``, ``input_size``, ``threads``, ``warmup``, ``pixel_max``, ``clock``, and
    :func:`prepare`'s keywords). All children load and warm up, then each round calls every one
    once, the order rotated by one each round: a change in the machine's load or clock speed
    during the run falls on every backend alike, so ratios between rows are taken in one run. The
    results are in ``jobs``' order, each with its own process's peak memory."""
    servers: list[_Server] = []
    try:
        for label, backend, target, spec in jobs:
            spec = dict(spec)
            spec["size"] = spec.pop("input_size")
            servers.append(_Server(label, {"backend": backend, "target": target, "runs": runs, **spec}))
        for server in servers:
            if server.answer(timeout) != "ready":
                raise ValueError(f"benchmarking {server.label}: unexpected answer from its process")
        for round_ in range(runs):
            shift = round_ % len(servers)
            for server in servers[shift:] + servers[:shift]:
                server.ask("run", timeout)
        return [json.loads(server.ask("done", timeout)) for server in servers]
    finally:
        for server in servers:
            server.close()


def run_backends(*, model: str | None = None, weights: str | None = None, cells: int = 4, filters: int = 44,
                 stem: str | None = None, onnx: str | None = None,
                 int8: str | None = None, config: str | None = None, opts: Sequence[str] = (),
                 quantize: bool = True, calib: str = "synthetic", input_size: int | None = None, threads: int = 2,
                 batch: int = 1, runs: int = 20, warmup: int = 3, optimize: bool = True, compile: bool = False,
                 align: bool = True, ort_format: bool = True, profile: bool = False,
                 alternate: bool | None = None) -> BenchRun:
    """Time every backend of a registered ``model`` or genotype JSON file (``cells``, ``filters``,
    ``stem`` as :func:`nasnet_backbones.build_model` takes them; ``weights``: a tag, a file, or None
    for random weights), of the detectron2 ``config`` (with ``opts`` overrides; ``weights`` None takes its
    ``MODEL.WEIGHTS``, ``""`` none), or of the given ``onnx``/``int8`` files, each in its own process
    (module doc): with ``alternate`` all at once, one call each per round
    (:func:`measure_alternating`), else one after another (one model in memory at a time); None
    (default) alternates with one thread only. The groups: eager optimized (``optimize``),
    compiled (``compile``, classifiers only), the channel-aligned FP32 (``align``; left out with a note where ``"auto"`` aligns
    nothing on this host), INT8 (``quantize``, on ``calib``, of the aligned FP32; random weights are
    not held to the agreement gate), ``.ort`` of the FP32 and INT8 graphs (``ort_format``: this
    host's platform, Fixed style, the batch fixed to 1 when ``batch`` is 1). A ``model`` with
    ``onnx`` (as the demo passes its own exports) times those files instead of exporting.
    ``input_size`` defaults to the model's, the config's ``INPUT.MIN_SIZE_TEST`` (a square image;
    the config's test-time size is set to it), or the size ``onnx`` records. With ``profile``, each
    onnxruntime row also gets its optimized-graph census and per-op profile
    (:func:`export.ort_profile.profile_summary`), after the timing. Each row: ``backend``,
    ``median_ms``, ``p90_ms``, ``images_per_s``, ``peak_rss_mb``, ``vs_first`` (its latency over the
    first row's) and, for files, ``source`` (what it was made from) or ``file``."""
    from nasnet_backbones.host import cpu_description

    if not (model or onnx or config):
        raise ValueError("nothing to time: pass model, config or onnx")
    if config and (model or onnx or int8):
        raise ValueError("config times a whole detector; it cannot be combined with model, onnx or int8")
    if compile and not model:
        raise ValueError("--compile is for --model or --genotype: torch.compile of a whole detector or of a file "
                         "is not measured here")
    clock = clock_for(threads)
    notes: list[str] = []
    profiles: list[tuple[str, str]] = []
    timing = dict(batch=batch, threads=threads, warmup=warmup, clock=clock)
    # (label, backend, target, spec, about): what to time, in the table's order
    jobs: list[tuple[str, str, str, dict[str, Any], dict[str, Any]]] = []

    with tempfile.TemporaryDirectory(prefix="nasnet-bench-") as tmp:
        files: list[tuple[str, str, dict[str, Any]]] = []  # (backend, path, about)
        fp32: str | None = None
        aligned: tuple[str, int] | None = None
        if model:
            import nasnet_backbones as nb

            shape = dict(cells=cells, filters=filters, stem=stem) if str(model).endswith(".json") else {}
            network = nb.build_model(model, pretrained=weights or False, **shape).eval()
            input_size = input_size or network.pretrained_cfg.input_size
            spec = dict(input_size=input_size, weights=weights or "", architecture=shape, **timing)
            jobs.append(("PyTorch eager", "eager", model, spec, {}))
            if optimize:
                jobs.append(("PyTorch eager optimized", "eager", model, {**spec, "optimize": True}, {}))
            if compile:
                jobs.append(("PyTorch compiled", "eager", model, {**spec, "optimize": True, "compile": True}, {}))
            if not onnx:
                from .onnx_export import export_classifier

                fp32, aligned = _exports(lambda path, alignment: export_classifier(
                    network, path, input_size=input_size, align_channels=alignment), tmp, align, notes)
        elif config:
            from detection.engine import merge_overrides

            from .detectron2_detector import detector_config, export_detector

            if batch != 1:
                raise ValueError(f"--batch {batch}: a whole detector (--config-file) takes one image per call; "
                                 "drop --batch")
            cfg, weights = detector_config(config, opts=opts, weights=weights)  # weights checked before anything runs
            input_size = input_size or int(cfg.INPUT.MIN_SIZE_TEST)
            # The image is the size the detector works at: its test-time resize says so too (the
            # export's verification resizes by it, and the eager model's post-processing reads it).
            opts = [*opts, "INPUT.MIN_SIZE_TEST", str(input_size),
                    "INPUT.MAX_SIZE_TEST", str(max(input_size, int(cfg.INPUT.MAX_SIZE_TEST)))]
            merge_overrides(cfg, opts[-4:])
            spec = dict(input_size=input_size, weights=weights, opts=list(opts), **timing)
            jobs.append(("PyTorch eager", "detector", config, {**spec, "optimize": False}, {}))
            if optimize:
                if "OPTIMIZE_FOR_INFERENCE" in cfg.MODEL.NASNET:
                    jobs.append(("PyTorch eager optimized", "detector", config, {**spec, "optimize": True}, {}))
                else:
                    notes.append("PyTorch eager optimized: left out, this detection package has no "
                                 "MODEL.NASNET.OPTIMIZE_FOR_INFERENCE config key")
            fp32, aligned = _exports(lambda path, alignment: export_detector(
                cfg, weights, path, (input_size, input_size), align_channels=alignment), tmp, align, notes)
        if onnx and not input_size:
            input_size = _recorded_size(onnx)
        if onnx:  # given files: timed as they are, each named by its format
            files.append((_file_backend(onnx, "FP32"), onnx, {"file": onnx}))
            if int8:
                files.append((_file_backend(int8, "INT8"), int8, {"file": int8}))
        elif fp32:
            files.append(("onnxruntime FP32", fp32, {"alignment": "none"}))
            aligned_path = None
            if aligned:
                aligned_path, block = aligned
                files.append(("onnxruntime FP32 aligned", aligned_path, {"alignment": block}))
            if quantize:
                from .quantize import quantize_onnx

                int8 = str(Path(tmp) / "int8.onnx")
                # Timing only; random weights agree with FP32 by chance, so only trained weights are
                # held to the agreement gates.
                if config:
                    gate = {} if weights else {"min_box_iou": 0.0}
                    counts = dict(num_calibration=8, num_held_out=4)
                else:
                    gate = {} if weights else {"min_agreement": 0.0}
                    counts = dict(num_calibration=16, num_held_out=8)
                quantize_onnx(aligned_path or fp32, int8, calib, per_channel=True, **counts, **gate)
                files.append(("onnxruntime INT8", int8,
                              {"source": "onnxruntime FP32 aligned" if aligned_path else "onnxruntime FP32"}))
        if ort_format:
            files += _ort_files(files, tmp, batch)
        for backend, path, about in files:
            entries = {_RUNTIME_REPLAY_ENTRY: "1"} if Path(path).suffix == ".ort" else {}
            jobs.append((backend, "ort", path, dict(input_size=input_size, pixel_max=_conventions(path).pixel_max,
                                                    session_config=entries, **timing), about))

        if alternate is None:
            alternate = threads == 1  # idle multi-threaded children spin (module doc)
        if alternate:
            results = measure_alternating([job[:4] for job in jobs], runs=runs)
        else:
            results = [measure_in_child(backend, target, runs=runs, **spec) for _, backend, target, spec, _ in jobs]
        rows = [{"backend": label, **about, **result} for (label, _, _, _, about), result in zip(jobs, results)]
        if profile:
            from .ort_profile import profile_summary

            for row, (label, backend, target, _, _) in zip(rows, jobs):
                if backend == "ort":
                    summary = profile_summary(target, threads=threads, runs=runs)
                    row["profile"] = summary.as_dict()
                    profiles.append((label, summary.format().replace(str(Path(tmp)) + "/", "")))  # no temp paths
    base = rows[0]["median_ms"]
    for row in rows:
        row["vs_first"] = row["median_ms"] / base
    return BenchRun(rows, input_size, cpu_description(), batch, threads, runs, warmup, clock, notes, profiles,
                    "alternating" if alternate and len(rows) > 1 else "sequential")


def _file_backend(path: str, kind: str) -> str:
    return f"{'.ort' if Path(path).suffix == '.ort' else 'onnxruntime'} {kind}"


def _exports(export: Callable[[str, Any], Any], tmp: str, align: bool,
             notes: list[str]) -> tuple[str, tuple[str, int] | None]:
    """The unaligned FP32 export and, with ``align``, the one aligned to this host's block (path, block)."""
    from .align_channels import resolve_alignment

    fp32 = str(Path(tmp) / "fp32.onnx")
    export(fp32, "none")
    if not align:
        return fp32, None
    block = resolve_alignment("auto")
    if block is None:
        notes.append("onnxruntime FP32 aligned: left out, --align-channels auto aligns nothing on this host "
                     "(no AVX2 or AVX-512F reported)")
        return fp32, None
    path = str(Path(tmp) / f"fp32_aligned{block}.onnx")
    export(path, block)
    return fp32, (path, block)


def _ort_files(files: list[tuple[str, str, dict[str, Any]]], tmp: str,
               batch: int) -> list[tuple[str, str, dict[str, Any]]]:
    """The ``.ort`` rows: the FP32 graph (the aligned one when there is one) and the INT8 graph,
    converted with this host's platform and Fixed optimizations, batch fixed to 1 when ``batch`` is 1."""
    from .ort_format import convert_to_ort

    by_backend = {backend: (path, about) for backend, path, about in files}
    out = []
    for kind in ("FP32", "INT8"):
        for source in ((f"onnxruntime {kind} aligned", f"onnxruntime {kind}") if kind == "FP32"
                       else (f"onnxruntime {kind}",)):
            if source in by_backend:
                path, _ = by_backend[source]
                target = str(Path(tmp) / f"{kind.lower()}_{len(out)}.ort")
                report = convert_to_ort(path, target, optimization_style="Fixed", fix_batch=batch == 1)
                out.append((f".ort {kind}", target, {"source": source, "target_platform": report.target_platform,
                                                     "optimization_style": "Fixed", "batch": report.batch}))
                break
    return out


def add_parser(subparsers: Any) -> None:
    # here, not at the top: the per-backend child runs this file and must not load torch
    from nasnet_backbones.argtypes import base_width, cells_per_stack, image_size, nonnegative_int, positive_int

    p = subparsers.add_parser("bench", help="latency of every backend: PyTorch eager (as built, optimized, compiled), "
                              "onnxruntime FP32 (unaligned, aligned), INT8 and the ORT format",
                              description="Median/p90 latency, throughput and peak memory per backend, each in its "
                                          "own process, warm-up excluded, with the host's CPU model and ISA flags. "
                                          "With one thread the clock is the thread's CPU time, else wall time.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="registered model: eager, then exported (FP32), quantized (INT8) and "
                        "converted to the ORT format here")
    source.add_argument("--genotype", metavar="FILE",
                        help="genotype JSON file (e.g. from `nasnet search`), built with --cells, --filters, --stem: "
                        "the same rows as --model")
    source.add_argument("--config-file", "--config", dest="config_file", metavar="FILE",
                        help="detectron2 config file or shipped config name: the whole detector, the same rows")
    source.add_argument("--onnx", help="an exported .onnx (or .ort) file")
    p.add_argument("--weights", help="with --model: weights tag or file (default: random weights); with "
                   "--config-file: detector checkpoint (default: the config's MODEL.WEIGHTS; '' for none)")
    p.add_argument("--cells", type=cells_per_stack, default=4, help="with --genotype: normal cells per stack (N)")
    p.add_argument("--filters", type=base_width, default=44, help="with --genotype: base width")
    p.add_argument("--stem", choices=("imagenet", "cifar"), default=None,
                   help="with --genotype: stem type (default imagenet)")
    p.add_argument("--int8", help="with --onnx: its INT8 version, timed too")
    groups = p.add_argument_group("rows")
    groups.add_argument("--no-optimize", action="store_true",
                        help="skip 'PyTorch eager optimized' (BatchNorm folded, channels_last; for a detector "
                        "MODEL.NASNET.OPTIMIZE_FOR_INFERENCE)")
    groups.add_argument("--compile", action="store_true",
                        help="with --model or --genotype: add 'PyTorch compiled' (optimized and torch.compile'd); "
                        "off by default because compiling takes about a minute (in the warm-up, not timed)")
    groups.add_argument("--no-align", action="store_true",
                        help="skip the channel-aligned FP32 export (INT8 and .ort then come from the unaligned one)")
    groups.add_argument("--no-int8", action="store_true", help="with --model or --config-file: skip quantization")
    groups.add_argument("--no-ort", action="store_true",
                        help="skip the .ort rows (the FP32 and INT8 graphs converted for this host, Fixed style)")
    p.add_argument("--profile", action="store_true",
                   help="after the table, the optimized graph's census (fused/NCHWc convs, QLinearConv, Q/DQ pairs, "
                   "transposes) and the per-op profile of each onnxruntime row")
    p.add_argument("--calib", default="synthetic", help="calibration images for INT8 (folder or 'synthetic')")
    p.add_argument("--input-size", type=image_size,
                   help="square input size (default: the model's; a detector's INPUT.MIN_SIZE_TEST, which is set to "
                   "it: the image is the size the detector works at)")
    p.add_argument("--threads", type=positive_int, default=2)
    p.add_argument("--batch", type=positive_int, default=1)
    p.add_argument("--runs", type=positive_int, default=20)
    p.add_argument("--warmup", type=nonnegative_int, default=3)
    p.add_argument("--sequential", action="store_true",
                   help="time the backends one after another, one model in memory at a time (the default with "
                   "--threads above 1; with one thread the default is all loaded, one call each per round in "
                   "rotating order, so that ratios between rows come from one run)")
    p.add_argument("--json", action="store_true",
                   help="print {host, rows, input_size, batch, threads, runs, warmup, clock, order, notes} as JSON")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=None, metavar="KEY VALUE",
                   help="with --config-file: config overrides, last")
    p.set_defaults(func=_run)


def check_target(path: str, flag: str) -> None:
    """Refuse (``ValueError`` naming ``flag`` and the file) a file to time that onnxruntime cannot
    run as one of this package's graphs: an .onnx is checked as :func:`export.quantize.load_exported`
    does, an .ort (which onnx cannot read) by loading it in onnxruntime."""
    if Path(path).suffix != ".ort":
        from .quantize import load_exported

        load_exported(path, what=flag)
        return
    import onnxruntime as ort

    from nasnet_backbones.errors import first_line

    if not Path(path).is_file():
        raise FileNotFoundError(f"{flag} {path}: no such file")
    try:
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own error types
        cause = first_line(exc)
        raise ValueError(f"{flag} {path} is not a model onnxruntime can load ({cause})") from None
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) not in (3, 4):
        raise ValueError(f"{flag} {path} has {len(inputs)} inputs of shapes {[i.shape for i in inputs]}; only "
                         "graphs with one image input (as `nasnet export` writes them) are supported")


def _run(args: argparse.Namespace) -> int:
    from nasnet_backbones.argtypes import refuse_together
    from nasnet_backbones.host import cpu_summary

    for source in ("--model", "--genotype", "--config-file"):
        refuse_together(args, source, "--int8")  # --int8 is --onnx's quantized version
    for flag in ("--no-int8", "--weights", "--no-optimize", "--compile", "--no-align"):
        refuse_together(args, "--onnx", flag)  # rows of a model: a given file has none of them
    refuse_together(args, "--config-file", "--compile")
    refuse_together(args, "--no-optimize", "--compile")  # --compile compiles the optimized model
    if args.opts is not None and not args.config_file:
        raise ValueError("--opts overrides a detectron2 config: use it with --config-file")
    for flag, path in (("--onnx", args.onnx), ("--int8", args.int8)):
        if path:
            check_target(path, flag)
    if not (args.onnx or args.no_int8) and args.calib != "synthetic" and not Path(args.calib).is_dir():
        raise FileNotFoundError(f"--calib {args.calib}: no such folder of images (or pass 'synthetic')")
    run = run_backends(model=args.model or args.genotype, weights=args.weights, cells=args.cells,
                       filters=args.filters, stem=args.stem, onnx=args.onnx, int8=args.int8,
                       config=args.config_file, opts=args.opts or (), quantize=not args.no_int8, calib=args.calib,
                       input_size=args.input_size, threads=args.threads, batch=args.batch, runs=args.runs,
                       warmup=args.warmup, optimize=not args.no_optimize, compile=args.compile,
                       align=not args.no_align, ort_format=not args.no_ort, profile=args.profile,
                       alternate=False if args.sequential else None)
    if args.json:
        json.dump(run.to_dict(), sys.stdout, indent=2)
        print()
        return 0
    clock = "thread CPU time" if run.clock == "thread" else "wall time"
    print(f"host: {cpu_summary()}")
    threads = f"{run.threads} thread{'s' if run.threads > 1 else ''}"
    print(f"batch {run.batch}, {run.input_size}x{run.input_size}, {threads}, "
          f"median of {run.runs} after {run.warmup} warm-up runs ({clock}"
          f"{', backends alternating' if run.order == 'alternating' else ''})")
    print("| backend | median (ms) | p90 (ms) | images/s | peak RSS (MB) | vs first |")
    print("|---|---|---|---|---|---|")
    for r in run.rows:
        print(f"| {r['backend']} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | {r['images_per_s']:.1f} | "
              f"{r['peak_rss_mb']:.0f} | {r['vs_first']:.2f}x |")
    for r in run.rows:
        if "source" in r:
            print(f"{r['backend']}: made from {r['source']}"
                  + (f" ({r['target_platform']}, {r['optimization_style']}, batch {r['batch']})"
                     if "target_platform" in r else ""))
    for note in run.notes:
        print(f"note: {note}")
    if run.profiles:
        print("\nprofiles: onnxruntime's profiler times kernels by wall clock, with its own overhead per node; "
              "other load on the machine inflates them: read the shares, the table's medians are the latency")
    for backend, text in run.profiles:
        print(f"\n## {backend}\n{text}")
    return 0


if __name__ == "__main__":  # the per-backend child process
    spec = json.loads(sys.argv[1])
    if spec.pop("serve", False):
        _serve(spec)
    else:
        print(json.dumps(measure(spec.pop("backend"), spec.pop("target"), spec.pop("batch"), spec.pop("size"),
                                 spec.pop("threads"), spec.pop("runs"), spec.pop("warmup"), spec.pop("pixel_max"),
                                 **spec)))
