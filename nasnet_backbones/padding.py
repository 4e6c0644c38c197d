"""TensorFlow 'SAME' padding that is exact at any input size, in eager code and in every tracer.

TF pads ``total = max((ceil(n / s) - 1) * s + span - n, 0)`` pixels along a dimension of size
``n`` (``span = (k - 1) * d + 1``, a kernel's extent), ``total // 2`` before and the rest after. For
a stride-2 op on an even input that is one pixel fewer before than after, which no symmetric
PyTorch padding reproduces. The published NASNet weights were trained with it, so a port that pads
symmetrically shifts every strided window by a pixel.

When ``span >= s``, ``total = (-n) mod s + span - s``: integer arithmetic on the input's size with
no branch. The layers here compute it that way on ``x.shape`` in their one code path, so the same
forward is exact eagerly and traceable by ``torch.fx`` (the pads are graph nodes),
``torch.jit.script`` (ints), and ``torch.export`` / the ONNX exporters with a dynamic height and
width (symbolic sizes, no guard on the input's parity). Where TF's padding does not depend on the
size (stride 1), the layers use constant padding. Average pools never count padded pixels (TF's
rule).

``padding="symmetric"`` gives PyTorch's usual ``(k - 1) * d // 2`` on both sides instead, for
cells defined in PyTorch (DARTS), and ``"valid"`` gives none.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PADDING_MODES", "same_padding", "same_pads", "same_pads_any_stride", "parity_pads", "Conv2dSame", "Pool2dSame", "traceable_padding",
           "is_traceable"]

PADDING_MODES = ("same", "symmetric", "valid")


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> Tuple[int, int]:
    """(before, after) padding of TF 'SAME' along one dimension (any ints; TF's own formula)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def same_pads(kernel: Tuple[int, int], stride: Tuple[int, int], dilation: Tuple[int, int]
              ) -> Tuple[List[int], List[bool]]:
    """TF 'SAME' as one fixed ``F.pad`` (``[left, right, top, bottom]``) and, per dimension (height,
    width), whether the padded input is then narrowed by the input's parity.

    A stride-1 dimension pads ``span - 1`` whatever the size; a stride-2 dimension of even span pads
    ``(span / 2 - 1, span / 2)`` (on an even input the last pixel is never read). A stride-2
    dimension of odd span ``2p + 1`` is listed as ``(p, p + 1)`` and narrowed: it pads one pixel less
    before on an even input, as TF does, and one more after (never read). Every strided op then
    produces ``(n - 1) // 2 + 1`` outputs by the same formula, which lets ``torch.export`` see
    that the branches of a cell agree in size for every input size.
    """
    pads: List[int] = []
    narrow: List[bool] = []
    for k, s, d in zip(kernel, stride, dilation):
        span = (k - 1) * d + 1
        if span == 1:
            before, after, cut = 0, 0, False
        elif s == 1:
            before, after, cut = (span - 1) // 2, span - 1 - (span - 1) // 2, False
        elif s == 2 and span % 2 == 0:
            before, after, cut = span // 2 - 1, span // 2, False
        elif s == 2:
            before, after, cut = (span - 1) // 2, (span - 1) // 2 + 1, True
        else:
            raise ValueError(f"stride {s}: use same_pads_any_stride")
        pads[:0] = [before, after]  # F.pad lists the last dimension first
        narrow.append(cut)
    return pads, narrow


def same_pads_any_stride(height: int, width: int, kernel: Tuple[int, int], stride: Tuple[int, int],
                         dilation: Tuple[int, int]) -> List[int]:
    """``F.pad`` list of TF 'SAME' for any stride, worked out from the input's size:
    ``total = (-n) mod s + span - s``, TF's formula for ``span >= s`` without a ``max``, so torch.fx
    and torch.jit.script trace it (torch.export does too, though the sizes it derives may differ in
    form between branches; strides 1 and 2 take :func:`same_pads`)."""
    pads: List[int] = []
    for n, k, s, d in [(height, kernel[0], stride[0], dilation[0]), (width, kernel[1], stride[1], dilation[1])]:
        span = (k - 1) * d + 1
        total = 0 if span == 1 else (-n) % s + span - s
        pads = [total // 2, total - total // 2] + pads
    return pads


def parity_pads(pads: List[int], narrow: List[bool], height: int, width: int) -> List[int]:
    """The ``F.pad`` list for this input: a narrowed dimension pads ``(p - 1 + n % 2, p + 1 - n % 2)``
    (see :func:`same_pads`): always ``2p`` in all, so the padded size is ``n + 2p`` by one formula,
    in one copy of the input."""
    left, right, top, bottom = pads[0], pads[1], pads[2], pads[3]
    if narrow[1]:
        odd = width % 2
        left, right = left - 1 + odd, right - odd
    if narrow[0]:
        odd = height % 2
        top, bottom = top - 1 + odd, bottom - odd
    return [left, right, top, bottom]


@contextmanager
def traceable_padding() -> Iterator[None]:
    """Kept for code written against earlier releases: the padding is now traceable everywhere,
    so this block changes nothing."""
    yield


def is_traceable() -> bool:
    """Always True: every padding layer traces exactly (see the module docstring)."""
    return True


def _pair(v: int | tuple[int, int]) -> Tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _check_mode(padding: str) -> None:
    if padding not in PADDING_MODES:
        raise ValueError(f"unknown padding mode {padding!r}; use one of {PADDING_MODES}")


def _plan(padding: str, kernel: Tuple[int, int], stride: Tuple[int, int], dilation: Tuple[int, int]
          ) -> Tuple[str, Tuple[int, int], List[int], List[bool]]:
    """How a layer pads: ``"native"`` (the op's own symmetric padding ``(ph, pw)``), ``"same"`` (a
    fixed ``F.pad`` and the parity narrowing of :func:`same_pads`) or ``"any_stride"``
    (:func:`same_pads_any_stride`, for strides above 2)."""
    spans = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
    unused: Tuple[List[int], List[bool]] = ([0, 0, 0, 0], [False, False])  # TorchScript types attributes by value
    if padding == "valid":
        return ("native", (0, 0)) + unused
    if padding == "symmetric":
        return ("native", ((spans[0] - 1) // 2, (spans[1] - 1) // 2)) + unused
    if any(s > 2 for s in stride):
        for sp, s in zip(spans, stride):
            if 1 < sp < s:
                raise ValueError(f"TF 'SAME' padding needs a kernel span (k - 1) * d + 1 of 1 or at least the stride; "
                                 f"got span {sp}, stride {s}")
        return ("any_stride", (0, 0)) + unused
    pads, narrow = same_pads(kernel, stride, dilation)
    if not any(narrow) and pads[0] == pads[1] and pads[2] == pads[3]:  # symmetric after all
        return ("native", (pads[2], pads[0])) + unused
    return "same", (0, 0), pads, narrow


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
        mode, native, pads, narrow = _plan(padding, k, s, d)
        super().__init__(in_channels, out_channels, k, s, native, d, groups, bias)
        self.pad_mode = mode
        self.same_pads, self.same_narrow = pads, narrow

    def pad_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` padded as TF 'SAME' pads it where the convolution's own padding cannot."""
        if self.pad_mode == "same":
            return F.pad(x, parity_pads(self.same_pads, self.same_narrow, x.shape[-2], x.shape[-1]))
        if self.pad_mode == "any_stride":
            return F.pad(x, same_pads_any_stride(x.shape[-2], x.shape[-1], self.kernel_size, self.stride, self.dilation))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.pad_input(x), self.weight, self.bias)


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
        k, s = (kernel_size, kernel_size), (stride, stride)
        self.pad_mode, native, self.same_pads, self.same_narrow = _plan(padding, k, s, (1, 1))
        self.native_padding = kernel_size // 2 if padding == "symmetric" else native[0]

    def _padded_pool(self, x: torch.Tensor, pads: List[int]) -> torch.Tensor:
        """Pool ``x`` padded explicitly by ``pads``; averages count real pixels only."""
        k, s = self.kernel_size, self.stride
        if self.kind == "max":
            return F.max_pool2d(F.pad(x, pads, value=float("-inf")), k, s)
        # The window sum over the real pixels, divided by their count (a pool of padded ones).
        ones = torch.ones([1, 1, x.shape[-2], x.shape[-1]], dtype=x.dtype, device=x.device)
        return F.avg_pool2d(F.pad(x, pads), k, s) / F.avg_pool2d(F.pad(ones, pads), k, s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size, self.stride
        if self.pad_mode == "same":
            return self._padded_pool(x, parity_pads(self.same_pads, self.same_narrow, x.shape[-2], x.shape[-1]))
        if self.pad_mode == "any_stride":
            return self._padded_pool(x, same_pads_any_stride(x.shape[-2], x.shape[-1], (k, k), (s, s), (1, 1)))
        p = self.native_padding
        if self.kind == "max":
            return F.max_pool2d(x, k, s, p)
        return F.avg_pool2d(x, k, s, p, count_include_pad=False)

    def extra_repr(self) -> str:
        return f"{self.kind}, kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding!r}"
