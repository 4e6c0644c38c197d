"""The operations a cell's blocks apply, and the layers shared by cells.

Semantics follow Google's TF code for these cells, since the published weights and cells come from
there: TF-slim ``nasnet_utils.py`` for the separable convs, pools, identity and factorized
reduction, and tensorflow/tpu ``amoeba_net/network_utils.py`` (the same team's implementation of
the full NASNet search space) for the plain, factorized and dilated convolutions. Everything is
ReLU -> conv -> BN, without conv biases. Every op maps ``c_in`` channels at stride ``s`` to
``c_out`` channels; pools and identity add a 1x1 conv only when the widths differ, as TF does.

``NASNET_SEARCH_OPS`` is the paper's search space (Zoph et al., 2018, Sec. 3, the 13 ops).
``OPS`` is everything a genotype may name: those 13 plus the DARTS ops needed to decode DARTS
genotypes (``skip_connect``, separable dilated convs), which follow quark0/darts ``operations.py``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
from torch import nn

from .padding import Conv2dSame, Pool2dSame

__all__ = [
    "OPS",
    "NASNET_SEARCH_OPS",
    "OpContext",
    "OpDef",
    "build_op",
    "ReLUConvBN",
    "FactorizedReduction",
]


@dataclass(frozen=True)
class OpContext:
    """What every op of one network shares: padding rule and batch-norm settings."""

    padding: str = "same"
    bn_eps: float = 1e-3
    bn_momentum: float = 0.0003  # TF decay 0.9997

    def bn(self, channels: int) -> nn.BatchNorm2d:
        return nn.BatchNorm2d(channels, eps=self.bn_eps, momentum=self.bn_momentum)

    def conv(self, c_in: int, c_out: int, kernel, stride=1, dilation=1, groups=1) -> Conv2dSame:
        return Conv2dSame(c_in, c_out, kernel, stride, dilation, groups, bias=False, padding=self.padding)


class ReLUConvBN(nn.Sequential):
    """ReLU -> conv -> BN (TF-slim's 1x1 projections, ``prev_1x1``, strided identity)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, ctx: OpContext) -> None:
        super().__init__(
            OrderedDict(relu=nn.ReLU(), conv=ctx.conv(c_in, c_out, kernel, stride), bn=ctx.bn(c_out))
        )


class FactorizedReduction(nn.Module):
    """Halve the resolution losslessly-ish with two offset 1x1 paths (TF ``factorized_reduction``).

    Path 1 reads even pixels, path 2 the odd ones (TF pads bottom/right by one and drops the first
    row and column). Each path is a 1x1 conv; the halves are concatenated and batch-normed; an
    odd ``c_out`` gives path 2 the extra channel. A stride-2 1x1 conv reads the same pixels as
    TF's 1x1 stride-2 average pool followed by a 1x1 conv, without materialising the subsample.
    """

    __constants__ = ["strided"]  # torch.jit.script compiles only the branch whose modules exist

    def __init__(self, c_in: int, c_out: int, ctx: OpContext, stride: int = 2, relu: bool = True) -> None:
        super().__init__()
        self.relu = nn.ReLU() if relu else nn.Identity()
        self.stride = stride
        self.strided = stride != 1
        if stride == 1:
            self.conv = nn.Conv2d(c_in, c_out, 1, bias=False)
        else:
            self.path1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
            self.path2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, stride=2, bias=False)
        self.bn = ctx.bn(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        if self.strided:
            # TF's own formulation: pad bottom/right by one, drop the first row and column. Exact
            # at every size with one static pad, and both paths then have the same (symbolic) size.
            p2 = self.path2(nn.functional.pad(x, [0, 1, 0, 1])[:, :, 1:, 1:])
            return self.bn(torch.cat([self.path1(x), p2], 1))
        else:
            return self.bn(self.conv(x))


def _separable_stack(
    c_in: int, c_out: int, stride: int, ctx: OpContext, kernel: int, layers: int = 2, dilation: int = 1
) -> nn.Module:
    """TF ``_stacked_separable_conv``: ``layers`` x (ReLU, depthwise, pointwise, BN); only the first strides.

    With ``layers=1`` and a dilation this is DARTS's ``DilConv``.
    """
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    c = c_in
    for i in range(1, layers + 1):
        modules[f"relu{i}"] = nn.ReLU(inplace=i > 1)
        modules[f"dw{i}"] = ctx.conv(c, c, kernel, stride if i == 1 else 1, dilation, groups=c)
        modules[f"pw{i}"] = ctx.conv(c, c_out, 1)
        modules[f"bn{i}"] = ctx.bn(c_out)
        c = c_out
    return nn.Sequential(modules)


def _pool(c_in: int, c_out: int, stride: int, ctx: OpContext, kind: str, kernel: int) -> nn.Module:
    """TF ``_pooling`` (SAME), then a 1x1 conv + BN (no ReLU) only when the widths differ."""
    pool = Pool2dSame(kind, kernel, stride, ctx.padding)
    if c_in == c_out:
        return pool
    return nn.Sequential(OrderedDict(pool=pool, conv=ctx.conv(c_in, c_out, 1), bn=ctx.bn(c_out)))


def _identity(c_in: int, c_out: int, stride: int, ctx: OpContext) -> nn.Module:
    """TF ``'none'``: the input itself, or ReLU-1x1 conv-BN when stride or width changes."""
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return ReLUConvBN(c_in, c_out, 1, stride, ctx)


def _skip_connect(c_in: int, c_out: int, stride: int, ctx: OpContext) -> nn.Module:
    """DARTS ``skip_connect``: identity, or a factorized reduction when strided."""
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    if stride == 1:
        return ReLUConvBN(c_in, c_out, 1, 1, ctx)
    return FactorizedReduction(c_in, c_out, ctx, stride=stride, relu=True)


def _conv_1x1(c_in: int, c_out: int, stride: int, ctx: OpContext) -> nn.Module:
    return ReLUConvBN(c_in, c_out, 1, stride, ctx)


def _bottleneck_conv(
    c_in: int, c_out: int, stride: int, ctx: OpContext, core: str, reduce_ratio: float
) -> nn.Module:
    """tensorflow/tpu ``network_utils`` convs: a 1x1 bottleneck around the spatial conv.

    ReLU, 1x1 (``int(c_out * ratio)``), BN, ReLU, core, BN, ReLU, 1x1 (``c_out``), BN. The core
    is a 3x3 conv, a rate-2 dilated 3x3, or a 1xk then kx1 pair (BN and ReLU between), and carries
    the stride. When the bottleneck would be empty, the core runs at full width without it.
    """
    mid = int(c_out * reduce_ratio)
    bottleneck = mid >= 1
    width = mid if bottleneck else c_out
    m: OrderedDict[str, nn.Module] = OrderedDict()
    m["relu0"] = nn.ReLU()
    c = c_in
    if bottleneck:
        m["pre"] = ctx.conv(c_in, mid, 1)
        m["pre_bn"] = ctx.bn(mid)
        m["pre_relu"] = nn.ReLU(inplace=True)
        c = mid
    if core == "3x3":
        m["conv"] = ctx.conv(c, width, 3, stride)
    elif core == "dil3x3":
        m["conv"] = ctx.conv(c, width, 3, stride, dilation=2)
    else:  # "1x3_3x1" or "1x7_7x1"
        k = int(core.split("_")[0][2:])  # "1x7_7x1" -> 7
        m["conv_1xk"] = ctx.conv(c, width, (1, k), (1, stride))
        m["conv_1xk_bn"] = ctx.bn(width)
        m["conv_1xk_relu"] = nn.ReLU(inplace=True)
        m["conv_kx1"] = ctx.conv(width, width, (k, 1), (stride, 1))
    m["bn"] = ctx.bn(width)
    if bottleneck:
        m["post_relu"] = nn.ReLU(inplace=True)
        m["post"] = ctx.conv(mid, c_out, 1)
        m["post_bn"] = ctx.bn(c_out)
    return nn.Sequential(m)


OpBuilder = Callable[[int, int, int, OpContext], nn.Module]


@dataclass(frozen=True)
class OpDef:
    build: OpBuilder
    description: str
    tf_name: str = ""


OPS: dict[str, OpDef] = {
    "identity": OpDef(_identity, "identity (ReLU-1x1-BN when strided or widened)", "none"),
    "conv_1x1": OpDef(_conv_1x1, "1x1 convolution", "1x1"),
    "conv_3x3": OpDef(partial(_bottleneck_conv, core="3x3", reduce_ratio=0.25), "3x3 convolution", "3x3"),
    "conv_1x3_3x1": OpDef(
        partial(_bottleneck_conv, core="1x3_3x1", reduce_ratio=3 / 8), "1x3 then 3x1 convolution", "1x3_3x1"
    ),
    "conv_1x7_7x1": OpDef(
        partial(_bottleneck_conv, core="1x7_7x1", reduce_ratio=0.25), "1x7 then 7x1 convolution", "1x7_7x1"
    ),
    "dil_conv_3x3": OpDef(
        partial(_bottleneck_conv, core="dil3x3", reduce_ratio=0.25), "3x3 dilated convolution (rate 2)",
        "dilated_3x3_rate_2",
    ),
    "avg_pool_3x3": OpDef(partial(_pool, kind="avg", kernel=3), "3x3 average pooling", "avg_pool_3x3"),
    "max_pool_3x3": OpDef(partial(_pool, kind="max", kernel=3), "3x3 max pooling", "max_pool_3x3"),
    "max_pool_5x5": OpDef(partial(_pool, kind="max", kernel=5), "5x5 max pooling", "max_pool_5x5"),
    "max_pool_7x7": OpDef(partial(_pool, kind="max", kernel=7), "7x7 max pooling", "max_pool_7x7"),
    "sep_conv_3x3": OpDef(partial(_separable_stack, kernel=3), "3x3 depthwise-separable conv (x2)", "separable_3x3_2"),
    "sep_conv_5x5": OpDef(partial(_separable_stack, kernel=5), "5x5 depthwise-separable conv (x2)", "separable_5x5_2"),
    "sep_conv_7x7": OpDef(partial(_separable_stack, kernel=7), "7x7 depthwise-separable conv (x2)", "separable_7x7_2"),
    # DARTS (Liu et al., 2019) ops, for decoding DARTS genotypes.
    "skip_connect": OpDef(_skip_connect, "DARTS skip connection (factorized reduction when strided)"),
    "dil_sep_conv_3x3": OpDef(
        partial(_separable_stack, kernel=3, layers=1, dilation=2), "DARTS dilated separable 3x3 conv"
    ),
    "dil_sep_conv_5x5": OpDef(
        partial(_separable_stack, kernel=5, layers=1, dilation=2), "DARTS dilated separable 5x5 conv"
    ),
}

#: The 13 operations of the paper's search space (Zoph et al., 2018, Sec. 3).
NASNET_SEARCH_OPS: tuple[str, ...] = (
    "identity",
    "conv_1x3_3x1",
    "conv_1x7_7x1",
    "dil_conv_3x3",
    "avg_pool_3x3",
    "max_pool_3x3",
    "max_pool_5x5",
    "max_pool_7x7",
    "conv_1x1",
    "conv_3x3",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "sep_conv_7x7",
)

#: TF-slim / tensorflow/tpu op names -> ours, for reading TF cell definitions.
TF_OP_NAMES: dict[str, str] = {d.tf_name: name for name, d in OPS.items() if d.tf_name}


def build_op(name: str, c_in: int, c_out: int, stride: int, ctx: OpContext) -> nn.Module:
    try:
        op = OPS[name]
    except KeyError:
        raise ValueError(f"unknown op {name!r}; known ops: {', '.join(sorted(OPS))}") from None
    return op.build(c_in, c_out, stride, ctx)
