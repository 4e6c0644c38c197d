"""export.layout_folds: TF 'SAME' average pools become exclusive AveragePools, and the BatchNorm
after a factorized reduction's Concat folds into its convolutions; other graphs stay as they are."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from export.layout_folds import exclusive_average_pools, fold_concat_batchnorm
from export.onnx_export import export_module
from nasnet_backbones.ops import FactorizedReduction, OpContext
from nasnet_backbones.padding import Pool2dSame


def op_types(path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


class _PoolThenConv(nn.Module):
    def __init__(self, stride: int) -> None:
        super().__init__()
        self.pool = Pool2dSame("avg", 3, stride)
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pool(x))


@pytest.mark.parametrize("size", [24, 25])  # asymmetric and symmetric TF padding
@pytest.mark.parametrize("stride", [1, 2])
def test_same_average_pool_exports_without_the_division(tmp_path, size, stride):
    path = tmp_path / "pool.onnx"
    report = export_module(_PoolThenConv(stride).eval(), path, size, in_chans=4)  # verified against PyTorch
    ops = op_types(path)
    assert "Div" not in ops and "Pad" not in ops
    pool = next(n for n in onnx.load(str(path)).graph.node if n.op_type == "AveragePool")
    attrs = {a.name: a for a in pool.attribute}
    assert attrs["count_include_pad"].i == 0
    assert report.max_rel_error < 1e-5


def test_factorized_reduction_batchnorm_folds_into_both_paths(tmp_path):
    module = FactorizedReduction(6, 10, OpContext()).eval()
    with torch.no_grad():  # statistics far from the identity, so a dropped BatchNorm would show
        module.bn.running_mean.uniform_(-1, 1)
        module.bn.running_var.uniform_(0.5, 3)
        module.bn.weight.uniform_(0.5, 2)
        module.bn.bias.uniform_(-1, 1)
    path = tmp_path / "reduction.onnx"
    report = export_module(module, path, 16, in_chans=6)
    ops = op_types(path)
    assert "BatchNormalization" not in ops and ops.count("Conv") == 2
    assert report.max_rel_error < 1e-5


def _pool_div_graph(divisor: np.ndarray) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("AveragePool", ["x"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1],
                              count_include_pad=1),
             helper.make_node("Div", ["p", "d"], ["y"])]
    graph = helper.make_graph(nodes, "g", [x], [y], [numpy_helper.from_array(divisor.astype(np.float32), "d")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_only_a_real_pixel_share_divisor_is_folded():
    # rows and columns: windows start at 0, 2, 4; the last reads one padded pixel of three
    share = np.outer([1, 1, 2 / 3], [1, 1, 2 / 3]).reshape(1, 1, 3, 3)
    x = np.random.default_rng(0).standard_normal((1, 2, 6, 6)).astype(np.float32)
    model = _pool_div_graph(share)
    want = _run(model, x)
    assert exclusive_average_pools(model) == 1
    assert [n.op_type for n in model.graph.node] == ["AveragePool"]
    np.testing.assert_allclose(_run(model, x), want, rtol=1e-6)
    other = _pool_div_graph(np.full((1, 1, 3, 3), 2.0))  # a Div that is something else
    assert exclusive_average_pools(other) == 0 and len(other.graph.node) == 2


def test_concat_batchnorm_stays_when_a_conv_output_is_read_elsewhere():
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((2, 3, 1, 1)).astype(np.float32), n) for n in ("w1", "w2")]
    inits += [numpy_helper.from_array(v.astype(np.float32), n) for n, v in
              (("s", rng.uniform(0.5, 2, 4)), ("b", rng.standard_normal(4)), ("m", rng.standard_normal(4)),
               ("v", rng.uniform(0.5, 2, 4)))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"]), helper.make_node("Conv", ["x", "w2"], ["c2"]),
             helper.make_node("Concat", ["c1", "c2"], ["cat"], axis=1),
             helper.make_node("BatchNormalization", ["cat", "s", "b", "m", "v"], ["y"]),
             helper.make_node("Relu", ["c1"], ["side"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "side")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], outs, inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    assert fold_concat_batchnorm(model) == 0  # c1 is read by the Relu too: folding would change it
    nodes.pop()
    model = helper.make_model(helper.make_graph(nodes, "g", [x], outs[:1], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    data = rng.standard_normal((1, 3, 4, 4)).astype(np.float32)
    want = _run(model, data)
    assert fold_concat_batchnorm(model) == 1
    assert "BatchNormalization" not in [n.op_type for n in model.graph.node]
    np.testing.assert_allclose(_run(model, data), want, rtol=1e-5, atol=1e-6)
