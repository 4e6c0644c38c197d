"""The TF-SAME padding exports to ONNX without negative pads and runs in onnxruntime.

Full export (dynamic shapes, verification, quantization) belongs to the export package; this
checks the property the model code itself promises, with PyTorch's own ``torch.onnx.export``
(the dynamo exporter, PyTorch's default) on a small network at an even and an odd size.
"""

import numpy as np
import onnx
import pytest
import torch

import nasnet_backbones as nb

ort = pytest.importorskip("onnxruntime")


def pad_amounts(model: onnx.ModelProto, x: torch.Tensor) -> tuple[np.ndarray, list[np.ndarray]]:
    """The model's output on ``x`` and every padding amount in the graph: each ``Pad`` node's
    ``pads`` input (constants read from the graph, computed ones evaluated by onnxruntime
    alongside the output) and each ``pads`` attribute (a Conv or pool the padding was folded into)."""
    constants = {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            constants[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
    computed = [n.input[1] for n in model.graph.node if n.op_type == "Pad" and n.input[1] not in constants]
    pads = [constants[n.input[1]] for n in model.graph.node if n.op_type == "Pad" and n.input[1] in constants]
    pads += [np.array(a.ints) for n in model.graph.node for a in n.attribute if a.name == "pads"]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT64, None)
                              for name in computed)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    return outputs[0], pads + outputs[1:]


def _export(model: torch.nn.Module, x: torch.Tensor, dynamic_shapes=None) -> onnx.ModelProto:
    with torch.no_grad():
        program = torch.onnx.export(model, (x,), dynamo=True, verbose=False, opset_version=18,
                                    input_names=["x"], dynamic_shapes=dynamic_shapes)
    return program.model_proto


@pytest.mark.parametrize("size", [64, 65])
def test_export_has_no_negative_pads_and_matches(size):
    torch.manual_seed(0)
    model = nb.build_nasnet(nb.genotypes.NASNET_A, num_cells=3, num_filters=8, num_classes=10, img_size=size).eval()
    x = torch.randn(1, 3, size, size)
    graph = _export(model, x)
    got, pads = pad_amounts(graph, x)
    assert pads, "TF SAME padding at these sizes needs explicit pads somewhere"
    assert all((p >= 0).all() for p in pads)
    if size % 2 == 0:  # stride 2 on an even size: TF pads one pixel more after than before
        assert any(len(p) % 2 == 0 and (p[: len(p) // 2] != p[len(p) // 2:]).any() for p in pads)
    # A second input of the same size, not the one traced.
    x2 = torch.randn(1, 3, size, size)
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(session.run(None, {"x": x2.numpy()})[0], model(x2).numpy(), rtol=1e-4, atol=1e-5)


def test_dynamic_size_pads_are_never_negative():
    """With a dynamic height and width the pad amounts are graph arithmetic on the input's size
    (TF's parity rule): evaluated at sizes of each parity, none is negative and the output matches."""
    torch.manual_seed(0)
    model = nb.build_nasnet(nb.genotypes.NASNET_A, num_cells=3, num_filters=8, num_classes=10, img_size=64).eval()
    dims = {2: torch.export.Dim("height", min=64), 3: torch.export.Dim("width", min=64)}
    graph = _export(model, torch.randn(1, 3, 96, 96), dynamic_shapes=(dims,))
    for h, w in [(64, 65), (97, 96), (101, 127)]:
        x = torch.randn(1, 3, h, w)
        got, pads = pad_amounts(graph, x)
        assert pads and all((p >= 0).all() for p in pads), (h, w)
        with torch.no_grad():
            np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-4, atol=1e-5)
