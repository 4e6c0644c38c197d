"""Rewrites of a QDQ graph's neighbourhood that let onnxruntime's INT8 kernels run where its
quantized fallbacks would not pay (found with :mod:`export.ort_profile` on NASNet-A mobile).

onnxruntime turns ``DequantizeLinear -> op -> QuantizeLinear`` into the op's QLinear kernel. For
convolutions, additions and concatenations those kernels are fast; ``QLinearAveragePool`` is
scalar code that dequantizes its whole input, which made NASNet's 3x3 average pools a third of the
INT8 model's time. :func:`pools_as_convolutions` turns those pools into a depthwise convolution and
a product before quantization; where it cannot (unknown sizes), :func:`keep_float` keeps the pools'
outputs in float after it.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import onnx

from .graph_edits import attribute_values, drop_unused_initializers, readers_of, static_shapes
from .layout_folds import real_pixels

__all__ = ["keep_float", "pools_as_convolutions"]

# Readers that may take a float input where keep_float frees one: elementwise sums, whose float
# kernels cost about what requantizing their input would.
_FLOAT_READERS = {"Add", "Sum"}


def pools_as_convolutions(model: onnx.ModelProto) -> int:
    """Rewrite each ``AveragePool`` that excludes padding from its average (``count_include_pad=0``,
    NASNet's 3x3 pools) into a depthwise ``Conv`` with ``1/k`` weights followed by a ``Mul`` with
    the constant map ``k / count`` (how many real pixels each window covers, ``k`` at the
    interior), in place; returns how many pools were rewritten. Same function up to float
    rounding; only pools whose input channels and size are known (a fixed-size export) qualify,
    and 1x1 pools (subsampling) are left alone.

    Why: quantized, the pool becomes onnxruntime's ``QLinearAveragePool``, scalar code that costs
    ten to thirty times the float kernel; kept float (:func:`keep_float`), it needs a Q/DQ pair and
    NHWC <-> NCHW transposes around it. As a depthwise convolution and an elementwise product it
    runs the INT8 kernels and stays in the quantized NHWC region."""
    from onnx import helper, numpy_helper

    shapes = static_shapes(model)  # None for a dimension not known before the graph runs
    names = {i.name for i in model.graph.initializer} | {o for n in model.graph.node for o in n.output}
    nodes, rewritten = [], 0
    for index, node in enumerate(model.graph.node):
        attrs = attribute_values(node)
        shape = shapes.get(node.input[0], []) if node.op_type == "AveragePool" else []
        kernel = list(attrs.get("kernel_shape", []))
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        if (len(shape) != 4 or not all(shape[1:]) or len(kernel) != 2 or kernel == [1, 1]
                or attrs.get("count_include_pad", 0) != 0 or attrs.get("ceil_mode", 0)
                or (auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad) != "NOTSET"
                or any(d != 1 for d in attrs.get("dilations", [1, 1]))):
            nodes.append(node)
            continue
        channels, height, width = shape[1:]
        (kh, kw), (sh, sw) = kernel, list(attrs.get("strides", [1, 1]))
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        out_h, out_w = (height + pads[0] + pads[2] - kh) // sh + 1, (width + pads[1] + pads[3] - kw) // sw + 1
        count = np.outer(real_pixels(height, kh, sh, pads[0], out_h), real_pixels(width, kw, sw, pads[1], out_w))
        if not (count > 0).all():
            nodes.append(node)
            continue
        base = node.name or f"AveragePool_{index}"
        weight, border, summed = f"{base}_as_conv_weight", f"{base}_border_scale", f"{node.output[0]}_window_mean"
        if {weight, border, summed} & names:
            nodes.append(node)
            continue
        model.graph.initializer.extend([
            numpy_helper.from_array(np.full((channels, 1, kh, kw), 1.0 / (kh * kw), np.float32), weight),
            numpy_helper.from_array((kh * kw / count).astype(np.float32).reshape(1, 1, out_h, out_w), border)])
        nodes.append(helper.make_node("Conv", [node.input[0], weight], [summed], name=f"{base}_as_conv",
                                      group=channels, kernel_shape=[kh, kw], strides=[sh, sw], pads=pads))
        nodes.append(helper.make_node("Mul", [summed, border], [node.output[0]], name=f"{base}_border"))
        rewritten += 1
    if rewritten:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return rewritten


def keep_float(model: onnx.ModelProto, op_types: Iterable[str]) -> int:
    """Take the QuantizeLinear -> DequantizeLinear pair off the outputs of the nodes of ``op_types``
    in a QDQ graph, in place, so that their readers take the float result; returns how many outputs
    were freed. Only outputs read by ``Add`` / ``Sum`` alone are freed: a convolution reading a
    float tensor would lose its INT8 kernel.

    onnxruntime fuses ``DequantizeLinear -> op -> QuantizeLinear`` into the op's QLinear kernel
    wherever the quantizer wrote that pattern, whether or not the op was asked to be quantized;
    freeing the output breaks the pattern, so the op runs its float kernel. This is what pays for
    ``AveragePool``: onnxruntime's ``QLinearAveragePool`` dequantizes its whole input and pools
    in scalar float code (ten to thirty times the float kernel's time on NASNet-A's 3x3 pools),
    while the float pooling and the float ``Add`` that reads it cost less than the requantization
    they skip."""
    wanted = set(op_types)
    if not wanted:
        return 0
    nodes = list(model.graph.node)
    consumers = readers_of(model)
    outputs = {o.name for o in model.graph.output}
    freed = 0
    for node in nodes:
        if node.op_type not in wanted:
            continue
        value = node.output[0]
        quantizers = consumers.get(value, [])
        if not quantizers or any(q.op_type != "QuantizeLinear" for q in quantizers):
            continue
        dequantizers = [d for q in quantizers for d in consumers.get(q.output[0], [])]
        if (any(d.op_type != "DequantizeLinear" for d in dequantizers)
                or any(q.output[0] in outputs for q in quantizers)
                or any(d.output[0] in outputs for d in dequantizers)):
            continue
        # Only readers that are cheap in float (a convolution reading a float input would stay float).
        if any(r.op_type not in _FLOAT_READERS for d in dequantizers for r in consumers.get(d.output[0], [])):
            continue
        for d in dequantizers:
            for reader in consumers.get(d.output[0], []):
                for i, name in enumerate(reader.input):
                    if name == d.output[0]:
                        reader.input[i] = value
            model.graph.node.remove(d)
        for q in quantizers:
            model.graph.node.remove(q)
        freed += 1
    if freed:
        drop_unused_initializers(model)
    return freed
