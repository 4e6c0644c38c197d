"""TensorFlow 'SAME' padding that is exact at any input size and exports cleanly to ONNX.

TF pads ``total = max((ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)`` pixels along a dimension
of size ``n``, ``total // 2`` before and the rest after. For a stride-2 op on an even input that is
0 before and 1 after, which no symmetric PyTorch padding reproduces. The published NASNet weights
were trained with it, so a port that pads symmetrically shifts every strided window by a pixel.

The layers here pick, per call, the cheapest exact form: PyTorch's own symmetric padding when TF's
happens to be symmetric, ``ceil_mode`` pooling when the one extra pixel falls at the end, and an
explicit non-negative ``F.pad`` otherwise. Average pools never count padded pixels (TF's rule).

``padding="symmetric"`` gives PyTorch's usual ``(k - 1) * d // 2`` on both sides instead, for
cells defined in PyTorch (DARTS), and ``"valid"`` gives none.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PADDING_MODES", "same_padding", "Conv2dSame", "Pool2dSame", "traceable_padding", "is_traceable"]

PADDING_MODES = ("same", "symmetric", "valid")

_TRACEABLE = False


@contextmanager
def traceable_padding() -> Iterator[None]:
    """Within this block, size-dependent TF 'SAME' padding is computed from the input's shape with
    tensor ops instead of Python ints, so a traced (ONNX) graph is right at every input size.

    For a stride-2 op whose kernel spans an odd ``k`` pixels (``(kernel - 1) x dilation + 1``), TF
    pads ``(k - 1) // 2`` after, and before either the same (odd size) or one less (even size). The
    graph pads ``(k - 1) // 2`` on both sides and drops the first row/column when the size is even:
    one static pad and one shape-dependent slice.
    Eager code does not need this (it is slower); ``export`` uses it for ``--dynamic-size``.
    """
    global _TRACEABLE
    previous, _TRACEABLE = _TRACEABLE, True
    try:
        yield
    finally:
        _TRACEABLE = previous


def is_traceable() -> bool:
    return _TRACEABLE


def _traceable_pad(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int],
                   value: float = 0.0) -> torch.Tensor:
    """TF 'SAME' padding of ``x`` for a strided op, with the size dependence as graph ops."""
    pads, crops = [], []
    for dim, (k, s, d) in enumerate(zip(kernel, stride, dilation)):
        span = (k - 1) * d + 1  # a dilated kernel pads as a dense kernel of its span
        if span == 1:
            pads.append(0)
            crops.append(None)
        elif s == 2 and span % 2 == 1:
            pads.append((span - 1) // 2)
            crops.append(2 + dim)
        else:
            raise ValueError(f"size-independent export of TF 'SAME' supports stride-2 kernels of odd span; got kernel "
                             f"{k}, stride {s}, dilation {d}")
    (ph, pw) = pads
    x = F.pad(x, (pw, pw, ph, ph), value=value)
    shape = torch._shape_as_tensor(x)
    off_h = 1 - shape[2] % 2 if crops[0] is not None else 0  # padded size has the input's parity
    off_w = 1 - shape[3] % 2 if crops[1] is not None else 0
    return x[:, :, off_h:, off_w:]


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding of TF 'SAME' along one dimension."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _check_mode(padding: str) -> None:
    if padding not in PADDING_MODES:
        raise ValueError(f"unknown padding mode {padding!r}; use one of {PADDING_MODES}")


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TF 'SAME' (default), symmetric or valid padding."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = False,
        padding: str = "same",
    ) -> None:
        _check_mode(padding)
        k, s, d = _pair(kernel_size), _pair(stride), _pair(dilation)
        # TF 'SAME' is input-independent (and symmetric) exactly when stride is 1 and the receptive
        # field is odd; then PyTorch's static padding is already exact.
        static = padding != "same" or all(si == 1 and (ki - 1) * di % 2 == 0 for ki, si, di in zip(k, s, d))
        native = (0, 0) if padding == "valid" else tuple((ki - 1) * di // 2 for ki, di in zip(k, d))
        super().__init__(in_channels, out_channels, k, s, native if static else 0, d, groups, bias)
        self.dynamic_same = not static

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.dynamic_same:
            return super().forward(x)
        if _TRACEABLE:
            x = _traceable_pad(x, self.kernel_size, self.stride, self.dilation)
            return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        (t, b), (l, r) = (
            same_padding(int(n), k, s, d)
            for n, k, s, d in zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation)
        )
        if t == b and l == r:
            return F.conv2d(x, self.weight, self.bias, self.stride, (t, l), self.dilation, self.groups)
        return F.conv2d(F.pad(x, (l, r, t, b)), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _pool_out(n: int, k: int, s: int, p: int, ceil_mode: bool) -> int:
    """Output size of a PyTorch pool (``torch.nn.MaxPool2d`` docs), including the ceil_mode rule."""
    out = (math.ceil if ceil_mode else math.floor)((n + 2 * p - k) / s) + 1
    if ceil_mode and (out - 1) * s >= n + p:
        out -= 1
    return out


class Pool2dSame(nn.Module):
    """Max or average pooling with TF 'SAME' (default), symmetric or valid padding.

    Average pools divide by the number of real pixels in the window, as TF does.
    """

    def __init__(self, kind: str, kernel_size: int, stride: int = 1, padding: str = "same") -> None:
        super().__init__()
        if kind not in ("max", "avg"):
            raise ValueError(f"unknown pool kind {kind!r}; use 'max' or 'avg'")
        _check_mode(padding)
        self.kind, self.kernel_size, self.stride, self.padding = kind, kernel_size, stride, padding

    def _pool(self, x: torch.Tensor, pad: tuple[int, int], ceil_mode: bool) -> torch.Tensor:
        k, s = self.kernel_size, self.stride
        if self.kind == "max":
            return F.max_pool2d(x, k, s, pad, ceil_mode=ceil_mode)
        return F.avg_pool2d(x, k, s, pad, ceil_mode=ceil_mode, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size, self.stride
        if self.padding == "valid":
            return self._pool(x, (0, 0), False)
        if self.padding == "symmetric" or (s == 1 and k % 2 == 1):
            return self._pool(x, (k // 2, k // 2), False)
        if _TRACEABLE:
            if self.kind == "max":
                return F.max_pool2d(_traceable_pad(x, (k, k), (s, s), (1, 1), float("-inf")), k, s)
            ones = torch.ones_like(x[:, :1])
            return F.avg_pool2d(_traceable_pad(x, (k, k), (s, s), (1, 1)), k, s) / F.avg_pool2d(
                _traceable_pad(ones, (k, k), (s, s), (1, 1)), k, s)
        (t, b), (l, r) = (same_padding(int(n), k, s) for n in x.shape[-2:])
        if t == b and l == r:
            return self._pool(x, (t, l), False)
        # Extra pixels at the end are what ceil_mode adds: same window starts, and PyTorch clips
        # the last window to the input (and divides by the real-pixel count), as TF does.
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if (
            max(t, l) <= k // 2
            and _pool_out(h, k, s, t, True) == -(-h // s)
            and _pool_out(w, k, s, l, True) == -(-w // s)
        ):
            return self._pool(x, (t, l), True)
        if self.kind == "max":
            return F.max_pool2d(F.pad(x, (l, r, t, b), value=float("-inf")), k, s)
        # Sum over the window divided by the count of real pixels in it.
        padded = F.avg_pool2d(F.pad(x, (l, r, t, b)), k, s)
        ones = torch.ones((1, 1) + tuple(x.shape[-2:]), dtype=x.dtype, device=x.device)
        return padded / F.avg_pool2d(F.pad(ones, (l, r, t, b)), k, s)

    def extra_repr(self) -> str:
        return f"{self.kind}, kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding!r}"
