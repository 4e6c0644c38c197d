"""Convolutions with their weights laid out once, ahead of time, for oneDNN's CPU kernels.

An eager ``nn.Conv2d`` hands oneDNN a plain ``OIHW`` weight on every call, which oneDNN reorders
into the blocked layout its kernels read (and, single-threaded with a batch under 16, PyTorch sends
every 1x1 convolution to its own slower GEMM path instead). NASNet-A mobile runs 350 small
convolutions per image, so those per-call costs add up. :class:`PrepackedConv2d` reorders a frozen
convolution's weight once (on the first CPU call, for that call's input shape; other shapes reuse
it) and runs oneDNN's pointwise-fused convolution, optionally with the ReLU that follows it fused in
(the first pointwise convolution of every separable stack feeds the second's ReLU).

This is the kernel selection ``torch.compile`` makes on the CPU, without the compile. It needs
PyTorch's oneDNN build (``torch.backends.mkldnn.is_available()``): elsewhere, off the CPU, in
other dtypes and under any tracer, the module runs the plain convolution it wraps, so the same
module exports and traces as before. The reordered weight is a cache: it is not in
``state_dict()``, is dropped by ``copy.deepcopy``, and is rebuilt if the weight changes in place.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .padding import Conv2dSame, parity_pads

__all__ = ["PrepackedConv2d", "capturing", "prepack_convolutions", "prepacking_available"]

logger = logging.getLogger(__name__)


def prepacking_available() -> bool:
    """Whether this PyTorch build has oneDNN's weight reorder and pointwise-fused convolution."""
    return (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
            and hasattr(torch._C._nn, "mkldnn_reorder_conv2d_weight"))


def capturing(x: object = None) -> bool:
    """Whether this call is being captured rather than run: ``torch.jit`` tracing or scripting,
    ``torch.compile``, ``torch.export``, or an input ``x`` that is not a plain tensor (the proxy of a
    ``torch.fx`` symbolic trace, the fake or functional tensors of an export). Then a module should
    run its plain code, which the capture can record; its eager shortcuts are for running. Cheap
    (well under a microsecond): convolutions ask it on every call."""
    if x is not None and type(x) is not torch.Tensor:
        return True
    return (torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling()
            or torch.compiler.is_exporting())


class PrepackedConv2d(nn.Module):
    """``conv`` (an ``nn.Conv2d`` or :class:`~.padding.Conv2dSame`, frozen, for inference), then
    ReLU when ``relu``; its weight reordered for oneDNN on the first CPU float32 call."""

    def __init__(self, conv: nn.Conv2d, *, relu: bool = False) -> None:
        super().__init__()
        if conv.padding_mode != "zeros":
            raise ValueError(f"only zero-padded convolutions can be prepacked, not padding_mode={conv.padding_mode!r}")
        self.conv = conv
        self.relu = relu
        self._packed: tuple[Any, torch.Tensor] | None = None  # (key, reordered weight)

    def _pad(self, x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """``x`` ready for the convolution, and the padding the kernel adds itself. TF 'SAME' on a
        stride-2 layer pads an odd input symmetrically (see :func:`~.padding.same_pads`), which the
        kernel does without copying ``x`` into a padded tensor."""
        c = self.conv
        if not isinstance(c, Conv2dSame):
            return x, list(c.padding)
        if c.pad_mode == "same":
            left, right, top, bottom = parity_pads(c.same_pads, c.same_narrow, x.shape[-2], x.shape[-1])
            if left == right and top == bottom:
                return x, [top, left]
        return c.pad_input(x), list(c.padding)

    def _weight_for(self, x: torch.Tensor) -> torch.Tensor | None:
        weight = self.conv.weight
        if x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32 or x.dim() != 4:
            return None
        key = (weight.data_ptr(), weight._version)
        if self._packed is None or self._packed[0] != key:
            c = self.conv
            with torch.no_grad():
                packed = torch._C._nn.mkldnn_reorder_conv2d_weight(
                    weight.detach().contiguous().to_mkldnn(), list(c.padding), list(c.stride), list(c.dilation),
                    c.groups, list(x.shape))
            self._packed = (key, packed)
        return self._packed[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if capturing(x) or x.requires_grad else self._weight_for(x)
        if weight is None:
            y = self.conv(x)
            return F.relu(y) if self.relu else y
        c = self.conv
        bias = None if c.bias is None else c.bias.detach()
        x, padding = self._pad(x)
        return torch.ops.mkldnn._convolution_pointwise(
            x, weight, bias, padding, list(c.stride), list(c.dilation), c.groups, "relu" if self.relu else "none",
            [], "")

    def __deepcopy__(self, memo: dict) -> "PrepackedConv2d":
        clone = PrepackedConv2d(copy.deepcopy(self.conv, memo), relu=self.relu)
        clone.train(self.training)
        return clone

    def _apply(self, fn, recurse: bool = True):  # .to(), .float(), ...: the cache is for the old tensors
        self._packed = None
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return "relu=True" if self.relu else ""


def prepack_convolutions(model: nn.Module) -> int:
    """Replace, in place, every 2-D convolution of ``model`` by a :class:`PrepackedConv2d`, fusing
    the ReLU that directly follows a convolution in an ``nn.Sequential`` (``nn.Identity`` between
    them, such as a folded BatchNorm, is skipped). Returns how many convolutions were wrapped; 0,
    changing nothing, where :func:`prepacking_available` is false. For frozen inference copies
    only: gradients do not flow through the reordered weights."""
    if not prepacking_available():
        logger.info("this PyTorch has no oneDNN weight prepacking; convolutions left as they are")
        return 0
    wrapped = 0
    for module in list(model.modules()):
        if isinstance(module, PrepackedConv2d):
            continue
        names = list(module._modules)
        for i, name in enumerate(names):
            child = module._modules[name]
            if type(child) not in (nn.Conv2d, Conv2dSame) or child.padding_mode != "zeros":
                continue
            relu = None
            if isinstance(module, nn.Sequential):
                j = i + 1
                while j < len(names) and isinstance(module._modules[names[j]], nn.Identity):
                    j += 1
                if j < len(names) and type(module._modules[names[j]]) is nn.ReLU:
                    relu = names[j]
            module._modules[name] = PrepackedConv2d(child, relu=relu is not None)
            if relu is not None:
                module._modules[relu] = nn.Identity()
            wrapped += 1
    return wrapped
