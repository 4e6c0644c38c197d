"""The TF-SAME padding exports to ONNX without negative pads and runs in onnxruntime.

Full export (dynamic shapes, verification, quantization) belongs to the export package; this
checks the property the model code itself promises, on a small network at an even and an odd size.
"""

import numpy as np
import onnx
import pytest
import torch

import nasnet_backbones as nb

ort = pytest.importorskip("onnxruntime")


def pad_amounts(path, x):
    """The value of every Pad node's ``pads`` input, evaluated by onnxruntime alongside the output."""
    model = onnx.load(str(path))
    pad_inputs = [node.input[1] for node in model.graph.node if node.op_type == "Pad"]
    model.graph.output.extend(
        onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT64, None) for name in pad_inputs
    )
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"x": x.numpy()})
    return outputs[0], outputs[1:]


@pytest.mark.parametrize("size", [64, 65])
def test_export_has_no_negative_pads_and_matches(tmp_path, size):
    torch.manual_seed(0)
    model = nb.build_nasnet(nb.genotypes.NASNET_A, num_cells=3, num_filters=8, num_classes=10, img_size=size).eval()
    x = torch.randn(1, 3, size, size)
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"])
    graph = onnx.load(str(path)).graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.name == "pads":
                assert min(attr.ints) >= 0, node.name
    got, pads = pad_amounts(path, x)
    assert pads, "TF SAME padding at these sizes needs explicit pads somewhere"
    assert all((p >= 0).all() for p in pads)
    # A second input of the same size, not the one traced.
    x2 = torch.randn(1, 3, size, size)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(session.run(None, {"x": x2.numpy()})[0], model(x2).numpy(),
                                   rtol=1e-4, atol=1e-5)
