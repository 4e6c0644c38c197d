import pytest
import torch
import torch.nn.functional as F

from nasnet_backbones.ops import NASNET_SEARCH_OPS, OPS, FactorizedReduction, OpContext, build_op


def test_search_space_has_the_papers_13_ops():
    assert len(NASNET_SEARCH_OPS) == 13 and len(set(NASNET_SEARCH_OPS)) == 13
    assert set(NASNET_SEARCH_OPS) <= set(OPS)


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [7, 8])
@pytest.mark.parametrize("c_in", [8, 12])
def test_every_op_maps_shape(name, stride, size, c_in):
    op = build_op(name, c_in, 8, stride, OpContext())
    x = torch.randn(2, c_in, size, size, requires_grad=True)
    y = op(x)
    out = -(-size // stride)
    assert y.shape == (2, 8, out, out)
    y.sum().backward()  # differentiable end to end
    assert x.grad is not None


def test_ops_are_relu_conv_bn():
    seq = build_op("sep_conv_3x3", 4, 4, 1, OpContext())
    kinds = [type(m).__name__ for m in seq]
    assert kinds[:4] == ["ReLU", "Conv2dSame", "Conv2dSame", "BatchNorm2d"]
    assert kinds[4:] == ["ReLU", "Conv2dSame", "Conv2dSame", "BatchNorm2d"]
    assert seq.dw1.stride == (1, 1) and seq.dw1.groups == 4
    strided = build_op("sep_conv_5x5", 4, 6, 2, OpContext())
    assert strided.dw1.stride == (2, 2) and strided.dw2.stride == (1, 1)  # only the first layer strides
    assert strided.pw1.out_channels == 6  # TF: first pointwise goes straight to the output width


def test_identity_and_pool_adapt_width_only_when_needed():
    ctx = OpContext()
    assert isinstance(build_op("identity", 8, 8, 1, ctx), torch.nn.Identity)
    assert type(build_op("identity", 8, 8, 2, ctx)).__name__ == "ReLUConvBN"
    pool = build_op("avg_pool_3x3", 12, 8, 1, ctx)
    assert [type(m).__name__ for m in pool] == ["Pool2dSame", "Conv2dSame", "BatchNorm2d"]  # no ReLU (TF)


def tf_factorized_reduction(x, conv1, conv2):
    """TF-slim factorized_reduction, literally: 1x1/2 avg pool; pad bottom/right 1 and drop first row/col."""
    path1 = F.conv2d(F.avg_pool2d(x, 1, 2), conv1)
    shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
    path2 = F.conv2d(F.avg_pool2d(shifted, 1, 2), conv2)
    return torch.cat([path1, path2], 1)


@pytest.mark.parametrize("size", [6, 7, 42, 21])
@pytest.mark.parametrize("c_out", [8, 9])
def test_factorized_reduction_matches_tf(size, c_out):
    fr = FactorizedReduction(4, c_out, OpContext(), relu=False).eval()
    assert fr.path2.out_channels == c_out - c_out // 2  # odd widths give path 2 the extra channel
    x = torch.randn(2, 4, size, size + 1)
    expected = fr.bn(tf_factorized_reduction(x, fr.path1.weight, fr.path2.weight))
    torch.testing.assert_close(fr(x), expected)
