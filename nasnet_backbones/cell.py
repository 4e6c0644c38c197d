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
        # (state, its adjustment or None), resolved once rather than per forward
        self._concat_plan = [(i, self.concat_adjust[str(i)] if str(i) in self.concat_adjust else None) for i in self.concat]
        self.out_shape = StateShape(len(self.concat) * final.channels, out_stride)
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor, prev: torch.Tensor | None = None) -> torch.Tensor:
        h0 = self.preprocess(x)
        h1 = self.preprocess_prev(x if self.prev_is_raw else prev)
        states = [h0, h1]
        drop = self.drop_path
        for block in self.blocks:
            i, j = block.inputs
            a = block.left(states[i])
            b = block.right(states[j])
            if block.drop[0]:
                a = drop(a)
            if block.drop[1]:
                b = drop(b)
            states.append(torch.cat([a, b], 1) if block.concat else a + b)
        return torch.cat([adjust(states[i]) if adjust is not None else states[i] for i, adjust in self._concat_plan], 1)
