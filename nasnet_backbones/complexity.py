"""Parameter and mult-add counts, as the papers report them.

Mult-adds count convolutions and fully connected layers (the papers' convention) with fvcore's
``FlopCountAnalysis``, whose "flop" is one multiply-add. Parameters exclude the auxiliary head,
which exists only in training. fvcore comes with the ``tools`` extra
(``pip install 'nasnet-backbones[tools]'``); counting parameters needs nothing more than torch.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

from .errors import missing_dependency

__all__ = ["count_params", "count_madds"]

_MADD_OPERATORS = ("conv", "linear", "addmm", "matmul", "bmm")


def count_params(model: nn.Module, include_aux: bool = False) -> int:
    return sum(
        p.numel() for name, p in model.named_parameters() if include_aux or not name.startswith("aux_head.")
    )


def count_madds(model: nn.Module, img_size: int, in_chans: int = 3) -> int:
    """Multiply-adds of convs and linear layers for one ``img_size`` x ``img_size`` image, in eval mode."""
    with warnings.catch_warnings():  # fvcore's import touches the deprecated torch.jit.script
        warnings.simplefilter("ignore", FutureWarning)
        try:
            from fvcore.nn import FlopCountAnalysis
        except ImportError as exc:  # an extra, not a base dependency
            raise missing_dependency(exc, extra="tools", needed_for="counting mult-adds") from None

    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, in_chans, img_size, img_size)
        analysis = FlopCountAnalysis(model, x)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        logging.getLogger("fvcore").setLevel(logging.ERROR)
        by_op = analysis.by_operator()
        return int(sum(by_op.get(op, 0) for op in _MADD_OPERATORS))
    finally:
        model.train(was_training)
