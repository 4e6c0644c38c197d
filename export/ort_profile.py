"""What onnxruntime makes of an exported graph, and where its time goes.

Two views, both on this host's CPU execution provider at the full optimization level:

* :func:`graph_census` saves the graph onnxruntime actually runs (``optimized_model_filepath``)
  and counts its nodes: how many convolutions became quantized ``QLinearConv`` kernels, fused
  ``FusedConv``, or blocked ``com.microsoft.nchwc`` ones, how many ``QuantizeLinear`` /
  ``DequantizeLinear`` nodes were left unfused (and how many of those sit around ``Concat``,
  ``Add`` or pooling, the usual reason INT8 is no faster than FP32), how many layout
  ``Transpose`` / NCHWc reorders it inserted, and what float compute remains.
* :func:`op_profile` runs the session with onnxruntime's profiler and adds up the kernel time of
  each node (the trace's ``"cat": "Node"`` events), by op type.

:func:`profile_summary` gives both; ``nasnet bench --profile`` prints its :meth:`ProfileSummary.format`.
The optimized graph is specific to the host it was made on (NCHWc block size, INT8 kernels), so
the figures describe this machine only.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from nasnet_backbones.errors import first_line

from .graph_edits import attribute_values, readers_of

__all__ = ["GraphCensus", "OpProfile", "ProfileSummary", "graph_census", "op_profile", "profile_summary"]

logger = logging.getLogger(__name__)

NCHWC_DOMAIN = "com.microsoft.nchwc"
MS_DOMAIN = "com.microsoft"
_CONV_TYPES = {"Conv", "FusedConv", "QLinearConv", "ConvInteger", "NhwcConv", "NhwcFusedConv"}
_QUANTIZED_CONV = {"QLinearConv", "ConvInteger"}
_Q_DQ = {"QuantizeLinear", "DequantizeLinear"}
#: Ops next to which a leftover Q/DQ pair means a float round trip (onnxruntime quantizes them, or not).
_NEIGHBOURS = {"Concat", "Add", "Sum", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Pad"}
#: Float ops that do arithmetic on every element (everything else is layout, shape or quantization glue).
_FLOAT_COMPUTE = {"Conv", "FusedConv", "NhwcFusedConv", "MatMul", "Gemm", "FusedMatMul", "FusedGemm", "Add", "Sum",
                  "Mul", "Sub", "Div", "Relu", "Sigmoid", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool",
                  "GlobalMaxPool", "BatchNormalization", "Softmax", "Pad", "Concat"}
#: onnxruntime's quantized versions of float ops (contrib and standard domains).
_QUANTIZED_OPS = {"QLinearConv", "ConvInteger", "QLinearAdd", "QLinearMul", "QLinearConcat", "QLinearAveragePool",
                  "QLinearGlobalAveragePool", "QLinearMatMul", "MatMulInteger", "QGemm", "QLinearSigmoid",
                  "QLinearLeakyRelu", "QLinearSoftmax", "QLinearReduceMean", "DynamicQuantizeLinear"}


def _key(domain: str, op_type: str) -> str:
    return f"{domain or 'ai.onnx'}:{op_type}"


def _short(key: str) -> str:
    """``com.microsoft.nchwc:Conv`` -> ``nchwc:Conv``, ``ai.onnx:Conv`` -> ``Conv`` (for tables)."""
    domain, _, op = key.partition(":")
    return op if domain == "ai.onnx" else f"{domain.rpartition('.')[2] if domain != MS_DOMAIN else 'ms'}:{op}"


def _session(path: Path, threads: int, optimized: Path | None = None, profile_prefix: Path | None = None):
    """A CPU session at ORT_ENABLE_ALL with ``threads`` intra-op threads (1: the calling thread)."""
    import onnxruntime as ort

    if not path.is_file():
        raise ValueError(f"{path}: no such file" if not path.exists() else f"{path} is not a file")
    if threads < 1:
        raise ValueError(f"threads must be at least 1, not {threads!r}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # the warning that an NCHWc graph only runs on this kind of host
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_prefix)
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's Fail / InvalidProtobuf / InvalidGraph
        cause = first_line(exc)
        raise ValueError(f"{path} is not an ONNX model onnxruntime can load ({cause}); pass a .onnx or .ort file "
                         "written by `nasnet export`") from None


# --------------------------------------------------------------------------------------------- census


@dataclass(frozen=True)
class GraphCensus:
    """Node counts of the graph onnxruntime runs (after all its optimizations, on this host).

    ``op_counts`` maps ``"domain:op"`` (``ai.onnx`` for the standard domain) to a count; the other
    fields are derived from it and from the nodes' neighbours."""

    path: str
    op_counts: dict[str, int]
    nodes: int
    convs: int  # every convolution, whatever kernel: Conv, FusedConv, QLinearConv, ConvInteger, NCHWc Conv
    qlinear_convs: int  # quantized kernels (QLinearConv, ConvInteger)
    fused_convs: int  # com.microsoft FusedConv (float, activation fused)
    nchwc_convs: int  # com.microsoft.nchwc Conv (float, blocked layout)
    nchwc_nodes: int  # all nodes of the NCHWc domain (convs, pooling, reorders)
    reorders: int  # NCHWc ReorderInput / ReorderOutput
    quantize_linear: int
    dequantize_linear: int
    qdq_near_concat_add_pool: int  # of those, the ones feeding or fed by Concat / Add / pooling / Pad
    transposes: int
    float_compute: dict[str, int] = field(default_factory=dict)  # float arithmetic ops left, by "domain:op"

    @property
    def quantized_conv_share(self) -> float:
        return self.qlinear_convs / self.convs if self.convs else 0.0

    @property
    def nchwc_conv_share(self) -> float:
        return self.nchwc_convs / self.convs if self.convs else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "quantized_conv_share": self.quantized_conv_share,
                "nchwc_conv_share": self.nchwc_conv_share}

    def format(self) -> str:
        convs = max(self.convs, 1)
        other = self.convs - self.qlinear_convs - self.nchwc_convs - self.fused_convs
        lines = [
            f"{self.path}: {self.nodes} nodes after onnxruntime's optimizations",
            f"  convolutions {self.convs}: QLinearConv/ConvInteger {self.qlinear_convs} "
            f"({100 * self.qlinear_convs / convs:.0f}%), "
            f"NCHWc {self.nchwc_convs} ({100 * self.nchwc_convs / convs:.0f}%), "
            f"FusedConv {self.fused_convs}, other {other}",
            f"  layout: NCHWc nodes {self.nchwc_nodes}, reorders {self.reorders}, Transpose {self.transposes}",
            f"  QuantizeLinear {self.quantize_linear}, DequantizeLinear {self.dequantize_linear} "
            f"({self.qdq_near_concat_add_pool} next to Concat/Add/pooling/Pad)",
        ]
        if self.float_compute:
            ranked = sorted(self.float_compute.items(), key=lambda kv: -kv[1])
            lines.append("  float compute left: " + ", ".join(f"{_short(k)} {v}" for k, v in ranked))
        return "\n".join(lines)


def census_of(model: onnx.ModelProto, path: str = "") -> GraphCensus:
    """:class:`GraphCensus` of an (already optimized) graph."""
    nodes = list(model.graph.node)
    counts = Counter(_key(n.domain, n.op_type) for n in nodes)
    producer = {out: n for n in nodes for out in n.output}
    consumers = readers_of(model)
    near = 0
    for n in nodes:
        if n.op_type not in _Q_DQ:
            continue
        around = [producer[i] for i in n.input[:1] if i in producer]
        around += [c for out in n.output for c in consumers.get(out, [])]
        near += any(m.op_type in _NEIGHBOURS for m in around)
    # A float op is one outside the quantized set whose first input is float: in a QDQ-only graph
    # onnxruntime leaves DequantizeLinear -> op -> QuantizeLinear where it found no INT8 kernel.
    float_compute: Counter[str] = Counter()
    for n in nodes:
        if n.op_type in _FLOAT_COMPUTE and n.op_type not in _QUANTIZED_OPS:
            float_compute[_key(n.domain, n.op_type)] += 1

    def total(types: set[str], domain: str | None = None) -> int:
        return sum(v for k, v in counts.items() if k.partition(":")[2] in types
                   and (domain is None or k.partition(":")[0] == domain))

    return GraphCensus(
        path=path, op_counts=dict(sorted(counts.items())), nodes=len(nodes), convs=total(_CONV_TYPES),
        qlinear_convs=total(_QUANTIZED_CONV), fused_convs=total({"FusedConv"}, MS_DOMAIN),
        nchwc_convs=total({"Conv"}, NCHWC_DOMAIN),
        nchwc_nodes=sum(v for k, v in counts.items() if k.partition(":")[0] == NCHWC_DOMAIN),
        reorders=total({"ReorderInput", "ReorderOutput"}), quantize_linear=total({"QuantizeLinear"}),
        dequantize_linear=total({"DequantizeLinear"}), qdq_near_concat_add_pool=near, transposes=total({"Transpose"}),
        float_compute=dict(sorted(float_compute.items())))


def _optimized_graph(path: Path, threads: int, folder: Path) -> tuple[Any, onnx.ModelProto]:
    optimized = folder / "optimized.onnx"
    session = _session(path, threads, optimized=optimized)
    return session, onnx.load(str(optimized), load_external_data=False)


def graph_census(onnx_path: str | Path, *, threads: int = 1) -> GraphCensus:
    """Count the nodes of the graph onnxruntime runs for ``onnx_path`` on this host (see the module
    docstring); ``ValueError`` naming the file when onnxruntime cannot load it."""
    path = Path(onnx_path)
    with tempfile.TemporaryDirectory(prefix="nasnet-census-") as tmp:
        _, model = _optimized_graph(path, threads, Path(tmp))
    return census_of(model, str(path))


# -------------------------------------------------------------------------------------------- profile


def _metadata_size(session) -> int | None:
    meta = session.get_modelmeta().custom_metadata_map
    for key in ("input_size", "min_size_test", "min_size"):
        try:
            value = json.loads(meta.get(key, "null"))
        except ValueError:
            continue
        if isinstance(value, list) and value:
            value = value[0]
        if isinstance(value, int) and value > 0:
            return value
    return None


def feed_for(session, path: Path, *, batch: int = 1, input_size: int | None = None,
             seed: int = 0) -> dict[str, np.ndarray]:
    """One input for ``session``: N x C x H x W standard-normal values for a classifier or backbone
    (a dynamic batch becomes ``batch``), C x H x W uniform 0..255 pixels for a whole detector. A
    dynamic height or width becomes ``input_size``, else the size its metadata records, else 224."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ValueError(f"{path} has {len(inputs)} inputs; only graphs with one image input can be profiled")
    shape = inputs[0].shape
    if len(shape) not in (3, 4) or not isinstance(shape[-3], int):
        raise ValueError(f"{path}: input {inputs[0].name} has shape {shape}; an image input is N x C x H x W (or "
                         "C x H x W for a detector) with a fixed channel count")
    if inputs[0].type != "tensor(float)":
        raise ValueError(f"{path}: input {inputs[0].name} is {inputs[0].type}, not a float image")
    size = input_size or _metadata_size(session) or 224
    spatial = [d if isinstance(d, int) and d > 0 else size for d in shape[-2:]]
    rng = np.random.default_rng(seed)
    if len(shape) == 3:
        x = rng.uniform(0, 255, (shape[0], *spatial))
    else:
        n = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else batch
        x = rng.standard_normal((n, shape[1], *spatial))
    return {inputs[0].name: x.astype(np.float32)}


@dataclass(frozen=True)
class OpProfile:
    """Kernel time by op type, summed over the profiled runs (the warm-up run excluded)."""

    path: str
    runs: int
    threads: int
    input_shape: tuple[int, ...]
    total_ms: float  # all kernels, per run
    op_ms: dict[str, float]  # "domain:op" -> milliseconds per run
    op_nodes: dict[str, int]  # "domain:op" -> how many nodes ran it
    conv_ms: dict[str, float] = field(default_factory=dict)  # "domain:op kind" (depthwise, 1x1, kxk) -> ms per run

    def share(self, key: str) -> float:
        return self.op_ms.get(key, 0.0) / self.total_ms if self.total_ms else 0.0

    def top(self, n: int = 10) -> list[tuple[str, float, float]]:
        """The ``n`` op types taking the most time: ``(domain:op, ms per run, share of the total)``."""
        ranked = sorted(self.op_ms.items(), key=lambda kv: -kv[1])[:n]
        return [(k, ms, self.share(k)) for k, ms in ranked]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "input_shape": list(self.input_shape),
                "shares": {k: self.share(k) for k in self.op_ms}}

    def format(self, n: int = 8) -> str:
        lines = [f"{self.path}: kernel time {self.total_ms:.2f} ms per run (input {list(self.input_shape)}, "
                 f"{self.threads} thread{'s' if self.threads > 1 else ''}, {self.runs} profiled runs)"]
        for key, ms, share in self.top(n):
            lines.append(f"  {_short(key):<28} {ms:8.3f} ms  {100 * share:5.1f}%  ({self.op_nodes[key]} nodes)")
        if self.conv_ms:
            lines.append("  convolutions by kind: " + ", ".join(
                f"{_short(k)} {ms:.2f} ms" for k, ms in sorted(self.conv_ms.items(), key=lambda kv: -kv[1])))
        return "\n".join(lines)


def conv_kind(node: onnx.NodeProto, shapes: dict[str, list[int]]) -> str:
    """``depthwise`` (grouped, one input channel per group), ``1x1`` or ``kxk`` for a convolution node
    of any domain (the weight is input 1, or input 3 for ``QLinearConv``)."""
    attrs = attribute_values(node)
    weight = node.input[3] if node.op_type == "QLinearConv" else node.input[1] if len(node.input) > 1 else ""
    dims = shapes.get(weight, [])
    if attrs.get("group", 1) > 1 and (len(dims) < 2 or dims[1] == 1):
        return "depthwise"
    kernel = list(attrs.get("kernel_shape", dims[2:]))
    return "1x1" if kernel and all(k == 1 for k in kernel) else "kxk"


def _node_events(trace: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The kernel events of every run but the first (warm-up: allocations, first-touch)."""
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in trace
                  if e.get("cat") == "Session" and e.get("name") == "model_run")
    kernels = [e for e in trace if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")]
    if len(runs) < 2:
        return kernels
    first_end = runs[0][1]
    return [e for e in kernels if e["ts"] > first_end]


def op_profile(onnx_path: str | Path, *, threads: int = 1, runs: int = 20, batch: int = 1,
               input_size: int | None = None) -> OpProfile:
    """Profile ``runs`` runs (after one warm-up) of ``onnx_path`` with onnxruntime's profiler and add
    up each node's kernel time by op type (the domain read from the optimized graph, so NCHWc and
    plain convolutions stay apart). Times are per run; the profiler's clock is wall time."""
    return _profiled(Path(onnx_path), threads, runs, batch, input_size)[0]


def _profiled(path: Path, threads: int, runs: int, batch: int,
              input_size: int | None) -> tuple[OpProfile, onnx.ModelProto]:
    """:func:`op_profile`, and the optimized graph its session ran (what :func:`census_of` counts)."""
    if runs < 1:
        raise ValueError(f"runs must be at least 1, not {runs!r}")
    with tempfile.TemporaryDirectory(prefix="nasnet-profile-") as tmp:
        session = _session(path, threads, optimized=Path(tmp) / "optimized.onnx", profile_prefix=Path(tmp) / "trace")
        optimized = onnx.load(str(Path(tmp) / "optimized.onnx"), load_external_data=False)
        graph = optimized.graph
        domains = {n.name: n.domain for n in graph.node}
        shapes = {i.name: list(i.dims) for i in graph.initializer}
        kinds = {n.name: conv_kind(n, shapes) for n in graph.node if n.op_type in _CONV_TYPES}
        feed = feed_for(session, path, batch=batch, input_size=input_size)
        try:
            for _ in range(runs + 1):
                session.run(None, feed)
        except Exception as exc:  # onnxruntime's RuntimeException: a graph that loads but cannot run
            cause = first_line(exc)
            raise ValueError(f"onnxruntime cannot run {path} on input {[list(v.shape) for v in feed.values()]}: "
                             f"{cause}") from None
        trace_file = session.end_profiling()
        trace = json.loads(Path(trace_file).read_text())
        if os.path.exists(trace_file):
            os.remove(trace_file)
    events = _node_events(trace)
    op_us: Counter[str] = Counter()
    conv_us: Counter[str] = Counter()
    nodes: dict[str, set[str]] = {}
    for e in events:
        name = e["name"][: -len("_kernel_time")]
        key = _key(domains.get(name, ""), e.get("args", {}).get("op_name", "?"))
        op_us[key] += float(e["dur"])
        nodes.setdefault(key, set()).add(name)
        if name in kinds:
            conv_us[f"{key} {kinds[name]}"] += float(e["dur"])
    counted = runs if len(events) else 1
    op_ms = {k: v / 1e3 / counted for k, v in sorted(op_us.items(), key=lambda kv: -kv[1])}
    conv_ms = {k: v / 1e3 / counted for k, v in sorted(conv_us.items(), key=lambda kv: -kv[1])}
    shape = next(iter(feed.values())).shape
    profile = OpProfile(str(path), runs, threads, tuple(int(d) for d in shape), sum(op_ms.values()), op_ms,
                        {k: len(v) for k, v in nodes.items()}, conv_ms)
    return profile, optimized


# -------------------------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class ProfileSummary:
    """:class:`GraphCensus` and :class:`OpProfile` of one file."""

    census: GraphCensus
    profile: OpProfile

    def as_dict(self) -> dict[str, Any]:
        return {"census": self.census.as_dict(), "profile": self.profile.as_dict()}

    def format(self) -> str:
        return self.census.format() + "\n" + self.profile.format()


def profile_summary(onnx_path: str | Path, *, threads: int = 1, runs: int = 20) -> ProfileSummary:
    """Both views of ``onnx_path`` (:func:`graph_census`, :func:`op_profile`), from one session: the
    census counts the optimized graph the profiled session ran."""
    path = Path(onnx_path)
    profile, optimized = _profiled(path, threads, runs, 1, None)
    return ProfileSummary(census_of(optimized, str(path)), profile)
