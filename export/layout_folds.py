"""Two rewrites of a fixed-size export that leave onnxruntime's fast kernels an unbroken chain.

onnxruntime's x86 layout transformer runs convolutions and pools in its blocked NCHWc layout, and
its INT8 quantizer wraps every op it can in Q/DQ. Both stop at an op they do not know: each such
op costs a reorder out of the blocked layout and back (or a dequantize-requantize), on every call.
A NASNet export has two kinds, both arithmetic a neighbour can absorb exactly:

- **TF 'SAME' average pools.** TF divides a window's sum by the count of real pixels in it. The
  model writes that as ``Pad -> AveragePool -> Div`` by the pool of a padded tensor of ones,
  which is exactly ONNX's ``AveragePool`` with those pads and ``count_include_pad=0`` (:func:`exclusive_average_pools`).
- **BatchNorm after a factorized reduction's Concat.** Its two strided 1x1 paths are concatenated
  and then normalised; per channel that is an affine map, which folds into each path's
  convolution (:func:`fold_concat_batchnorm`), as onnxruntime already does for a BatchNorm right
  after one convolution.

Each rewrite checks its preconditions against the graph's constants and shapes and skips a node
that does not match; the export is verified against PyTorch after it, like every other edit.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from .graph_edits import attribute_values, graph_constants, readers_of, set_attribute, static_shapes

__all__ = ["exclusive_average_pools", "fold_concat_batchnorm", "real_pixels"]


def real_pixels(size: int, kernel: int, stride: int, before: int, outputs: int) -> np.ndarray:
    """Per output position along one dimension: how many of the window's ``kernel`` pixels lie
    inside the unpadded input of ``size`` (``before`` pixels of padding precede it)."""
    starts = np.arange(outputs) * stride - before
    return np.minimum(starts + kernel, size) - np.maximum(starts, 0)


def _zero_pad_amounts(pad: onnx.NodeProto | None, consts: dict[str, np.ndarray]) -> list[int] | None:
    """``[top, left, bottom, right]`` of a constant, spatial-only zero ``Pad``; None for any other node."""
    if pad is None or pad.op_type != "Pad" or len(pad.input) < 2 or (len(pad.input) > 3 and pad.input[3]):
        return None
    pads = consts.get(pad.input[1])
    value = consts.get(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else np.zeros(())
    mode = attribute_values(pad).get("mode", b"constant")
    if (pads is None or pads.shape != (8,) or (pads < 0).any() or pads[[0, 1, 4, 5]].any() or value is None
            or float(value) != 0.0 or mode != b"constant"):
        return None
    return [int(pads[2]), int(pads[3]), int(pads[6]), int(pads[7])]


def exclusive_average_pools(model: onnx.ModelProto) -> int:
    """Replace ``AveragePool`` over zero padding (its own ``pads`` with ``count_include_pad=1``, or a
    ``Pad`` before it) followed by ``Div`` by the share of real pixels in each window, by one
    ``AveragePool`` with those pads and ``count_include_pad=0``, in place; returns how many were
    replaced. A ``Pad`` stays while something else reads it."""
    consts = graph_constants(model)
    readers = readers_of(model)
    producers = {out: node for node in model.graph.node for out in node.output}
    graph_outputs = {o.name for o in model.graph.output}
    shapes: dict[str, list[int | None]] | None = None
    removed = []
    for div in model.graph.node:
        pool = producers.get(div.input[0]) if div.op_type == "Div" else None
        if pool is None or pool.op_type != "AveragePool" or div.input[1] not in consts:
            continue
        attrs = attribute_values(pool)
        if (len(readers.get(pool.output[0], [])) != 1 or pool.output[0] in graph_outputs
                or attrs.get("ceil_mode", 0) or any(d != 1 for d in attrs.get("dilations", []))
                or attrs.get("auto_pad", b"NOTSET") not in (b"", b"NOTSET")):
            continue
        own = list(attrs.get("pads", [0, 0, 0, 0]))
        if any(own) and not attrs.get("count_include_pad", 0):
            continue  # already divides by the real pixels: the Div is something else
        pad = producers.get(pool.input[0])
        extra = _zero_pad_amounts(pad, consts)
        source = pad.input[0] if extra is not None else pool.input[0]
        top, left, bottom, right = (a + b for a, b in zip(own, extra or [0, 0, 0, 0]))
        kernel = list(attrs["kernel_shape"])
        strides = list(attrs.get("strides", [1, 1]))
        if not (top < kernel[0] and bottom < kernel[0] and left < kernel[1] and right < kernel[1]):
            continue  # a window of padding only would divide by zero
        if shapes is None:
            shapes = static_shapes(model)
        size, out = shapes.get(source), shapes.get(pool.output[0])
        if not size or not out or len(size) != 4 or None in size[2:] or None in out[2:]:
            continue
        share = np.outer(real_pixels(size[2], kernel[0], strides[0], top, out[2]) / kernel[0],
                         real_pixels(size[3], kernel[1], strides[1], left, out[3]) / kernel[1])
        divisor = consts[div.input[1]]
        if divisor.size != share.size or not np.allclose(divisor.reshape(share.shape), share, rtol=1e-6, atol=0):
            continue
        pool.input[0] = source
        set_attribute(pool, "pads", [top, left, bottom, right])
        set_attribute(pool, "count_include_pad", 0)
        pool.output[0] = div.output[0]
        removed.append(div)
        if extra is not None:
            readers[pad.output[0]].remove(pool)
            if not readers[pad.output[0]] and pad.output[0] not in graph_outputs:
                removed.append(pad)
    for node in removed:
        model.graph.node.remove(node)
    return sum(1 for node in removed if node.op_type == "Div")


def fold_concat_batchnorm(model: onnx.ModelProto) -> int:
    """Fold each ``BatchNormalization`` that reads a channel ``Concat`` of convolutions (each read by
    that Concat alone) into those convolutions' weights and biases, in place; returns how many
    BatchNorms went. Weights another node shares are copied, not changed."""
    consts = graph_constants(model)
    readers = readers_of(model)
    producers = {out: node for node in model.graph.node for out in node.output}
    graph_outputs = {o.name for o in model.graph.output}
    initializers = {init.name: init for init in model.graph.initializer}
    folded = []
    for bn in model.graph.node:
        concat = producers.get(bn.input[0]) if bn.op_type == "BatchNormalization" else None
        if (concat is None or concat.op_type != "Concat" or len(bn.output) != 1
                or len(readers.get(concat.output[0], [])) != 1 or concat.output[0] in graph_outputs
                or attribute_values(concat)["axis"] not in (1, -3) or not all(n in consts for n in bn.input[1:5])):
            continue
        convs = [producers.get(name) for name in concat.input]
        if not all(c is not None and c.op_type == "Conv" and c.input[1] in initializers
                   and (len(c.input) < 3 or not c.input[2] or c.input[2] in initializers)
                   and len(readers.get(c.output[0], [])) == 1 and c.output[0] not in graph_outputs for c in convs):
            continue
        eps = attribute_values(bn).get("epsilon", 1e-5)
        scale, shift, mean, var = (consts[n].astype(np.float64) for n in bn.input[1:5])
        gain = scale / np.sqrt(var + eps)
        offset = shift - mean * gain
        widths = [consts[c.input[1]].shape[0] for c in convs]
        if sum(widths) != gain.shape[0]:
            continue
        start = 0
        for conv, width in zip(convs, widths):
            part = slice(start, start + width)
            start += width
            weight = consts[conv.input[1]]
            bias = consts[conv.input[2]] if len(conv.input) > 2 and conv.input[2] else np.zeros(width, weight.dtype)
            new_weight = (weight * gain[part].reshape(-1, 1, 1, 1)).astype(weight.dtype)
            new_bias = (bias * gain[part] + offset[part]).astype(weight.dtype)
            for index, array, role in ((1, new_weight, "weight"), (2, new_bias, "bias")):
                name = f"{conv.name or conv.output[0]}.{role}_bn_folded"
                model.graph.initializer.append(numpy_helper.from_array(array, name))
                if index < len(conv.input):
                    conv.input[index] = name
                else:
                    conv.input.append(name)
        concat.output[0] = bn.output[0]
        folded.append(bn)
    for node in folded:
        model.graph.node.remove(node)
    return len(folded)
