"""Channel alignment: pad an FP32 ONNX graph's channel counts to the runtime's SIMD block with zeros.

onnxruntime's fast x86 convolution path (the NCHWc layout of ``com.microsoft.nchwc``: blocked
direct, pointwise and depthwise kernels, fused pooling) works on blocks of channels: 16 with
AVX-512F, 8 with AVX2 (MLAS's ``MlasNchwcGetBlockSize``). NASNet-A mobile's widths 11, 22, 44 and
88 are not multiples of the block, so part of its convolutions run in plain NCHW, with layout
reorders around them, and the blocked kernels that do run carry partly empty blocks.

:func:`align_channels` rewrites a constant-folded graph (BatchNorm already folded into the
convolutions) so that every convolution writes a multiple of the block: each one gets zero
filters and zero bias up to the multiple, each reader of a padded tensor zero weights at the
padded positions, and a depthwise convolution one zero group per padded channel. The padded
channels therefore hold exact zeros (or, after an activation such as a sigmoid, a finite constant
that every reader weighs by zero), and every output equals the unpadded graph's up to float
rounding; the exports verify the aligned graph against the unpadded PyTorch model anyway.

How: each 4-D tensor with a known channel count gets a *layout*: its padded count and where its
real channels sit. Tensors joined by channel-wise ops (activations, pooling, spatial pads and
slices, BatchNorm, broadcast arithmetic, elementwise Add/Mul of two tensors) must share one, so
they form classes (a union-find). A class's layout is chosen once: the layout one of its fixed
producers gives it (a ``Concat`` of padded pieces interleaves the padding; a graph input or the
output of an op the pass does not understand has only real channels), when that one is a
multiple of the block, otherwise real channels first then zeros; its free producers (ordinary
convolutions, whose filters can be placed anywhere) then write that layout. A fixed producer
with another layout is rearranged (one ``Gather``) where it joins. Any op the pass does not
understand (reshapes, matrix products, softmax over channels, RoIAlign, ...), and every graph
output, reads the real channels only (a ``Slice`` or ``Gather``), so the pass is safe on whole
detectors and changes no output's shape; ``Shape`` of a padded tensor reports the real count.
Dynamic-size graphs compute their pad amounts in the graph: :func:`_known_values` proves, element
by element, that a computed ``Pad`` leaves the batch and channel axes alone.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .graph_edits import attribute_values, drop_unused_initializers, graph_constants, set_attribute, subgraph_reads

__all__ = ["ALIGNMENTS", "ALIGNMENT_KEY", "DEFAULT_ALIGNMENT", "AlignmentReport", "align_channels",
           "alignment_metadata", "auto_alignment", "conv_cost", "parse_alignment", "resolve_alignment"]

logger = logging.getLogger(__name__)

#: What ``--align-channels`` accepts: a block size, ``none``, or ``auto`` (the host's block).
ALIGNMENTS = ("auto", "none", "8", "16")
#: ``auto``: the block onnxruntime's NCHWc kernels use on the exporting host (BENCHMARKS.md has the numbers).
DEFAULT_ALIGNMENT = "auto"
#: Metadata key recording the alignment of a graph ("16", "8" or "none").
ALIGNMENT_KEY = "channel_alignment"

# Ops that act on each channel alone and keep the channel count (input 0 -> output 0).
_CHANNELWISE = {"Relu", "LeakyRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Clip",
                "Identity", "Neg", "Abs", "Softplus", "Softsign", "Erf", "Gelu", "Mish", "MaxPool", "AveragePool",
                "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "Dropout"}
# Elementwise ops with broadcasting: two tensors of the same channel count share a layout.
_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "PRelu"}
# The value a per-channel constant operand takes at a padded channel (keeps a zero channel zero).
_NEUTRAL = {"Add": 0.0, "Sub": 0.0, "Mul": 0.0, "Div": 1.0, "Max": 0.0, "Min": 0.0, "Sum": 0.0, "PRelu": 0.0}
_REDUCE = {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL2", "ReduceL1"}
_FLOAT = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}


def parse_alignment(value: int | str | None) -> int | str:
    """``value`` as the library takes it: ``"auto"``, ``"none"``, 8 or 16 (ints or their strings;
    None means ``"none"``); anything else is a ``ValueError`` naming the accepted values."""
    if value is None:
        return "none"
    text = str(value).strip().lower()
    if isinstance(value, bool) or text not in ALIGNMENTS:
        raise ValueError(f"align_channels must be one of {', '.join(ALIGNMENTS)}, not {value!r}")
    return int(text) if text.isdigit() else text


def auto_alignment() -> int | None:
    """The NCHWc block of onnxruntime's x86 kernels on this host: 16 with AVX-512F, 8 with AVX2,
    None elsewhere (no NCHWc path there, so padding would only add work)."""
    from nasnet_backbones.host import cpu_description

    isa = set(cpu_description()["isa"])
    return 16 if "avx512f" in isa else 8 if "avx2" in isa else None


def resolve_alignment(value: int | str | None) -> int | None:
    """The block size an ``align_channels`` argument means here (None: leave the graph as it is)."""
    value = parse_alignment(value)
    if value == "auto":
        return auto_alignment()
    return None if value == "none" else int(value)


@dataclass
class AlignmentReport:
    """What :func:`align_channels` did to a graph."""

    multiple: int | None
    convs_padded: int = 0  # convolutions whose output (or, depthwise, group) count grew
    channels_added: int = 0  # zero output channels added, summed over the convolutions
    realigns: int = 0  # Gather/Slice/Pad (and Shape fix-up) nodes inserted
    mult_adds_before: int | None = None  # convolutions and Gemm per image, where the image size is fixed
    mult_adds_after: int | None = None
    ops_kept_real: dict[str, int] = field(default_factory=dict)  # op types given the real channels only

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def alignment_metadata(report: AlignmentReport | None) -> dict[str, str]:
    """The metadata entries recording an alignment: ``channel_alignment`` ("16", "8" or "none"),
    and for an aligned graph how many channels were added to how many convolutions (and the
    mult-adds ratio, after / before, where the image size is fixed)."""
    if report is None or report.multiple is None:
        return {ALIGNMENT_KEY: "none"}
    meta = {ALIGNMENT_KEY: str(report.multiple), "channel_alignment_convs_padded": str(report.convs_padded),
            "channel_alignment_channels_added": str(report.channels_added)}
    if report.mult_adds_before and report.mult_adds_after:
        meta["channel_alignment_mult_adds_ratio"] = f"{report.mult_adds_after / report.mult_adds_before:.4f}"
    return meta


# -- layouts -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Layout:
    """A padded channel dimension: ``size`` channels, the real channel ``c`` at ``positions[c]``."""

    size: int
    positions: tuple[int, ...]

    @staticmethod
    def real(channels: int) -> "_Layout":
        return _Layout(channels, tuple(range(channels)))

    @property
    def is_real(self) -> bool:
        return self.size == len(self.positions)

    def padding(self) -> list[int]:
        used = set(self.positions)
        return [i for i in range(self.size) if i not in used]


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


def _tensor_info(model: onnx.ModelProto) -> dict[str, tuple[int, list[int | None], int]]:
    """Every value's (element type, shape with None for dynamic dims, rank) after shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    info = {}
    for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        t = v.type.tensor_type
        if v.type.HasField("tensor_type") and t.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
            info[v.name] = (t.elem_type, dims, len(dims))
    return info


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers, ``Constant`` values and ``Identity`` copies of them (the TorchScript exporter
    passes shared parameters through ``Identity``), by name."""
    consts = graph_constants(model)
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in consts:
            consts[node.output[0]] = consts[node.input[0]]
    return consts


def _int_div(a: Any, b: Any) -> Any:
    if isinstance(a, (float, np.floating)) or isinstance(b, (float, np.floating)):
        return a / b
    q = abs(int(a)) // abs(int(b))  # ONNX integer Div truncates toward zero
    return q if (a >= 0) == (b > 0) else -q


_ARITHMETIC = {"Add": lambda a, b: a + b, "Sub": lambda a, b: a - b, "Mul": lambda a, b: a * b, "Div": _int_div,
               "Max": max, "Min": min}


def _known_values(model: onnx.ModelProto, info: dict, consts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Small tensors the graph computes (pad amounts, axes, shapes) with each element known or
    ``None``. A dynamic-size graph's shape arithmetic still has constant entries (a ``Pad``'s batch
    and channel pads are 0 at every size), which this proves element by element, with exact rules
    for the ops shape arithmetic uses; anything else stays unknown."""
    known: dict[str, np.ndarray] = {name: np.asarray(v, dtype=object) for name, v in consts.items() if v.size <= 64}

    def elementwise(fn, *arrays):
        return np.frompyfunc(lambda *xs: None if any(x is None for x in xs) else fn(*xs), len(arrays), 1)(*arrays)

    def full(arg: np.ndarray | None) -> bool:
        return arg is not None and all(v is not None for v in arg.ravel())

    for node in model.graph.node:
        op, ins, attrs = node.op_type, list(node.input), attribute_values(node)
        args = [known.get(n) if n else None for n in ins]
        for pos, name in enumerate(ins):  # a computed tensor of a known small shape: its elements unknown
            dims = info.get(name, (None, None, None))[1] if name else None
            if args[pos] is None and dims is not None and None not in dims and int(np.prod(dims)) <= 64:
                args[pos] = np.full(dims, None, dtype=object)
        out: np.ndarray | None = None
        try:
            if op == "Shape" and ins[0] in info:
                dims = info[ins[0]][1]
                start, end = int(attrs.get("start", 0)), int(attrs.get("end", len(dims)))
                out = np.array(dims, dtype=object)[start:end]
            elif args and args[0] is not None:
                if op in ("Identity", "Cast"):
                    out = args[0]
                elif op == "Concat" and all(a is not None for a in args):
                    out = np.concatenate([np.atleast_1d(a) for a in args], axis=int(attrs.get("axis", 0)))
                elif op == "Reshape" and full(args[1]):
                    out = args[0].reshape([int(v) if v != 0 else args[0].shape[i] for i, v in enumerate(args[1].ravel())])
                elif op == "Unsqueeze":
                    axes = attrs.get("axes") if "axes" in attrs else (args[1].ravel() if full(args[1]) else None)
                    if axes is not None:
                        out = args[0]
                        for axis in sorted(int(a) % (args[0].ndim + len(axes)) for a in axes):
                            out = np.expand_dims(out, axis)
                elif op == "Squeeze" and "axes" not in attrs and (len(ins) < 2 or full(args[1])):
                    out = np.squeeze(args[0], axis=tuple(int(a) for a in args[1].ravel()) if len(ins) > 1 else None)
                elif op == "Transpose":
                    out = np.transpose(args[0], attrs.get("perm"))
                elif op == "Gather" and full(args[1]):
                    out = np.take(args[0], args[1].astype(np.int64), axis=int(attrs.get("axis", 0)))
                elif op == "Slice" and all(full(a) for a in args[1:]):
                    index = [slice(None)] * args[0].ndim
                    axes = args[3].ravel() if len(args) > 3 else range(len(args[1]))
                    steps = args[4].ravel() if len(args) > 4 else [1] * len(args[1])
                    for axis, start, end, step in zip(axes, args[1].ravel(), args[2].ravel(), steps):
                        index[int(axis)] = slice(int(start), int(end), int(step))
                    out = args[0][tuple(index)]
                elif op in _ARITHMETIC and len(args) == 2 and args[1] is not None:
                    out = elementwise(_ARITHMETIC[op], args[0], args[1])
                elif op == "Mod" and args[1] is not None and not attrs.get("fmod", 0):
                    out = elementwise(lambda a, b: a % b, args[0], args[1])
                elif op == "ConstantOfShape" and full(args[0]) and int(np.prod(args[0].astype(np.int64))) <= 64:
                    value = numpy_helper.to_array(attrs["value"]).ravel()[0] if "value" in attrs else 0.0
                    out = np.full([int(v) for v in args[0].ravel()], value.item() if hasattr(value, "item") else value,
                                  dtype=object)
                elif op == "Neg":
                    out = elementwise(lambda a: -a, args[0])
        except (ValueError, IndexError, TypeError, ZeroDivisionError):
            out = None
        if out is not None and node.output:
            known[node.output[0]] = np.asarray(out, dtype=object)
    return known


# -- the pass ------------------------------------------------------------------------------------

class _Aligner:
    """One alignment of one graph: :meth:`analyse` (classes and layouts), then :meth:`rewrite`."""

    def __init__(self, model: onnx.ModelProto, multiple: int) -> None:
        self.model, self.graph, self.multiple = model, model.graph, multiple
        self.consts = _constants(model)
        self.info = _tensor_info(model)
        self.known = _known_values(model, self.info, self.consts)
        self.derived: dict[str, int] = {}  # channel counts shape inference lost (after a computed Pad)
        self.broadcast: dict[int, list[int]] = {}  # node -> inputs it broadcasts over the channels
        self.uf = _UnionFind()
        self.kind: dict[int, str] = {}  # node index -> how the pass treats it
        self.report = AlignmentReport(multiple)
        self.names: set[str] = {n for node in self.graph.node for n in (*node.input, *node.output)}
        self.names |= {i.name for i in self.graph.initializer} | {i.name for i in self.graph.input}

    # Tensors the pass tracks: float, rank 4, a known channel count, computed (not constant).
    def channels(self, name: str) -> int | None:
        if not name or name in self.consts:
            return None
        if name in self.derived:
            return self.derived[name]
        if name not in self.info:
            return None
        elem, dims, rank = self.info[name]
        if rank != 4 or elem not in _FLOAT or dims[1] is None:
            return None
        return dims[1]

    def fresh(self, base: str) -> str:
        name, i = base, 0
        while name in self.names:
            i += 1
            name = f"{base}_{i}"
        self.names.add(name)
        return name

    def add_const(self, base: str, value: np.ndarray) -> str:
        name = self.fresh(base)
        self.graph.initializer.append(numpy_helper.from_array(value, name))
        self.consts[name] = value
        return name

    # -- classify --------------------------------------------------------------------------------

    @staticmethod
    def _channel_free_axes(axes: Iterable[Any], rank: int) -> bool:
        axes = list(axes)
        return all(a is not None and int(a) % rank not in (0, 1) for a in axes)

    def _derivable(self, out: str, first_input: str) -> bool:
        """Whether shape inference left ``out``'s channel count open (a rank-4 float or an unknown
        shape) where the op's first input is a tracked tensor."""
        if out in self.consts or (first_input and self.channels(first_input) is None):
            return False
        elem, dims, rank = self.info.get(out, (None, None, None))
        return (elem is None or elem in _FLOAT) and (rank is None or (rank == 4 and dims[1] is None))

    def classify(self, index: int, node: onnx.NodeProto) -> str:
        """How the pass treats ``node``: conv, depthwise, union (channel-wise), concat (on the
        channels), shape, passive (reads no tracked tensor) or unknown (reads real channels)."""
        op, ins, outs = node.op_type, list(node.input), list(node.output)
        if node.domain not in ("", "ai.onnx"):
            return "unknown"
        in_c = self.channels(ins[0]) if ins else None
        out_c = self.channels(outs[0]) if outs else None
        derivable = bool(outs) and out_c is None and self._derivable(outs[0], ins[0] if ins else "")
        if derivable:  # what shape inference could not say, this op keeps (checked below, op by op)
            out_c = in_c
        attrs = attribute_values(node)
        single = len([o for o in outs if o]) == 1
        if op == "Conv":
            w = self.consts.get(ins[1])
            bias_ok = len(ins) < 3 or not ins[2] or ins[2] in self.consts
            if w is None or w.ndim != 4 or not bias_ok:
                return "unknown"
            if derivable:
                out_c = w.shape[0]
            group = int(attrs.get("group", 1))
            if group == 1:
                return "conv"
            if w.shape[1] == 1 and in_c == group and out_c is not None and out_c % group == 0:
                return "depthwise"
            return "unknown"
        if op == "Shape":
            return "shape" if in_c is not None else "passive"
        if op == "Concat":
            axis = int(attrs.get("axis", 0))
            counts = [self.channels(n) for n in ins]
            if all(c is None for c in counts):
                return "passive"
            if any(c is None for c in counts):
                return "unknown"
            if derivable:
                out_c = sum(counts) if axis % 4 == 1 else in_c
            if out_c is None:
                return "unknown"
            if axis % 4 == 1:
                return "concat"
            return "union" if all(c == out_c for c in counts) and axis % 4 != 0 else "unknown"
        if op in _ELEMENTWISE and single:
            counts = [self.channels(n) for n in ins]
            if all(c is None for c in counts):
                return "passive"
            if derivable:
                out_c = max(c for c in counts if c is not None)
            if out_c is None:
                return "unknown"
            broadcast = []
            for pos, (name, c) in enumerate(zip(ins, counts)):
                if c == out_c and not (op in ("Div", "PRelu") and pos == 1):  # 0 / 0 at a padded channel
                    continue
                if c == 1 and out_c > 1:  # a computed tensor broadcast over the channels: read as it is
                    broadcast.append(pos)
                    continue
                if c is not None:
                    return "unknown"
                shape = self.consts[name].shape if name in self.consts else (self.info.get(name) or (0, None, 0))[1]
                if shape is None:
                    return "unknown"
                channel = shape[len(shape) - 3] if len(shape) >= 3 else 1
                if channel != 1 and not (channel == out_c and name in self.consts):
                    return "unknown"  # a computed tensor of those channels that the pass does not track
            if all(pos in broadcast or c is None for pos, c in enumerate(counts)):
                return "unknown"
            if broadcast:
                self.broadcast[index] = broadcast
            return "union"
        if in_c is None:
            return "passive" if all(self.channels(n) is None for n in ins) else "unknown"
        if out_c != in_c or not single:
            return "unknown"
        if op in _CHANNELWISE:
            return "union"
        if op in ("BatchNormalization", "InstanceNormalization"):
            return "union" if all(n in self.consts for n in ins[1:]) else "unknown"
        if op == "Pad":
            mode = attrs.get("mode", b"constant")
            value_ok = len(ins) < 3 or not ins[2] or ins[2] in self.consts
            if not value_ok or mode not in (b"constant", b"reflect", b"edge"):
                return "unknown"
            if len(ins) > 3 and ins[3]:
                axes = self.known.get(ins[3])
                return "union" if axes is not None and self._channel_free_axes(axes.ravel(), 4) else "unknown"
            pads = self.known.get(ins[1]) if len(ins) > 1 and ins[1] else None
            if pads is not None and pads.shape == (8,) and all(v is not None and v == 0 for v in pads[[0, 1, 4, 5]]):
                return "union"
            return "unknown"
        if op == "Slice":
            axes = self.known.get(ins[3]) if len(ins) > 3 and ins[3] else None
            return "union" if axes is not None and self._channel_free_axes(axes.ravel(), 4) else "unknown"
        if op in ("Resize", "Upsample"):
            scale_name = ins[2] if op == "Resize" and len(ins) > 2 else ins[1] if op == "Upsample" else ""
            scales = self.known.get(scale_name) if scale_name else None
            sizes_given = op == "Resize" and len(ins) > 3 and ins[3]
            if scales is not None and scales.size == 4 and scales[0] == 1 and scales[1] == 1 and not sizes_given:
                return "union"
            return "unknown"
        if op in _REDUCE and attrs.get("keepdims", 1):
            axes = attrs.get("axes")
            if axes is None and len(ins) > 1 and ins[1]:
                axes = self.known.get(ins[1])
            if axes is not None and self._channel_free_axes(np.ravel(axes), 4):
                return "union"
        return "unknown"

    # -- the classes and their layouts -------------------------------------------------------------

    def _derived_count(self, node: onnx.NodeProto, kind: str) -> int:
        if kind in ("conv", "depthwise"):
            return int(self.consts[node.input[1]].shape[0])
        counts = [self.channels(n) for n in node.input if self.channels(n) is not None]
        return sum(counts) if kind == "concat" else max(counts)

    def analyse(self) -> None:
        nodes = self.graph.node
        self.producer: dict[str, int] = {}
        readers: dict[str, list[int]] = {}
        for i, node in enumerate(nodes):
            for o in node.output:
                self.producer[o] = i
            kind = self.kind[i] = self.classify(i, node)
            if kind in ("union", "conv", "depthwise", "concat") and node.output[0] \
                    and self.channels(node.output[0]) is None and self._derivable(node.output[0], node.input[0]):
                self.derived[node.output[0]] = self._derived_count(node, kind)
            if kind == "union":
                skip = {node.input[p] for p in self.broadcast.get(i, [])}
                tracked = [n for n in (*node.input, *node.output) if self.channels(n) is not None and n not in skip]
                for n in tracked[1:]:
                    self.uf.union(tracked[0], n)
            elif kind == "depthwise" and self.consts[node.input[1]].shape[0] == self.channels(node.input[0]):
                self.uf.union(node.input[0], node.output[0])  # one filter per channel: a channel-wise op
            for name in node.input:
                readers.setdefault(name, []).append(i)
        self.readers = {name: [nodes[i] for i in found] for name, found in readers.items()}
        for node in nodes:  # subgraph reads make a Shape's value unknown to the check above
            for name in subgraph_reads(node):
                self.readers.setdefault(name, []).append(node)
        tracked = {n for node in nodes for n in (*node.input, *node.output) if self.channels(n) is not None}
        tracked |= {i.name for i in self.graph.input if self.channels(i.name) is not None}
        # Subgraphs (If, Loop, Scan) may read outer tensors by name: those keep their real channels.
        inner = {name for node in nodes for name in subgraph_reads(node)}
        self.forced_real = {self.uf.find(n) for n in tracked & inner}
        self.members: dict[str, list[str]] = {}
        for name in sorted(tracked):
            self.members.setdefault(self.uf.find(name), []).append(name)
        # Sources: tracked tensors not produced by a channel-wise op. Free ones are ordinary convolutions.
        self.sources: dict[str, list[str]] = {}
        self.free: Counter = Counter()
        for name in tracked:
            index = self.producer.get(name)
            kind = self.kind.get(index) if index is not None else "input"
            if kind == "union" or (kind == "depthwise" and self.uf.find(name) == self.uf.find(nodes[index].input[0])):
                continue
            if kind == "conv":
                self.free[self.uf.find(name)] += 1
            else:
                self.sources.setdefault(self.uf.find(name), []).append(name)
        order = {name: i for i, node in enumerate(nodes) for name in node.output}
        for names in self.sources.values():
            names.sort(key=lambda n: order.get(n, -1))
        # A class that only reshapes, matrix products and graph outputs read keeps its real
        # channels: padding gains nothing there (a head's 3-channel objectness convolution, say).
        self.worth: set[str] = set()
        for name in tracked:
            for r in readers.get(name, []):
                broadcast = {nodes[r].input[p] for p in self.broadcast.get(r, [])}
                if self.kind[r] not in ("unknown", "passive", "shape") and name not in broadcast:
                    self.worth.add(self.uf.find(name))
        self.layouts: dict[str, _Layout] = {}
        self.natural: dict[str, _Layout] = {}
        self._resolve_all()

    def natural_layout(self, name: str) -> _Layout | None:
        """The layout a fixed source gives ``name``, or None while its inputs' layouts are unknown."""
        if name in self.natural:
            return self.natural[name]
        index = self.producer.get(name)
        node = self.graph.node[index] if index is not None else None
        kind = self.kind.get(index) if index is not None else "input"
        if kind == "concat":
            parts = [self.layouts.get(self.uf.find(n)) for n in node.input]
            if any(p is None for p in parts):
                return None
            offset, positions = 0, []
            for p in parts:
                positions += [offset + q for q in p.positions]
                offset += p.size
            layout = _Layout(offset, tuple(positions))
        elif kind == "depthwise":
            inner = self.layouts.get(self.uf.find(node.input[0]))
            if inner is None:
                return None
            mult = self.consts[node.input[1]].shape[0] // self.channels(node.input[0])
            layout = _Layout(inner.size * mult, tuple(p * mult + k for p in inner.positions for k in range(mult)))
        else:
            layout = _Layout.real(self.channels(name))
        self.natural[name] = layout
        return layout

    def _resolve_all(self) -> None:
        pending = set(self.members)
        while pending:
            progressed = False
            for root in sorted(pending):
                naturals = [self.natural_layout(n) for n in self.sources.get(root, [])]
                if any(n is None for n in naturals):
                    continue
                c = self.channels(root)
                if root in self.forced_real:
                    layout = _Layout.real(c)
                elif not self.free[root]:
                    layout = naturals[0]
                elif root not in self.worth:
                    layout = _Layout.real(c)
                else:
                    aligned = [n for n in naturals if n.size % self.multiple == 0]
                    if aligned:
                        layout = Counter(aligned).most_common(1)[0][0]
                    else:
                        layout = _Layout(_round_up(c, self.multiple), tuple(range(c)))
                self.layouts[root] = layout
                pending.discard(root)
                progressed = True
            if not progressed:  # a class never depends on itself in a valid (acyclic) graph
                raise RuntimeError("align_channels: cyclic layout dependency")

    def layout(self, name: str) -> _Layout | None:
        return self.layouts.get(self.uf.find(name)) if self.channels(name) is not None else None

    # -- rewriting -------------------------------------------------------------------------------

    def realign_nodes(self, src: str, a: _Layout, b: _Layout, dst: str) -> list[onnx.NodeProto]:
        """Nodes computing ``dst`` (layout ``b``) from ``src`` (layout ``a``, the same real channels)."""
        self.report.realigns += 1
        if b.is_real and a.positions:
            first = a.positions[0]
            if a.positions == tuple(range(first, first + len(a.positions))):  # a contiguous run: one Slice
                starts = self.add_const(f"{dst}_start", np.array([first], np.int64))
                ends = self.add_const(f"{dst}_end", np.array([first + len(a.positions)], np.int64))
                axes = self.add_const(f"{dst}_axis", np.array([1], np.int64))
                return [helper.make_node("Slice", [src, starts, ends, axes], [dst], name=self.fresh(f"{dst}_slice"))]
        if a.is_real and b.positions == tuple(range(len(b.positions))):  # zeros after the real channels
            pads = self.add_const(f"{dst}_pads", np.array([0, 0, 0, 0, 0, b.size - a.size, 0, 0], np.int64))
            return [helper.make_node("Pad", [src, pads], [dst], name=self.fresh(f"{dst}_pad"), mode="constant")]
        nodes, spare = [], a.padding()
        if b.padding() and not spare:  # a zero channel to gather the padding from
            padded = self.fresh(f"{src}_zero_channel")
            pads = self.add_const(f"{padded}_pads", np.array([0, 0, 0, 0, 0, 1, 0, 0], np.int64))
            nodes.append(helper.make_node("Pad", [src, pads], [padded], name=self.fresh(f"{padded}_pad"), mode="constant"))
            src, spare = padded, [a.size]
        indices = np.full(b.size, spare[0] if spare else 0, np.int64)
        for c, p in enumerate(b.positions):
            indices[p] = a.positions[c]
        idx = self.add_const(f"{dst}_indices", indices)
        nodes.append(helper.make_node("Gather", [src, idx], [dst], name=self.fresh(f"{dst}_gather"), axis=1))
        return nodes

    def rewrite(self) -> None:
        nodes = list(self.graph.node)
        real_copies: dict[str, str] = {}
        before: dict[int, list[onnx.NodeProto]] = {}
        after: dict[int, list[onnx.NodeProto]] = {}
        for i, node in enumerate(nodes):
            kind = self.kind[i]
            if kind == "conv":
                self._rewrite_conv(node)
            elif kind == "depthwise":
                self._rewrite_depthwise(node)
            elif kind == "union":
                self._rewrite_union(node)
            elif kind == "shape":
                after[i] = self._rewrite_shape(node)
            real_inputs = range(len(node.input)) if kind == "unknown" else self.broadcast.get(i, [])
            for pos in real_inputs:
                name = node.input[pos]
                lay = self.layout(name)
                if lay is None or lay.is_real:
                    continue
                if name not in real_copies:
                    real_copies[name] = self.fresh(f"{name}_real")
                    before.setdefault(i, []).extend(
                        self.realign_nodes(name, lay, _Layout.real(len(lay.positions)), real_copies[name]))
                node.input[pos] = real_copies[name]
                self.report.ops_kept_real[node.op_type] = self.report.ops_kept_real.get(node.op_type, 0) + 1
            # A fixed source whose layout is not its class's is rearranged right after it.
            for pos, name in enumerate(node.output):
                lay = self.layout(name)
                if lay is None or kind in ("union", "conv") or (kind == "depthwise" and name not in self.natural):
                    continue
                natural = self.natural.get(name) or _Layout.real(self.channels(name))
                if natural != lay:
                    inner = self.fresh(f"{name}_natural")
                    node.output[pos] = inner
                    after.setdefault(i, []).extend(self.realign_nodes(inner, natural, lay, name))
        head = []  # graph inputs in a padded class
        for inp in self.graph.input:
            lay = self.layout(inp.name)
            if lay is not None and lay != _Layout.real(self.channels(inp.name)):
                inner = self.fresh(f"{inp.name}_aligned")
                for node in nodes:
                    for pos, name in enumerate(node.input):
                        if name == inp.name:
                            node.input[pos] = inner
                head += self.realign_nodes(inp.name, _Layout.real(self.channels(inp.name)), lay, inner)
        ordered = list(head)
        for i, node in enumerate(nodes):
            ordered += before.get(i, []) + [node] + after.get(i, [])
        for out in self.graph.output:  # graph outputs keep their real channels
            lay = self.layout(out.name)
            if lay is None or lay.is_real:
                continue
            inner = self.fresh(f"{out.name}_aligned")
            for node in ordered:
                for pos, name in enumerate(node.input):
                    if name == out.name:
                        node.input[pos] = inner
                for pos, name in enumerate(node.output):
                    if name == out.name:
                        node.output[pos] = inner
            ordered += self.realign_nodes(inner, lay, _Layout.real(len(lay.positions)), out.name)
        del self.graph.node[:]
        self.graph.node.extend(ordered)
        del self.graph.value_info[:]  # channel counts changed; shape inference recomputes them

    def _replace_const(self, node: onnx.NodeProto, pos: int, value: np.ndarray, base: str) -> None:
        node.input[pos] = self.add_const(base, value.astype(self.consts[node.input[pos]].dtype))

    def _rewrite_conv(self, node: onnx.NodeProto) -> None:
        w = self.consts[node.input[1]]
        in_lay, out_lay = self.layout(node.input[0]), self.layout(node.output[0])
        cout, cin = w.shape[:2]
        if (not in_lay or in_lay.is_real) and (not out_lay or out_lay.is_real):
            return
        rows = list(out_lay.positions) if out_lay else list(range(cout))
        cols = list(in_lay.positions) if in_lay else list(range(cin))
        out_size = out_lay.size if out_lay else cout
        new = np.zeros((out_size, in_lay.size if in_lay else cin, *w.shape[2:]), w.dtype)
        new[np.ix_(rows, cols)] = w
        self._replace_const(node, 1, new, f"{node.input[1]}_aligned")
        if len(node.input) > 2 and node.input[2]:
            bias = np.zeros(out_size, self.consts[node.input[2]].dtype)
            bias[rows] = self.consts[node.input[2]]
            self._replace_const(node, 2, bias, f"{node.input[2]}_aligned")
        if out_size > cout:
            self.report.convs_padded += 1
            self.report.channels_added += out_size - cout

    def _rewrite_depthwise(self, node: onnx.NodeProto) -> None:
        w = self.consts[node.input[1]]
        c = self.channels(node.input[0])
        in_lay = self.layout(node.input[0])
        if in_lay.is_real:
            return
        mult = w.shape[0] // c
        rows = [p * mult + k for p in in_lay.positions for k in range(mult)]
        new = np.zeros((in_lay.size * mult, *w.shape[1:]), w.dtype)
        new[rows] = w
        self._replace_const(node, 1, new, f"{node.input[1]}_aligned")
        if len(node.input) > 2 and node.input[2]:
            bias = np.zeros(in_lay.size * mult, self.consts[node.input[2]].dtype)
            bias[rows] = self.consts[node.input[2]]
            self._replace_const(node, 2, bias, f"{node.input[2]}_aligned")
        set_attribute(node, "group", in_lay.size)
        self.report.convs_padded += 1
        self.report.channels_added += (in_lay.size - c) * mult

    def _rewrite_union(self, node: onnx.NodeProto) -> None:
        out = next((o for o in node.output if self.channels(o) is not None), None)
        lay = self.layout(out) if out else None
        if lay is None or lay.is_real:
            return
        c = len(lay.positions)
        if node.op_type in ("BatchNormalization", "InstanceNormalization"):
            fills = [0.0, 0.0, 0.0, 1.0]  # scale, bias, mean, var: a zero channel stays zero
            for pos in range(1, len(node.input)):
                value = self.consts[node.input[pos]]
                new = np.full(lay.size, fills[pos - 1], value.dtype)
                new[list(lay.positions)] = value
                self._replace_const(node, pos, new, f"{node.input[pos]}_aligned")
            return
        if node.op_type in _ELEMENTWISE:
            for pos, name in enumerate(node.input):
                value = self.consts.get(name)
                if value is None or value.ndim < 3 or value.shape[value.ndim - 3] != c:
                    continue
                axis = value.ndim - 3
                shape = list(value.shape)
                shape[axis] = lay.size
                new = np.full(shape, _NEUTRAL[node.op_type], value.dtype)
                index = [slice(None)] * value.ndim
                index[axis] = list(lay.positions)
                new[tuple(index)] = value
                self._replace_const(node, pos, new, f"{name}_aligned")

    def _rewrite_shape(self, node: onnx.NodeProto) -> list[onnx.NodeProto]:
        """``Shape`` of a padded tensor: the real channel count put back in (two int ops)."""
        lay = self.layout(node.input[0])
        if lay is None or lay.is_real:
            return []
        attrs = attribute_values(node)
        start, end = (min(max(v + 4 if v < 0 else v, 0), 4)
                      for v in (int(attrs.get("start", 0)), int(attrs.get("end", 4))))
        if not start <= 1 < end:
            return []
        channel = 1 - start
        reads = self.readers.get(node.output[0], [])
        if reads and node.output[0] not in {o.name for o in self.graph.output} and all(
                r.op_type == "Gather" and r.input[0] == node.output[0] and not attribute_values(r).get("axis", 0)
                and r.input[1] in self.known and all(v is not None and int(v) % (end - start) != channel
                                                     for v in self.known[r.input[1]].ravel())
                for r in reads):
            return []  # only the batch and spatial sizes are read
        mask, fix = np.ones(end - start, np.int64), np.zeros(end - start, np.int64)
        mask[1 - start], fix[1 - start] = 0, len(lay.positions)
        out = node.output[0]
        padded, masked = self.fresh(f"{out}_padded"), self.fresh(f"{out}_masked")
        node.output[0] = padded
        self.report.realigns += 1
        return [helper.make_node("Mul", [padded, self.add_const(f"{out}_mask", mask)], [masked],
                                 name=self.fresh(f"{out}_mul")),
                helper.make_node("Add", [masked, self.add_const(f"{out}_fix", fix)], [out], name=self.fresh(f"{out}_add"))]


def conv_cost(model: onnx.ModelProto) -> int | None:
    """Multiply-adds per image of the graph's Conv and Gemm/MatMul nodes (a dynamic batch counts
    as 1); None when a convolution's output size is not fixed (a dynamic image size)."""
    info = _tensor_info(model)
    consts = _constants(model)
    total = 0
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        w, out = consts.get(node.input[1]), info.get(node.output[0])
        dims = [1 if i == 0 and d is None else d for i, d in enumerate(out[1])] if out else None
        if w is None or dims is None or None in dims:
            if node.op_type == "Conv":
                return None
            continue
        if node.op_type == "Conv":
            total += int(np.prod(dims)) * int(np.prod(w.shape[1:]))
        else:
            total += int(np.prod(dims)) * int(w.shape[1] if attribute_values(node).get("transB", 0) else w.shape[0])
    return total


def align_channels(model: onnx.ModelProto, multiple: int | str | None) -> AlignmentReport:
    """Pad ``model``'s channel counts to ``multiple`` (8 or 16; ``"auto"``: the host's block,
    :func:`auto_alignment`; None or ``"none"``: nothing), in place; see the module docstring.

    The graph should be constant-folded first (weights as initializers, BatchNorm folded), as the
    exports' graphs are. Initializers the rewrite replaced are dropped. Returns what was done,
    including the multiply-adds before and after where the image size is fixed."""
    block = resolve_alignment(multiple)
    if block is None:
        return AlignmentReport(None)
    before = conv_cost(model)
    aligner = _Aligner(model, block)
    aligner.analyse()
    aligner.rewrite()
    drop_unused_initializers(model)
    report = aligner.report
    report.mult_adds_before, report.mult_adds_after = before, conv_cost(model)
    logger.debug("channel alignment to %d: %d convolutions padded, %d channels added, %d layout changes",
                block, report.convs_padded, report.channels_added, report.realigns)
    return report
