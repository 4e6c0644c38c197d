"""``torch.distributed`` set-up for training launched by ``torchrun``; a single process otherwise.

``torchrun --nproc-per-node 8 -m nasnet_backbones.cli train ...`` sets ``WORLD_SIZE``/``RANK``/
``LOCAL_RANK``; each process then drives one GPU (NCCL), or CPU processes talk over Gloo. Nothing
here is needed, or touched, for a plain single-process run.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistContext", "init_distributed", "all_reduce_sum", "barrier"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str) -> DistContext:
    """Join the process group when launched by torchrun; pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext(0, 1, 0, torch.device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = str(device).startswith("cuda")
    if use_cuda:
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for, but CUDA is not available; use --device cpu (Gloo)")
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    ctx = DistContext(rank, world_size, local_rank, torch.device(f"cuda:{local_rank}" if use_cuda else "cpu"))
    logger.info("distributed: rank %d of %d on %s", rank, world_size, ctx.device)
    return ctx


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum over processes (moved to this process's device for NCCL, returned on the CPU)."""
    if ctx.enabled:
        tensor = tensor.to(ctx.device, copy=True)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()
