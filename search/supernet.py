"""The one-shot supernet of weight-sharing search (ENAS, Pham et al., 2018) over :class:`SearchSpace`.

Every cell of the supernet holds, for every block and side, one module per candidate op; a
genotype runs as a sub-network in which only its chosen ops execute. An op's weights are shared
by every input it may read that has the same shape (the two cell inputs, or the earlier blocks),
as ENAS shares a node's weights across its input choices.

The sub-network is exactly the network :func:`~nasnet_backbones.build_nasnet` builds for the same
genotype with a CIFAR stem: :meth:`Supernet.subnet_state_dict` gives that network's weights, so a
cell found with shared weights can be exported, fine-tuned or compared as an ordinary model. What
varies with the genotype is how many block outputs a cell concatenates; the layers that read a
concatenation (the next cells' 1x1 projections, factorized reductions, the classifier) hold
weights for all ``B`` blocks and see the unused ones as zeros, which is the standalone layer on
the blocks that are there.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from nasnet_backbones.genotype import CellSpec, Genotype
from nasnet_backbones.nasnet import cell_links, nasnet_config
from nasnet_backbones.ops import FactorizedReduction, OpContext, ReLUConvBN, build_op
from nasnet_backbones.padding import Conv2dSame

from .space import SearchSpace, SearchSpaceError

__all__ = ["Supernet"]


class _CellOutput:
    """A cell's block outputs and which of them the cell concatenates (or a fixed tensor: the stem)."""

    def __init__(self, blocks: list[torch.Tensor] | None, concat: tuple[int, ...] = (), fixed: torch.Tensor | None = None):
        self.blocks, self.concat, self.fixed = blocks, concat, fixed

    def masked(self) -> torch.Tensor:
        """All block outputs, the unused ones zeroed: what a layer with weights for every block reads."""
        if self.fixed is not None:
            return self.fixed
        used = {i - 2 for i in self.concat}
        return torch.cat([b if k in used else torch.zeros_like(b) for k, b in enumerate(self.blocks)], 1)

    def selected(self) -> torch.Tensor:
        """The cell's real output: its concatenated states."""
        if self.fixed is not None:
            return self.fixed
        return torch.cat([self.blocks[i - 2] for i in self.concat], 1)

    @property
    def channels(self) -> int:
        return self.fixed.shape[1] if self.fixed is not None else len(self.concat) * self.blocks[0].shape[1]


def _columns(concat: tuple[int, ...], width: int) -> torch.Tensor:
    """Input-channel indices of the concatenated states among all ``B`` blocks of ``width`` each."""
    return torch.cat([torch.arange((i - 2) * width, (i - 1) * width) for i in concat])


class SuperCell(nn.Module):
    """All candidate ops of one cell position, plus its input projections."""

    def __init__(self, space: SearchSpace, reduction: bool, filters: int, x: tuple[int, int, bool],
                 prev: tuple[int, int, bool] | None, ctx: OpContext) -> None:
        """``x`` and ``prev``: (channels of all B blocks or of a fixed input, stride, fixed?)."""
        super().__init__()
        self.space, self.reduction, self.filters = space, reduction, filters
        x_channels, x_stride, _ = x
        self.preprocess = ReLUConvBN(x_channels, filters, 1, 1, ctx)
        self.prev_mode = "raw" if prev is None else "reduce" if prev[1] < x_stride else "project"
        if prev is not None:
            width = prev[0]
            self.preprocess_prev: nn.Module = (FactorizedReduction(width, filters, ctx, relu=True)
                                               if self.prev_mode == "reduce" else ReLUConvBN(width, filters, 1, 1, ctx))
            self.prev_fixed = prev[2]
        stride = 2 if reduction else 1
        state1 = x_channels if prev is None else filters  # a raw state 1 is the (fixed) stem output
        kinds = {0: (filters, stride), 1: (state1, stride), 2: (filters, 1)}  # state 0, state 1, block outputs
        self.ops = nn.ModuleDict()
        for b in range(space.num_blocks):
            for side in (0, 1):
                for op in space.ops:
                    for c_in, op_stride in sorted(set(kinds.values())):
                        self.ops[self._key(b, side, op, c_in, op_stride)] = build_op(op, c_in, filters, op_stride, ctx)
        self._kinds = kinds

    @staticmethod
    def _key(block: int, side: int, op: str, c_in: int, stride: int) -> str:
        return f"b{block}_s{side}_{op}_c{c_in}_s{stride}"

    def op_key(self, block: int, side: int, op: str, state: int) -> str:
        c_in, stride = self._kinds[min(state, 2)]
        return self._key(block, side, op, c_in, stride)

    def prev_is_identity(self, prev_channels: int | None) -> bool:
        """The standalone cell passes state 1 through when widths and strides already match."""
        return self.prev_mode == "project" and prev_channels == self.filters

    def forward(self, spec: CellSpec, x: _CellOutput, prev: _CellOutput | None) -> _CellOutput:
        h0 = self.preprocess(x.masked())
        if self.prev_mode == "raw":
            h1 = x.selected()
        elif self.prev_is_identity(prev.channels):
            h1 = prev.selected()
        else:
            h1 = self.preprocess_prev(prev.masked())
        states = [h0, h1]
        for b, block in enumerate(spec.blocks):
            out = None
            for side, (op, i) in enumerate(zip(block.ops, block.inputs)):
                y = self.ops[self.op_key(b, side, op, i)](states[i])
                out = y if out is None else out + y
            states.append(out)
        return _CellOutput(states[2:], tuple(spec.concat))


class Supernet(nn.Module):
    """All sub-networks of ``space`` at ``num_cells`` normal cells (3 stacks) of base width
    ``num_filters``, with the CIFAR stem; ``forward(x, genotype)`` runs one of them."""

    def __init__(self, space: SearchSpace, num_cells: int, num_filters: int, num_classes: int = 10,
                 **config: Any) -> None:
        super().__init__()
        if space.combine_ops != ("add",):
            raise SearchSpaceError("weight-sharing search needs 'add' as the only combine op (a concatenating block "
                                   "changes the width every later op reads); use --combine add")
        self.config = nasnet_config(num_cells, num_filters, "cifar", **config)
        c = self.config
        if c.drop_path_prob or c.aux_head or c.stem_prev != "raw":
            raise ValueError("the supernet has no drop path or auxiliary head and reads the raw stem output")
        self.space = space
        ctx = OpContext(c.padding, c.bn_eps, c.bn_momentum)
        stem_filters = c.stem_filters or int(c.num_filters * c.stem_multiplier)
        self.stem = nn.Sequential(OrderedDict(conv=Conv2dSame(3, stem_filters, 3, padding=c.padding),
                                              bn=ctx.bn(stem_filters)))
        self.links = cell_links(c)
        blocks = space.num_blocks
        widths: list[tuple[int, int, bool]] = [(stem_filters, 1, True)]  # per output position
        self.cells = nn.ModuleDict()
        for link in self.links:
            x = widths[link.input]
            prev = None if link.prev is None else widths[link.prev]
            self.cells[link.name] = SuperCell(space, link.reduction, link.filters, x, prev, ctx)
            widths.append((blocks * link.filters, x[1] * (2 if link.reduction else 1), False))
        self.last_width = self.links[-1].filters
        self.classifier = nn.Linear(blocks * self.last_width, num_classes)

    def forward(self, x: torch.Tensor, genotype: Genotype) -> torch.Tensor:
        outs: list[_CellOutput] = [_CellOutput(None, fixed=self.stem(x))]
        for link in self.links:
            spec = genotype.reduce if link.reduction else genotype.normal
            prev = None if link.prev is None else outs[link.prev]
            outs.append(self.cells[link.name](spec, outs[link.input], prev))
        features = torch.relu(outs[-1].masked())  # the standalone head: ReLU, global pool, linear
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(features, 1), 1))

    def subnet_state_dict(self, genotype: Genotype) -> dict[str, torch.Tensor]:
        """The weights of ``build_nasnet(genotype, num_cells, num_filters, stem="cifar", num_classes)``
        as this supernet holds them (tensors are copies)."""
        self.space.encode(genotype)  # refuses genotypes outside the space
        out: dict[str, torch.Tensor] = {}

        def copy(prefix: str, module: nn.Module, columns: torch.Tensor | None = None) -> None:
            for name, tensor in module.state_dict().items():
                if columns is not None and tensor.ndim >= 2:  # conv weights; BN tensors are 1-D
                    tensor = tensor[:, columns]
                out[f"{prefix}{name}"] = tensor.clone()

        copy("stem.", self.stem)
        concat_of: list[tuple[tuple[int, ...], int] | None] = [None]  # per position: (concat, block width)
        for link in self.links:
            spec = genotype.reduce if link.reduction else genotype.normal
            cell: SuperCell = self.cells[link.name]
            prefix = f"cells.{link.name}."
            x_concat = concat_of[link.input]
            copy(prefix + "preprocess.", cell.preprocess, None if x_concat is None else _columns(*x_concat))
            if link.prev is not None:
                p_concat = concat_of[link.prev]
                channels = None if p_concat is None else len(p_concat[0]) * p_concat[1]
                if not cell.prev_is_identity(channels):
                    copy(prefix + "preprocess_prev.", cell.preprocess_prev,
                         None if p_concat is None else _columns(*p_concat))
            for b, block in enumerate(spec.blocks):
                for side, (op, i) in enumerate(zip(block.ops, block.inputs)):
                    copy(f"{prefix}blocks.{b}.{('left', 'right')[side]}.", cell.ops[cell.op_key(b, side, op, i)])
            concat_of.append((tuple(spec.concat), link.filters))
        last = concat_of[-1]
        out["classifier.weight"] = self.classifier.weight[:, _columns(*last)].clone()
        out["classifier.bias"] = self.classifier.bias.clone()
        return out
