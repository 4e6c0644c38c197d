"""TF 'SAME' layers against a brute-force, loop-by-loop reference of TF's definition."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.fx
import torch.nn.functional as F

from nasnet_backbones.padding import Conv2dSame, Pool2dSame, same_padding


def tf_windows(n, k, s, d=1):
    """Start offsets of TF SAME windows along one axis (tf.nn docs: out = ceil(n / s))."""
    out = math.ceil(n / s)
    total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
    return [i * s - total // 2 for i in range(out)]


def tf_pool_reference(x, kind, k, s):
    x = x.numpy()
    n, c, h, w = x.shape
    rows, cols = tf_windows(h, k, s), tf_windows(w, k, s)
    out = np.zeros((n, c, len(rows), len(cols)), dtype=np.float64)
    for (i, r0), (j, c0) in itertools.product(enumerate(rows), enumerate(cols)):
        win = x[:, :, max(r0, 0):min(r0 + k, h), max(c0, 0):min(c0 + k, w)]  # real pixels only
        out[:, :, i, j] = win.max(axis=(2, 3)) if kind == "max" else win.mean(axis=(2, 3))
    return torch.from_numpy(out).float()


def tf_conv_reference(x, weight, s, d, groups):
    x, weight = x.double().numpy(), weight.double().numpy()
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    rows, cols = tf_windows(h, kh, s, d), tf_windows(w, kw, s, d)
    out = np.zeros((n, o, len(rows), len(cols)))
    per_group = o // groups
    for (i, r0), (j, c0) in itertools.product(enumerate(rows), enumerate(cols)):
        for a, b in itertools.product(range(kh), range(kw)):
            r, q = r0 + a * d, c0 + b * d
            if 0 <= r < h and 0 <= q < w:  # zero padding elsewhere
                for g in range(groups):
                    xs = x[:, g * cg:(g + 1) * cg, r, q]
                    ws = weight[g * per_group:(g + 1) * per_group, :, a, b]
                    out[:, g * per_group:(g + 1) * per_group, i, j] += xs @ ws.T
    return torch.from_numpy(out).float()


@pytest.mark.parametrize("size", [5, 6, 7, 8, 11, 12])
@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("k, s", [(3, 1), (3, 2), (5, 2), (7, 2), (3, 3)])
def test_pool_matches_tf_same(size, kind, k, s):
    torch.manual_seed(size)
    x = torch.randn(2, 3, size, size + 1)  # non-square: height and width pad differently
    got = Pool2dSame(kind, k, s)(x)
    torch.testing.assert_close(got, tf_pool_reference(x, kind, k, s), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("size", [6, 7, 10, 11])
@pytest.mark.parametrize("k, s, d, groups", [(3, 2, 1, 1), (5, 2, 1, 4), (7, 2, 1, 4), (3, 1, 2, 1), ((1, 7), 2, 1, 1), (4, 1, 1, 1),
                                              (3, 2, 2, 4)])
def test_conv_matches_tf_same(size, k, s, d, groups):
    torch.manual_seed(size)
    conv = Conv2dSame(4, 4, k, s, d, groups=groups)
    x = torch.randn(1, 4, size, size + 1)
    torch.testing.assert_close(conv(x), tf_conv_reference(x, conv.weight.detach(), s, d, groups), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("k, d", [(3, 1), (3, 2), (5, 2), ((1, 7), 1)])
def test_one_traced_graph_is_tf_same_at_every_parity(k, d):
    """A conv and a pool traced once by torch.fx (the pads become graph nodes) are TF 'SAME' at
    sizes of both parities, dilated kernels included."""
    torch.manual_seed(0)
    conv = Conv2dSame(4, 4, k, 2, d, groups=4)
    pool = Pool2dSame("avg", 3, 2)
    traced_conv, traced_pool = torch.fx.symbolic_trace(conv), torch.fx.symbolic_trace(pool)
    for size in (6, 7, 10, 11):
        x = torch.randn(1, 4, size, size + 1)
        want = tf_conv_reference(x, conv.weight.detach(), 2, d, 4)
        torch.testing.assert_close(traced_conv(x), want, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(traced_pool(x), tf_pool_reference(x, "avg", 3, 2), atol=1e-5, rtol=1e-4)


def test_stride_above_two_and_a_too_short_kernel():
    x = torch.randn(1, 2, 10, 11)
    torch.testing.assert_close(Pool2dSame("max", 3, 3)(x), tf_pool_reference(x, "max", 3, 3))
    with pytest.raises(ValueError, match="span"):
        Conv2dSame(2, 2, 2, 3)


def test_same_padding_examples():
    assert same_padding(224, 3, 2) == (0, 1)  # even input, stride 2: all padding after
    assert same_padding(165, 3, 2) == (1, 1)
    assert same_padding(56, 5, 2) == (1, 2)
    assert same_padding(7, 3, 1) == (1, 1)


def test_symmetric_mode_is_pytorch_padding():
    x = torch.randn(1, 2, 8, 8)
    torch.testing.assert_close(Pool2dSame("max", 3, 2, "symmetric")(x), F.max_pool2d(x, 3, 2, 1))
    torch.testing.assert_close(
        Pool2dSame("avg", 3, 2, "symmetric")(x), F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
    )
    conv = Conv2dSame(2, 2, 3, 2, padding="symmetric")
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, None, 2, 1))


def test_unknown_padding_mode():
    with pytest.raises(ValueError, match="unknown padding mode 'reflect'"):
        Conv2dSame(1, 1, 3, padding="reflect")
