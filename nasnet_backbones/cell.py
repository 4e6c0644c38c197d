"""A cell module decoded from a :class:`~nasnet_backbones.genotype.CellSpec`.

Follows TF-slim's ``NasNetABaseCell``: the input gets ReLU-1x1 conv-BN (hidden state 0); the
previous cell's output is matched to it (state 1: a factorized reduction when its resolution is
higher, ReLU-1x1 conv-BN when only its width differs, or the raw input when there is no previous
cell); each block applies its two ops (strided only when they read state 0 or 1 of a reduction
cell), combines them, and appends the result; the listed states are brought to the last block's
shape (factorized reduction, no ReLU) and concatenated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from .drop_path import ScheduledDropPath
from .genotype import CellSpec
from .ops import FactorizedReduction, OpContext, ReLUConvBN, build_op

__all__ = ["Cell", "StateShape"]


@dataclass(frozen=True)
class StateShape:
    channels: int
    stride: int  # relative to the network input


class BlockModule(nn.Module):
    def __init__(self, left: nn.Module, right: nn.Module, inputs: tuple[int, int], combine: str, drop: tuple[bool, bool]):
        super().__init__()
        self.left, self.right = left, right
        self.inputs = inputs
        self.concat = combine == "concat"
        self.drop = drop


class Cell(nn.Module):
    """One cell. ``forward(x, prev)``; ``prev`` is ignored when the cell reads its raw input."""

    def __init__(
        self,
        spec: CellSpec,
        x: StateShape,
        prev: StateShape | None,
        filters: int,
        reduction: bool,
        ctx: OpContext,
        drop_path: ScheduledDropPath,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.reduction = reduction
        stride = 2 if reduction else 1
        self.preprocess = ReLUConvBN(x.channels, filters, 1, 1, ctx)
        self.prev_is_raw = prev is None
        if prev is None:  # TF: no previous layer -> state 1 is this cell's raw input
            self.preprocess_prev: nn.Module = nn.Identity()
            prev_state = x
        elif prev.stride < x.stride:
            if prev.stride * 2 != x.stride:
                raise ValueError(f"previous cell is at stride {prev.stride}, input at {x.stride}: more than one reduction apart")
            self.preprocess_prev = FactorizedReduction(prev.channels, filters, ctx, relu=True)
            prev_state = StateShape(filters, x.stride)
        elif prev.channels != filters:
            self.preprocess_prev = ReLUConvBN(prev.channels, filters, 1, 1, ctx)
            prev_state = StateShape(filters, x.stride)
        else:
            self.preprocess_prev = nn.Identity()
            prev_state = prev

        states = [StateShape(filters, x.stride), prev_state]
        out_stride = x.stride * stride
        self.blocks = nn.ModuleList()
        for block in spec.blocks:
            ops, drops = [], []
            for name, idx in zip(block.ops, block.inputs):
                op_stride = stride if idx < 2 else 1
                op = build_op(name, states[idx].channels, filters, op_stride, ctx)
                ops.append(op)
                # TF skips drop path for 'none' (identity) ops, strided or not; DARTS for nn.Identity.
                drops.append(name != "identity" and not isinstance(op, nn.Identity))
            width = 2 * filters if block.combine == "concat" else filters
            self.blocks.append(BlockModule(ops[0], ops[1], block.inputs, block.combine, tuple(drops)))
            states.append(StateShape(width, out_stride))

        final = states[-1]
        self.concat = tuple(spec.concat)
        self.concat_adjust = nn.ModuleDict()
        for idx in self.concat:
            s = states[idx]
            if s.stride != final.stride or s.channels != final.channels:
                self.concat_adjust[str(idx)] = FactorizedReduction(
                    s.channels, final.channels, ctx, stride=final.stride // s.stride, relu=False
                )
        self.out_shape = StateShape(len(self.concat) * final.channels, out_stride)
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor, prev: Optional[torch.Tensor] = None) -> torch.Tensor:
        # Written for every tracer as well as eager: loops over module containers and constant
        # attributes only (torch.jit.script unrolls them; torch.fx and torch.export see Python).
        h0 = self.preprocess(x)
        if self.prev_is_raw or prev is None:
            if not self.prev_is_raw:
                raise ValueError("this cell reads the previous cell's output; pass it as prev")
            h1 = self.preprocess_prev(x)
        else:
            h1 = self.preprocess_prev(prev)
        states = [h0, h1]
        for block in self.blocks:
            a = block.left(states[block.inputs[0]])
            b = block.right(states[block.inputs[1]])
            if block.drop[0]:
                a = self.drop_path(a)
            if block.drop[1]:
                b = self.drop_path(b)
            states.append(torch.cat([a, b], 1) if block.concat else a + b)
        for key, adjust in self.concat_adjust.items():  # bring earlier states to the last one's shape
            states[int(key)] = adjust(states[int(key)])
        return torch.cat([states[i] for i in self.concat], 1)
