"""In-place rewrites of exported ONNX graphs: what a graph knows before it runs, and static pads.

TF 'SAME' padding, written so that every tracer can follow it, computes its pad amounts from the
input's size (they depend on its parity), or pads then crops a row or column (``Pad -> Slice``),
and the exporters share one ``Pad`` between branches that pad the same input alike. At a fixed
image size all of it is constant. torch.export resolves the sizes itself; the TorchScript tracer
records them as ``Shape -> Gather``, which onnxruntime cannot fold while the batch is dynamic,
so :func:`fold_static_dims` replaces the reads of fixed dimensions by constants. Then
:func:`merge_pad_crops` folds constant crops into their pads and :func:`fold_pads` moves the pads
into the convolutions and max pools that read them: the static, non-negative padding mobile
runtimes handle best. Graphs with a dynamic size keep their runtime pad arithmetic (nothing
constant to fold). The rewrites change no output; the exports verify each graph in onnxruntime
afterwards anyway.
"""

from __future__ import annotations

import numpy as np
import onnx

__all__ = ["attribute_values", "drop_unused_initializers", "subgraph_reads", "fold_pads", "fold_static_dims",
           "graph_constants", "merge_pad_crops", "readers_of", "set_attribute", "static_shapes"]


def graph_constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every value the graph knows before it runs: initializers and ``Constant`` node outputs, by name."""
    consts = {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    consts[node.output[0]] = onnx.numpy_helper.to_array(attr.t)
    return consts


def readers_of(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    """The nodes that read each value, by name (a node reading it twice is listed twice)."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def attribute_values(node: onnx.NodeProto) -> dict[str, object]:
    """``node``'s attributes as Python values (ints, lists, bytes, tensors), by name."""
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def set_attribute(node: onnx.NodeProto, name: str, value: object) -> None:
    """Set (add or replace) attribute ``name`` of ``node``, in place."""
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept)
    node.attribute.append(onnx.helper.make_attribute(name, value))


def subgraph_reads(node: onnx.NodeProto) -> set[str]:
    """Every name the subgraphs of ``node`` (If branches, Loop and Scan bodies) read, nested ones too."""
    names: set[str] = set()
    for attr in node.attribute:
        for graph in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else
                      list(attr.graphs) if attr.type == onnx.AttributeProto.GRAPHS else []):
            for inner in graph.node:
                names.update(inner.input)
                names |= subgraph_reads(inner)
    return names


def drop_unused_initializers(model: onnx.ModelProto) -> None:
    """Remove the nodes and initializers nothing reads any more (what the rewrites replaced), in
    place, so that onnxruntime has no unused initializer to warn about. Reads inside subgraphs
    (If branches, Loop bodies: a whole detector's) count as reads."""
    outputs = {o.name for o in model.graph.output}
    while True:
        used = set(outputs)
        for node in model.graph.node:
            used.update(node.input)
            used |= subgraph_reads(node)
        dead = [node for node in model.graph.node if not any(out in used for out in node.output)]
        if not dead:
            break
        for node in dead:
            model.graph.node.remove(node)
    kept = [init for init in model.graph.initializer if init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)


def static_shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Every value's shape as ONNX shape inference sees it (None for a dynamic dimension)."""
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)  # through shape arithmetic too
    values = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    return {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
            for v in values if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")}


def fold_static_dims(model: onnx.ModelProto) -> int:
    """Replace ``Gather(Shape(x), i)`` by a constant where dimension ``i`` of ``x`` is fixed, in
    place; returns how many. (onnxruntime folds ``Shape`` only when every dimension is fixed.)"""
    shapes = static_shapes(model)
    consts = graph_constants(model)
    shape_of = {}
    for node in model.graph.node:
        if node.op_type == "Shape" and node.input[0] in shapes:
            attrs = {a.name: a.i for a in node.attribute}
            dims = shapes[node.input[0]]
            shape_of[node.output[0]] = dims[attrs.get("start", 0):attrs.get("end", len(dims))]
    folded = []
    for node in model.graph.node:
        if node.op_type != "Gather" or node.input[0] not in shape_of or node.input[1] not in consts:
            continue
        if any(a.name == "axis" and a.i != 0 for a in node.attribute):
            continue
        dims, index = shape_of[node.input[0]], consts[node.input[1]]
        try:
            values = np.array([dims[int(i)] for i in np.ravel(index)], dtype=object)
        except IndexError:
            continue
        if any(v is None for v in values):
            continue
        folded.append((node, np.array(values.astype(np.int64)).reshape(np.shape(index))))
    for node, value in folded:
        model.graph.initializer.append(onnx.numpy_helper.from_array(value, node.output[0]))
        model.graph.node.remove(node)
    return len(folded)


def merge_pad_crops(model: onnx.ModelProto) -> int:
    """Fold each crop of a constant ``Pad`` into its pads, in place; returns how many were folded.

    TF 'SAME' padding written for every tracer is one fixed pad then a crop of the first row or
    column when the size is even (``Pad -> Slice -> Slice``). At a fixed size the crop is a constant
    ``Slice`` on a dimension of known size, so a single ``Pad`` does the same, and onnxruntime then
    folds it into the convolution or pooling after it: the static pads a fixed-size graph should
    have. Only crops that leave every pad non-negative, with step 1, of a ``Pad`` read by nothing
    else, are folded; runtime crops (dynamic size) stay as they are."""
    consts = graph_constants(model)
    shapes = static_shapes(model)
    graph_outputs = {o.name for o in model.graph.output}
    merged = 0
    changed = True
    while changed:
        changed = False
        producers = {out: node for node in model.graph.node for out in node.output}
        readers: dict[str, int] = {}
        for node in model.graph.node:
            for name in node.input:
                readers[name] = readers.get(name, 0) + 1
        for node in list(model.graph.node):
            pad = producers.get(node.input[0]) if node.op_type == "Slice" else None
            if pad is None or pad.op_type != "Pad" or readers.get(pad.output[0]) != 1 or pad.output[0] in graph_outputs:
                continue
            mode = next((a.s for a in pad.attribute if a.name == "mode"), b"constant")
            pads = consts.get(pad.input[1]) if len(pad.input) > 1 else None
            source = shapes.get(pad.input[0])
            args = [consts.get(name) if name else None for name in list(node.input[1:]) + [""] * (4 - len(node.input))]
            if mode != b"constant" or pads is None or source is None or args[0] is None or args[1] is None:
                continue
            if len(pad.input) > 3 and pad.input[3]:  # Pad's optional axes input: not written by the exporters
                continue
            rank = len(source)
            axes = args[2] if args[2] is not None else np.arange(len(args[0]))
            steps = args[3] if args[3] is not None else np.ones(len(args[0]), np.int64)
            new = np.array(pads, dtype=np.int64)
            ok = (steps == 1).all()
            for axis, start, end in zip(axes, args[0], args[1]):
                axis = int(axis) % rank
                if not ok or source[axis] is None:
                    ok = False
                    break
                size = source[axis] + int(new[axis]) + int(new[axis + rank])  # the padded size
                start, end = (int(v) + size if v < 0 else int(v) for v in (start, end))
                start, end = min(max(start, 0), size), min(max(end, 0), size)
                new[axis] -= start
                new[axis + rank] -= size - end
                ok = new[axis] >= 0 and new[axis + rank] >= 0
            if not ok:
                continue
            name = f"{pad.output[0]}_merged_pads"
            model.graph.initializer.append(onnx.numpy_helper.from_array(new, name))
            consts[name] = new
            pad.input[1] = name
            pad.output[0] = node.output[0]
            model.graph.node.remove(node)
            merged += 1
            changed = True
            break
    if merged:  # shape annotations of the crops' inputs, which no longer exist
        produced = {out for node in model.graph.node for out in node.output}
        kept = [v for v in model.graph.value_info if v.name in produced]
        del model.graph.value_info[:]
        model.graph.value_info.extend(kept)
    return merged


def fold_pads(model: onnx.ModelProto) -> int:
    """Move constant spatial ``Pad`` nodes into the ``pads`` of the convolutions (zero padding) or
    max pools (-inf padding) that read them, in place; returns how many ``Pad`` nodes went.

    A fixed-size export's TF 'SAME' padding ends as such pads (after :func:`merge_pad_crops`);
    onnxruntime fuses a pad into one reader only, and the exporters share one ``Pad`` between the
    two branches of a cell that pad the same input alike. Average pools keep theirs (an explicit
    zero pad counts in their mean; NASNet divides by the real-pixel count separately)."""
    consts = graph_constants(model)
    readers = readers_of(model)
    graph_outputs = {o.name for o in model.graph.output}
    folded = []
    for pad in model.graph.node:
        if pad.op_type != "Pad" or len(pad.input) < 2 or (len(pad.input) > 3 and pad.input[3]):
            continue
        pads = consts.get(pad.input[1])
        value = consts.get(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else np.zeros(())
        mode = next((a.s for a in pad.attribute if a.name == "mode"), b"constant")
        users = readers.get(pad.output[0], [])
        if (mode != b"constant" or pads is None or value is None or pads.shape != (8,) or (pads < 0).any()
                or pads[[0, 1, 4, 5]].any() or not users or pad.output[0] in graph_outputs):
            continue
        op = "Conv" if float(value) == 0.0 else "MaxPool" if float(value) == float("-inf") else None
        amounts = [int(pads[2]), int(pads[3]), int(pads[6]), int(pads[7])]  # h/w begin, h/w end

        def fits(node: onnx.NodeProto) -> bool:
            attrs = {a.name: a for a in node.attribute}
            if node.op_type != op or node.input[0] != pad.output[0] or len(node.input) < 1:
                return False
            if attrs.get("auto_pad") is not None and attrs["auto_pad"].s not in (b"", b"NOTSET"):
                return False
            if op == "MaxPool":
                kernel = list(attrs["kernel_shape"].ints)
                total = _pads_of(node, amounts)
                dilated = "dilations" in attrs and any(d != 1 for d in attrs["dilations"].ints)
                return not (attrs.get("ceil_mode") and attrs["ceil_mode"].i) and not dilated and all(
                    total[i] < kernel[i % 2] for i in range(4))  # onnxruntime needs pads below the kernel
            return True

        if op is None or not all(fits(u) for u in users):
            continue
        for user in users:
            set_attribute(user, "pads", _pads_of(user, amounts))
            user.input[0] = pad.input[0]
        folded.append(pad)
    for pad in folded:
        model.graph.node.remove(pad)
    return len(folded)


def _pads_of(node: onnx.NodeProto, extra: list[int]) -> list[int]:
    """``node``'s own ``pads`` attribute (2-D) plus ``extra``."""
    own = next((list(a.ints) for a in node.attribute if a.name == "pads"), [0, 0, 0, 0])
    return [a + b for a, b in zip(own, extra)]
