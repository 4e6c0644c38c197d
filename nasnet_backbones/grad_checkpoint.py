"""Gradient checkpointing of one cell, exact in gradients and in BatchNorm statistics.

``torch.utils.checkpoint`` frees a cell's activations after its forward pass and recomputes them in
the backward pass. Two things must not change: the recomputation has to draw the same drop-path
masks (checkpoint restores the RNG state it saved), and it must not update BatchNorm's running
statistics a second time, which plain checkpointing does (the running mean would move twice per
step). The recomputation here runs with every BatchNorm's momentum at zero, which keeps the
running statistics exactly as the first pass left them, and restores its batch counter.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Iterator, Optional

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["checkpoint_cell", "frozen_batchnorm_statistics"]


@contextmanager
def frozen_batchnorm_statistics(module: nn.Module) -> Iterator[None]:
    """Within this block, BatchNorm layers of ``module`` normalise with batch statistics as usual
    in training but leave their running statistics and batch counters unchanged."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: unchanged, exactly
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


def checkpoint_cell(cell: nn.Module, x: torch.Tensor, prev: Optional[torch.Tensor]) -> torch.Tensor:
    """``cell(x, prev)``, keeping no activations for the backward pass (they are recomputed)."""

    def contexts():
        return nullcontext(), frozen_batchnorm_statistics(cell)

    return checkpoint(cell, x, prev, use_reentrant=False, context_fn=contexts)
