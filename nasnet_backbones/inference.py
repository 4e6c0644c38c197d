"""A fast eager model for inference: BatchNorm folded into the convolutions, channels_last memory
and, optionally, ``torch.compile``.

In eval mode a BatchNorm after a convolution is an affine map per output channel, so it can be
folded into that convolution's weights and bias (``w' = w * g / sqrt(v + eps)``,
``b' = (b - m) * g / sqrt(v + eps) + beta``): one pass over the activations instead of two. Every
NASNet op is ReLU -> conv -> BN, so every BatchNorm of a network goes. A factorized reduction's
BatchNorm follows the concatenation of its two 1x1 paths and folds into each path's channels.
channels_last lets oneDNN's convolutions run without layout reorders between layers.

Folding is exact up to float rounding (the tests hold it to 1e-5 relative at several input sizes).
Only BatchNorm layers in eval mode are folded; detectron2's and torchvision's ``FrozenBatchNorm2d``
(the same affine map, fixed) are recognised by their buffers, without importing either library.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from .nasnet import AuxHead
from .ops import FactorizedReduction
from .prepacked import prepack_convolutions

__all__ = ["fold_batchnorm", "optimize_for_inference"]

logger = logging.getLogger(__name__)


def _is_norm(module: nn.Module) -> bool:
    """An eval-mode BatchNorm2d, or a frozen BatchNorm (fixed weight, bias, running statistics, eps)."""
    if isinstance(module, nn.BatchNorm2d):
        return module.track_running_stats and module.running_mean is not None and module.affine
    return (type(module).__name__ == "FrozenBatchNorm2d"
            and all(isinstance(getattr(module, a, None), torch.Tensor) for a in ("weight", "bias", "running_mean",
                                                                               "running_var")))


def _fold(conv: nn.Conv2d, norm: nn.Module, channels: slice = slice(None)) -> None:
    """Fold ``norm``'s channels ``channels`` into ``conv`` (whose outputs they are), in place."""
    weight, bias = fuse_conv_bn_weights(
        conv.weight, conv.bias, norm.running_mean[channels], norm.running_var[channels], float(norm.eps),
        norm.weight[channels], norm.bias[channels])
    conv.weight, conv.bias = weight, bias


def fold_batchnorm(model: nn.Module) -> int:
    """Fold, in place, every BatchNorm that directly follows a convolution in an ``nn.Sequential``,
    every factorized reduction's and the auxiliary head's BatchNorms, into the convolutions; the BatchNorm becomes
    ``nn.Identity``. Returns how many were folded. The model must be in eval mode."""
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode (call model.eval() first)")
    folded = 0
    with torch.no_grad():
        for module in list(model.modules()):
            if isinstance(module, nn.Sequential):
                names = list(module._modules)
                for first, second in zip(names, names[1:]):
                    conv, norm = module._modules[first], module._modules[second]
                    if isinstance(conv, nn.Conv2d) and _is_norm(norm):
                        _fold(conv, norm)
                        module._modules[second] = nn.Identity()
                        folded += 1
            elif isinstance(module, FactorizedReduction) and _is_norm(module.bn):
                if module.strided:  # bn(cat(path1, path2)): each path's channels fold into its conv
                    split = module.path1.out_channels
                    _fold(module.path1, module.bn, slice(0, split))
                    _fold(module.path2, module.bn, slice(split, None))
                else:
                    _fold(module.conv, module.bn)
                module.bn = nn.Identity()
                folded += 1
            elif isinstance(module, AuxHead):
                for conv, norm in (("proj", "bn0"), ("conv", "bn1")):
                    if _is_norm(getattr(module, norm)):
                        _fold(getattr(module, conv), getattr(module, norm))
                        setattr(module, norm, nn.Identity())
                        folded += 1
    return folded


def optimize_for_inference(model: nn.Module, *, channels_last: bool = True, compile: bool = False,
                           prepack: bool = True) -> nn.Module:
    """An eval-mode copy of ``model`` for inference: BatchNorm folded (:func:`fold_batchnorm`),
    weights and inputs in channels_last (``channels_last=True``), convolution weights reordered once
    for oneDNN with the ReLUs after them fused (``prepack=True``, see :mod:`.prepacked`; on the CPU,
    where PyTorch has oneDNN), and wrapped in ``torch.compile`` (``compile=True``: a one-time
    compile, tens of seconds on a CPU, then faster calls; it selects such kernels itself, so it
    replaces prepacking). Outputs equal the original's within float rounding at any valid input
    size; ``model`` is unchanged.
    The copy is for inference only: its BatchNorms are gone, so do not train it."""
    fast = copy.deepcopy(model).eval()
    count = fold_batchnorm(fast)
    remaining = sum(1 for m in fast.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
    logger.info("folded %d BatchNorm layers into convolutions (%d left unfolded)", count, remaining)
    for p in fast.parameters():
        p.requires_grad_(False)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
        fast.register_forward_pre_hook(_to_channels_last)
    if prepack and not compile:
        logger.info("prepacked %d convolutions for oneDNN", prepack_convolutions(fast))
    if compile:
        fast = torch.compile(fast)
    return fast


def _to_channels_last(module: nn.Module, args: tuple) -> tuple:
    if args and isinstance(args[0], torch.Tensor) and args[0].dim() == 4:
        return (args[0].contiguous(memory_format=torch.channels_last),) + tuple(args[1:])
    return args
