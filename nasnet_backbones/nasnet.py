"""The NASNet network: stems, stacks of cells, auxiliary head and classifier (Zoph et al., 2018, Sec. 3).

``N @ F`` networks stack three groups of ``N`` normal cells with a reduction cell between groups;
``F`` (``num_filters``) is the width of the first group's cells, doubled at each reduction. The
network follows TF-slim ``nasnet.py: _build_nasnet_base`` and, with ``reductions_in_num_cells``,
``pnasnet.py: _build_pnasnet_base``. The same builder takes the DARTS macro through three switches
(``stem_prev="stem"``, ``aux_position="after_second_reduction"``, ``head_relu=False``).

The layout (which cell reads which earlier output, its width and stride) is worked out once in
``__init__``; ``forward`` only walks it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

from .cell import Cell, StateShape
from .drop_path import ScheduledDropPath
from .grad_checkpoint import checkpoint_cell
from .genotype import Genotype
from .ops import OpContext
from .padding import PADDING_MODES, Conv2dSame
from .pretrained_cfg import PretrainedCfg

__all__ = ["NASNetConfig", "NASNet", "NASNetOutputs", "CellLink", "build_nasnet", "nasnet_config", "stack_config",
           "NUM_STACKS", "GLOBAL_POOLS", "calc_reduction_layers", "cell_links", "split_model_kwargs",
           "stage_sizes"]

logger = logging.getLogger(__name__)

#: The head's global pooling (timm's ``global_pool`` names): "fast" is the average as well; ""
#: keeps the map (only with ``num_classes=0``).
GLOBAL_POOLS = ("avg", "fast", "max", "avgmax", "")


@dataclass(frozen=True)
class NASNetConfig:
    """Macro-architecture hyper-parameters (TF-slim ``*_config()`` names where they exist)."""

    num_cells: int = 12  # normal cells, 3 stacks of N (PNASNet: all cells, see reductions_in_num_cells)
    num_filters: int = 44  # F: width of the first stack's cells
    stem: str = "imagenet"  # "imagenet": 3x3/2 VALID conv + two reduction cells; "cifar": 3x3 conv
    stem_multiplier: float = 1.0
    stem_filters: int | None = None  # conv stem width; default int(32 * m) (imagenet), int(F * m) (cifar)
    num_stem_cells: int = 2  # imagenet stem only
    filter_scaling_rate: float = 2.0
    num_reduction_layers: int = 2
    reductions_in_num_cells: bool = False  # PNASNet: the strided cells count among num_cells
    skip_reduction_layer_input: bool = False  # TF-slim: the cell after a reduction reads the reduction's prev
    stem_prev: str = "raw"  # first cell's state 1: "raw" input (TF) or the projected stem output (DARTS)
    padding: str = "same"  # "same" (TF, exact at any size) or "symmetric" (PyTorch, DARTS)
    bn_eps: float = 1e-3
    bn_momentum: float = 0.0003  # torch momentum = 1 - TF decay
    drop_path_prob: float = 0.0  # 1 - drop_path_keep_prob
    drop_path_scale_by_depth: bool = True  # TF v3 scales by cell depth; DARTS does not
    dropout: float = 0.0  # 1 - dense_dropout_keep_prob
    aux_head: bool = False
    aux_position: str = "before_second_reduction"  # TF; DARTS: "after_second_reduction"
    aux_channels: tuple[int, int] = (128, 768)
    head_relu: bool = True

    def __post_init__(self) -> None:
        checks = [
            (self.num_cells >= 1, "num_cells must be >= 1"),
            (self.num_filters >= 1, "num_filters must be >= 1"),
            (self.stem in ("imagenet", "cifar"), f"stem must be 'imagenet' or 'cifar', got {self.stem!r}"),
            (self.padding in PADDING_MODES, f"padding must be one of {PADDING_MODES}, got {self.padding!r}"),
            (self.stem_prev in ("raw", "stem"), f"stem_prev must be 'raw' or 'stem', got {self.stem_prev!r}"),
            (
                self.aux_position in ("before_second_reduction", "after_second_reduction"),
                f"unknown aux_position {self.aux_position!r}",
            ),
            (0.0 <= self.drop_path_prob < 1.0, f"drop_path_prob must be in [0, 1), got {self.drop_path_prob}"),
            (0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def calc_reduction_layers(num_cells: int, num_reduction_layers: int) -> list[int]:
    """Cell indices before which reductions go (TF-slim ``nasnet_utils.calc_reduction_layers``)."""
    return [int(p / (num_reduction_layers + 1) * num_cells) for p in range(1, num_reduction_layers + 1)]


class NASNetOutputs(NamedTuple):
    """Train-mode output when the auxiliary head is on (like torchvision's ``InceptionOutputs``)."""

    logits: torch.Tensor
    aux_logits: torch.Tensor


@dataclass(frozen=True)
class CellLink:
    name: str
    input: int  # position in the outputs list
    prev: int | None  # None: the cell reads its raw input as state 1
    reduction: bool
    filters: int


def cell_links(c: NASNetConfig) -> list[CellLink]:
    """Which cells the network has and what each reads: TF-slim's ``cell_outputs`` bookkeeping.

    Output position 0 is the stem, position ``k`` the ``k``-th cell's output; a link's ``input``
    and ``prev`` are positions. The layout depends on the configuration only, not on the cells.
    """
    links: list[CellLink] = []
    first_prev = None if c.stem_prev == "raw" else 0

    def prev_of(pos: int) -> int | None:
        return pos if pos >= 0 else first_prev

    def add(name: str, reduction: bool, filters: int, prev: int | None) -> None:
        links.append(CellLink(name, len(links), prev, reduction, filters))

    if c.stem == "imagenet":
        scaling = 1.0 / c.filter_scaling_rate**c.num_stem_cells
        for i in range(c.num_stem_cells):
            add(f"stem_{i}", True, int(c.num_filters * scaling), prev_of(len(links) - 1))
            scaling *= c.filter_scaling_rate
    reductions = calc_reduction_layers(c.num_cells, c.num_reduction_layers)
    scaling, n_red = 1.0, 0
    for cell_num in range(c.num_cells):
        if c.reductions_in_num_cells:
            is_red = cell_num in reductions
            if is_red:
                scaling *= c.filter_scaling_rate
                name = f"reduction_{n_red}"
                n_red += 1
            else:
                name = f"cell_{cell_num}"
            add(name, is_red, int(c.num_filters * scaling), prev_of(len(links) - 1))
            continue
        skip_prev = prev_of(len(links) - 1)
        if cell_num in reductions:
            scaling *= c.filter_scaling_rate
            add(f"reduction_{n_red}", True, int(c.num_filters * scaling), prev_of(len(links) - 1))
            n_red += 1
        prev = skip_prev if c.skip_reduction_layer_input else prev_of(len(links) - 1)
        add(f"cell_{cell_num}", False, int(c.num_filters * scaling), prev)
    return links


class AuxHead(nn.Module):
    """TF-slim ``_build_aux_head``: ReLU, 5x5/3 avg pool (VALID), 1x1 conv, BN, ReLU, conv over the
    whole remaining map, BN, ReLU, FC. The second conv's kernel is the map size at ``img_size``;
    other input sizes are average-pooled to it first."""

    def __init__(self, channels: int, num_classes: int, spatial: int, ctx: OpContext, widths: tuple[int, int]) -> None:
        super().__init__()
        pooled = (spatial - 5) // 3 + 1
        if pooled < 1:
            raise ValueError(
                f"the auxiliary head needs a feature map of at least 5x5, got {spatial}x{spatial}; "
                "use a larger img_size or aux_head=False"
            )
        self.kernel = pooled
        self.relu = nn.ReLU()
        self.pool = nn.AvgPool2d(5, stride=3)
        self.proj = nn.Conv2d(channels, widths[0], 1, bias=False)
        self.bn0 = ctx.bn(widths[0])
        self.conv = nn.Conv2d(widths[0], widths[1], pooled, bias=False)
        self.bn1 = ctx.bn(widths[1])
        self.fc = nn.Linear(widths[1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(x))
        x = torch.relu(self.bn0(self.proj(x)))
        # Other input sizes are pooled to the trained map size; at that size this is the identity
        # (one pixel per bin), and tracers see no branch on the size.
        x = nn.functional.adaptive_avg_pool2d(x, self.kernel)
        x = torch.relu(self.bn1(self.conv(x)))
        return self.fc(torch.flatten(x, 1))


class NASNet(nn.Module):
    """A NASNet-style network decoded from a :class:`Genotype` and a :class:`NASNetConfig`.

    Args:
        genotype: the normal and reduction cells.
        config: macro hyper-parameters.
        num_classes: classifier outputs; 0 returns pooled features from ``forward``.
        in_chans: input channels.
        img_size: the input size the auxiliary head is sized for.
        features_only: build no head; ``forward`` returns ``{name: feature map}`` for ``out_strides``.
        out_strides: which strides to return with ``features_only`` (default: all of 2, 4, 8, 16, 32
            that the network has; 1, 2 and 4 for a CIFAR stem).
        pretrained_cfg: where the network came from (set by :mod:`.builder`; None when built directly).
        global_pool: the head's pooling, one of :data:`GLOBAL_POOLS`.
        aux_in_forward: with the auxiliary head, ``forward`` in training returns
            :class:`NASNetOutputs` (this package's trainer); False returns the logits alone, as timm's
            tools expect, and :meth:`forward_with_aux` gives both.
    """

    #: The model's origin: architecture name, weights, default input size, eval preprocessing.
    pretrained_cfg: PretrainedCfg | None = None

    # torch.jit.script: features_only fixes forward's return type (a dict of features or logits);
    # the Python-only records are not part of the scripted module.
    __constants__ = ["features_only"]
    __jit_ignored_attributes__ = ["pretrained_cfg", "genotype", "config", "_links", "_shapes", "feature_info"]

    def __init__(
        self,
        genotype: Genotype,
        config: NASNetConfig,
        num_classes: int = 1000,
        in_chans: int = 3,
        img_size: int = 224,
        features_only: bool = False,
        out_strides: Sequence[int] | None = None,
        pretrained_cfg: PretrainedCfg | None = None,
        global_pool: str = "avg",
        aux_in_forward: bool = True,
    ) -> None:
        super().__init__()
        _check_global_pool(global_pool, 0 if features_only else num_classes)
        self.genotype, self.config = genotype, config
        self.pretrained_cfg = pretrained_cfg
        self.num_classes, self.img_size = num_classes, img_size
        c = config
        ctx = OpContext(c.padding, c.bn_eps, c.bn_momentum)

        # -- stem --------------------------------------------------------------------------------
        if c.stem == "imagenet":
            stem_filters = c.stem_filters or int(32 * c.stem_multiplier)
            self.stem = nn.Sequential(
                OrderedDict(conv=nn.Conv2d(in_chans, stem_filters, 3, stride=2, bias=False), bn=ctx.bn(stem_filters))
            )
            stem_shape = StateShape(stem_filters, 2)
        else:
            stem_filters = c.stem_filters or int(c.num_filters * c.stem_multiplier)
            self.stem = nn.Sequential(
                OrderedDict(conv=Conv2dSame(in_chans, stem_filters, 3, padding=c.padding), bn=ctx.bn(stem_filters))
            )
            stem_shape = StateShape(stem_filters, 1)

        # -- layout: TF's cell_outputs list; position 0 is the stem ------------------------------
        links = cell_links(c)
        shapes: list[StateShape] = [stem_shape] + [StateShape(-1, -1)] * len(links)  # filled in as cells are built

        # -- cells ---------------------------------------------------------------------------------
        self.cells = nn.ModuleDict()
        for index, link in enumerate(links):
            drop = ScheduledDropPath(c.drop_path_prob, index, len(links), c.drop_path_scale_by_depth)
            spec = genotype.reduce if link.reduction else genotype.normal
            prev_shape = None if link.prev is None else shapes[link.prev]
            cell = Cell(spec, shapes[link.input], prev_shape, link.filters, link.reduction, ctx, drop)
            self.cells[link.name] = cell
            shapes[index + 1] = cell.out_shape
        self._links = links
        self._shapes = shapes

        # -- features: the deepest output at each stride ----------------------------------------
        deepest: dict[int, int] = {}
        for pos, shape in enumerate(shapes):
            deepest[shape.stride] = pos
        available = sorted(deepest)
        if out_strides is None:
            out_strides = [s for s in available if s >= 2] if c.stem == "imagenet" else available
        missing = [s for s in out_strides if s not in deepest]
        if missing:
            raise ValueError(f"out_strides {missing} not available; this network has strides {available}")
        if features_only and (not out_strides or len(set(out_strides)) != len(out_strides)):
            raise ValueError(f"out_strides must name one or more distinct strides of {available}, "
                             f"got {list(out_strides)}")
        module_paths = ["stem"] + [f"cells.{link.name}" for link in links]  # as named_modules() has them
        self.feature_info = [
            dict(name=f"stride{s}", num_chs=shapes[deepest[s]].channels, reduction=s, module=module_paths[deepest[s]])
            for s in sorted(out_strides)
        ]
        self._feature_pos = {deepest[s]: f"stride{s}" for s in out_strides}
        # feature_info's entries in order: their output positions and names (forward_intermediates)
        self._level_pos = [deepest[s] for s in sorted(out_strides)]
        self._level_names = [f"stride{s}" for s in sorted(out_strides)]
        self.features_only = features_only
        self.num_features = shapes[-1].channels
        self.head_hidden_size = self.num_features  # the pre-logits width (timm); no layer between pool and FC

        # Keep each output only until its last reader (or the end, for features).
        last_use = {pos: pos for pos in range(len(shapes))}
        for index, link in enumerate(links):
            for src in (link.input, link.prev):
                if src is not None:
                    last_use[src] = max(last_use[src], index + 1)
        # Plain int/str lists (not dicts or records), so torch.jit.script types them; -1 is "none".
        self._release_at = [-1] * len(shapes)  # the position after which an output may be freed
        for pos, last in last_use.items():
            if pos not in self._feature_pos and pos != len(shapes) - 1:
                self._release_at[pos] = last
        self._feature_names = [self._feature_pos.get(pos, "") for pos in range(len(shapes))]
        self._cell_inputs = [link.input for link in links]
        self._cell_prevs = [-1 if link.prev is None else link.prev for link in links]
        self._last_needed = max(self._feature_pos) if features_only else len(shapes) - 1
        self._head_relu = c.head_relu
        self.global_pool = global_pool
        self.aux_in_forward = aux_in_forward
        self.grad_checkpointing = False

        # -- heads ---------------------------------------------------------------------------------
        self.aux_head: AuxHead | None = None
        self._aux_pos = -1
        if c.aux_head and num_classes > 0 and not features_only:
            self._aux_pos = self._aux_position(links)
            spatial = self.stage_shapes(img_size)[self._aux_pos][3]
            self.aux_head = AuxHead(shapes[self._aux_pos].channels, num_classes, spatial, ctx, c.aux_channels)
        if features_only:
            self.classifier: nn.Module = nn.Identity()
        else:
            self.dropout = nn.Dropout(c.dropout)
            self.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    # -- construction helpers ------------------------------------------------------------------

    def _aux_position(self, links: list[CellLink]) -> int:
        reductions = [i for i, link in enumerate(links) if link.reduction and not link.name.startswith("stem")]
        if len(reductions) < 2:
            raise ValueError("the auxiliary head sits at the second reduction; this network has fewer than two")
        second = reductions[1]
        # outputs list position = link index + 1
        return second if self.config.aux_position == "before_second_reduction" else second + 1

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")  # TF: FAN_OUT scaling
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    # -- public API ----------------------------------------------------------------------------

    def set_drop_path_progress(self, progress: float) -> None:
        """Training progress in [0, 1] (``step / total_steps``) for ScheduledDropPath."""
        for m in self.modules():
            if isinstance(m, ScheduledDropPath):
                m.progress = float(progress)

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier (and auxiliary classifier) for ``num_classes`` outputs; 0 removes
        both (``forward`` returns pooled features). ``global_pool`` (:data:`GLOBAL_POOLS`) changes
        the pooling too; ``""`` (no pooling) needs ``num_classes=0``."""
        global_pool = self.global_pool if global_pool is None else global_pool
        _check_global_pool(global_pool, num_classes)
        self.global_pool = global_pool
        self.num_classes = num_classes
        weight = self.stem.conv.weight  # new layers on the network's device, in its dtype
        self.classifier = (nn.Linear(self.num_features, num_classes, device=weight.device, dtype=weight.dtype)
                           if num_classes > 0 else nn.Identity())
        if self.aux_head is not None:
            if num_classes > 0:
                self.aux_head.fc = nn.Linear(self.aux_head.fc.in_features, num_classes, device=weight.device,
                                             dtype=weight.dtype)
            else:
                self.aux_head, self._aux_pos = None, -1

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each cell's activations in the backward pass instead of keeping them
        (``torch.utils.checkpoint``), trading compute for memory in training. Gradients are exact:
        drop-path masks are replayed (the RNG state is restored), and BatchNorm's running
        statistics are updated once per step, not again by the recomputation."""
        self.grad_checkpointing = bool(enable)

    def _walk(self, x: torch.Tensor, collect: bool,
              stop: int = -1) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], Optional[torch.Tensor]]:
        # ``stop``: the last output position to compute (-1: as far as the network needs).
        # One loop for eager code and every tracer: the layout is in int lists and the cells in a
        # ModuleDict, which torch.jit.script unrolls; torch.fx and torch.export see plain Python.
        if len(self.cells) != len(self._cell_inputs):
            raise RuntimeError("this network was split into parts (some cells were removed); run it with run_cells")
        outs: List[Optional[torch.Tensor]] = [self.stem(x)]
        features: Dict[str, torch.Tensor] = {}
        aux_in: Optional[torch.Tensor] = None
        first = outs[0]
        if collect and self._feature_names[0] != "" and first is not None:
            features[self._feature_names[0]] = torch.relu(first)
        last_needed = self._last_needed if stop < 0 else stop
        index = 0
        for cell in self.cells.values():
            pos = index + 1
            if pos <= last_needed:
                inp = outs[self._cell_inputs[index]]
                assert inp is not None
                prev: Optional[torch.Tensor] = None
                if self._cell_prevs[index] >= 0:
                    prev = outs[self._cell_prevs[index]]
                if not torch.jit.is_scripting() and self.grad_checkpointing and torch.is_grad_enabled():
                    out = checkpoint_cell(cell, inp, prev)
                else:
                    out = cell(inp, prev)
                outs.append(out)
                if collect and self._feature_names[pos] != "":
                    features[self._feature_names[pos]] = torch.relu(out)
                if pos == self._aux_pos:
                    aux_in = out
                for done in range(pos):
                    if self._release_at[done] == pos:
                        outs[done] = None
            index += 1
        last = outs[-1]
        assert last is not None
        return last, features, aux_in

    def cell_positions(self) -> list[tuple[str, int, int]]:
        """``(module name, channels, stride)`` of each output position: 0 is the stem, ``k`` the
        output of the ``k``-th cell in order (stem cells, then normal and reduction cells)."""
        names = ["stem"] + [link.name for link in self._links]
        return [(name, shape.channels, shape.stride) for name, shape in zip(names, self._shapes)]

    def cell_inputs(self, position: int) -> tuple[int, ...]:
        """The output positions the cell at ``position`` reads (its input and previous state)."""
        if not 1 <= position <= len(self._links):
            raise IndexError(f"cell positions run from 1 to {len(self._links)} (0 is the stem), not {position}")
        link = self._links[position - 1]
        return (link.input,) if link.prev is None else (link.input, link.prev)

    def run_cells(self, states: dict[int, torch.Tensor], start: int, stop: int) -> torch.Tensor:
        """Run the cells at output positions ``start .. stop - 1`` from the outputs they read
        (``states``: position -> tensor) and return the last one. Lets a detector split the
        network, e.g. into a C4 trunk and an ROI head (the cells outside the range may be deleted).
        With :meth:`set_grad_checkpointing` on, the cells' activations are recomputed in the backward
        pass, as in ``forward``."""
        if not 1 <= start <= stop - 1 <= len(self._links):
            raise IndexError(f"cells run over positions 1 .. {len(self._links)}; got {start} .. {stop - 1}")
        states = dict(states)
        for pos in range(start, stop):
            link = self._links[pos - 1]
            missing = [p for p in self.cell_inputs(pos) if p not in states]
            if missing:
                raise ValueError(f"cell {link.name} reads outputs {missing}, which were not given")
            prev = None if link.prev is None else states[link.prev]
            cell = self.cells[link.name]
            if self.grad_checkpointing and torch.is_grad_enabled():  # as forward does
                states[pos] = checkpoint_cell(cell, states[link.input], prev)
            else:
                states[pos] = cell(states[link.input], prev)
        return states[stop - 1]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last cell's output (before the head's ReLU)."""
        return self._walk(x, collect=False)[0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """ReLU (unless the config has no head ReLU), global pooling, dropout and, unless
        ``pre_logits``, the classifier."""
        if self._head_relu:
            x = torch.relu(x)
        x = self._pool(x)
        x = self.dropout(x)
        return x if pre_logits else self.classifier(x)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.global_pool == "":
            return x
        if self.global_pool == "max":
            return torch.flatten(nn.functional.adaptive_max_pool2d(x, 1), 1)
        mean = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        if self.global_pool == "avgmax":
            return 0.5 * (mean + torch.flatten(nn.functional.adaptive_max_pool2d(x, 1), 1))
        return mean

    def forward(self, x: torch.Tensor) -> Any:
        """Logits; with ``features_only``, ``{name: feature map}``; in training with the auxiliary
        head, :class:`NASNetOutputs` (a scripted model returns the logits only)."""
        last, features, aux_in = self._walk(x, self.features_only)
        if self.features_only:
            return features
        else:
            logits = self.forward_head(last)
            if (not torch.jit.is_scripting() and self.aux_in_forward and self.aux_head is not None and self.training
                    and aux_in is not None):
                return NASNetOutputs(logits, self.aux_head(aux_in))
            return logits

    def forward_with_aux(self, x: torch.Tensor) -> NASNetOutputs:
        """Logits and auxiliary logits, in training or eval, whatever ``aux_in_forward`` says: the
        way to the auxiliary loss when ``forward`` returns the logits alone (a model built by timm)."""
        if self.aux_head is None:
            raise RuntimeError("this network has no auxiliary head; build it with aux_head=True")
        last, _, aux_in = self._walk(x, False)
        assert aux_in is not None
        return NASNetOutputs(self.forward_head(last), self.aux_head(aux_in))

    # -- timm's feature interface (forward_intermediates, prune_intermediate_layers) ----------

    def _take_indices(self, indices: int | Sequence[int] | None) -> list[int]:
        """timm's convention for feature_info indices: None for all, ``n`` for the last n, a
        sequence for those (negative ones count from the end); returned in forward order."""
        levels = len(self._level_pos)
        if indices is None:
            indices = levels
        if isinstance(indices, int):
            if not 0 < indices <= levels:
                raise IndexError(f"last-n ({indices}) is out of range (1 to {levels})")
            return list(range(levels - indices, levels))
        take = set()
        for i in indices:
            index = levels + i if i < 0 else i
            if not 0 <= index < levels:
                raise IndexError(f"feature index {index} is out of range (0 to {levels - 1})")
            take.add(index)
        if not take:
            raise IndexError("indices names no feature map")
        return sorted(take)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The feature maps of :attr:`feature_info` (timm's ``forward_intermediates``).

        Args:
            x: input images.
            indices: which entries of ``feature_info``: None for all, ``n`` for the last n, a
                sequence for those (negative from the end). Maps come back in forward order,
                ReLU-activated as the next cell reads them (as ``features_only`` gives them).
            norm: accepted for timm's interface; the network has no final norm.
            stop_early: run the cells only as far as the deepest map asked for.
            output_fmt: "NCHW", the only layout.
            intermediates_only: return the maps alone (the cells stop at the deepest one).

        Returns:
            ``(features, maps)``, ``features`` being :meth:`forward_features`' output (with
            ``stop_early``, the last cell run's output instead); or ``maps`` alone.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW' (the only layout), got {output_fmt!r}")
        take = self._take_indices(indices)
        stop = self._level_pos[take[-1]] if (stop_early or intermediates_only) else -1
        last, features, _ = self._walk(x, True, stop)
        maps = [features[self._level_names[i]] for i in take]
        return maps if intermediates_only else (last, maps)

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True,
    ) -> list[int]:
        """Delete what the ``feature_info`` maps ``indices`` do not need (timm's interface, used by
        its ``features_only`` wrapper): the cells after the deepest one, and the heads
        (``reset_classifier(0, "")``) with ``prune_head`` or when cells went. Returns the
        indices, non-negative. ``prune_norm`` is accepted; there is no final norm."""
        take = self._take_indices(indices)
        deepest = take[-1]
        keep = self._level_pos[deepest]  # the last output position still needed
        cut = keep < len(self._cell_inputs)
        if cut:
            for link in self._links[keep:]:
                del self.cells[link.name]
            self._links, self._shapes = self._links[:keep], self._shapes[:keep + 1]
            self._cell_inputs, self._cell_prevs = self._cell_inputs[:keep], self._cell_prevs[:keep]
            self._release_at, self._feature_names = self._release_at[:keep + 1], self._feature_names[:keep + 1]
            self._last_needed = min(self._last_needed, keep)
            self.feature_info = self.feature_info[:deepest + 1]
            self._level_pos, self._level_names = self._level_pos[:deepest + 1], self._level_names[:deepest + 1]
            self._feature_pos = {p: n for p, n in self._feature_pos.items() if p <= keep}
            self.num_features = self.head_hidden_size = self._shapes[-1].channels
            if self._aux_pos > keep:
                self.aux_head, self._aux_pos = None, -1
        if (prune_head or cut) and not self.features_only:
            self.reset_classifier(0, "")
        return take

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """timm's parameter groups (e.g. layer-wise learning-rate decay): the stem with the stem
        cells first, then each cell in forward order, or with ``coarse`` each stack of cells with
        the reduction cell before it; the heads come last."""
        stem_cells = [link.name for link in self._links if link.name.startswith("stem_")]
        blocks = []
        stack = 0
        for pos, link in enumerate(self._links, start=1):
            if link.name in stem_cells:
                continue
            stack += int(link.reduction)
            blocks.append((rf"^cells\.{link.name}\.", (stack if coarse else pos,)))
        return dict(stem="|".join([r"^stem\."] + [rf"^cells\.{name}\." for name in stem_cells]), blocks=blocks)

    def stage_shapes(self, img_size: int) -> list[tuple[str, int, int, int]]:
        """(module name, channels, stride, spatial size) for the stem and every cell at ``img_size``."""
        names = ["stem"] + [link.name for link in self._links]
        return [(name, shape.channels, shape.stride, size)
                for name, shape, size in zip(names, self._shapes, stage_sizes(self.config, img_size))]


def stage_sizes(config: NASNetConfig, img_size: int) -> list[int]:
    """The side of the stem's and of each cell's output (square) for ``img_size`` inputs, without
    building the network: the ImageNet stem's VALID stride-2 conv, then a ceil-halving at each
    reduction cell (SAME padding)."""
    size = (img_size - 3) // 2 + 1 if config.stem == "imagenet" else img_size
    sizes = [size]
    for link in cell_links(config):
        if link.reduction:
            size = -(-size // 2)
        sizes.append(size)
    return sizes


_MODEL_ARGS = ("in_chans", "img_size", "features_only", "out_strides", "global_pool")


def _check_global_pool(global_pool: str, num_classes: int) -> None:
    if global_pool not in GLOBAL_POOLS:
        raise ValueError(f"global_pool must be one of {', '.join(repr(p) for p in GLOBAL_POOLS)}, got {global_pool!r}")
    if global_pool == "" and num_classes > 0:
        raise ValueError("global_pool='' (no pooling) needs num_classes=0: a linear classifier reads pooled features")


def split_model_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split keyword arguments into :class:`NASNet` arguments and :class:`NASNetConfig` fields."""
    model = {k: v for k, v in kwargs.items() if k in _MODEL_ARGS}
    config = {k: v for k, v in kwargs.items() if k not in _MODEL_ARGS}
    return model, config


def build_nasnet(
    genotype: Genotype,
    num_cells: int,
    num_filters: int,
    stem: str = "imagenet",
    num_classes: int = 1000,
    **kwargs: Any,
) -> NASNet:
    """Build an ``N @ F`` network from a genotype: ``num_cells`` normal cells (3 stacks of N) of
    ``num_filters`` base width. Other :class:`NASNetConfig` fields and :class:`NASNet` arguments
    (``img_size``, ``features_only``, ...) go in ``kwargs``."""
    model_kwargs, kwargs = split_model_kwargs(kwargs)
    return NASNet(genotype, nasnet_config(num_cells, num_filters, stem, **kwargs), num_classes=num_classes,
                  **model_kwargs)


def nasnet_config(num_cells: int, num_filters: int, stem: str = "imagenet", **kwargs: Any) -> NASNetConfig:
    """The :class:`NASNetConfig` of :func:`build_nasnet`: with the CIFAR stem, its defaults (a stem
    3x the base width, PyTorch's BatchNorm eps and momentum) unless ``kwargs`` say otherwise."""
    defaults = {"stem_multiplier": 3.0 if stem == "cifar" else 1.0}
    if stem == "cifar":
        defaults.update(bn_eps=1e-5, bn_momentum=0.1)
    return NASNetConfig(num_cells=num_cells, num_filters=num_filters, stem=stem, **{**defaults, **kwargs})


NUM_STACKS = 3  # an N @ F network: three stacks of N normal cells, a reduction cell between stacks


def stack_config(cells: int, filters: int, stem: str = "imagenet", **kwargs: Any) -> NASNetConfig:
    """The :class:`NASNetConfig` of an ``N @ F`` network: ``cells`` (N) normal cells per stack, in
    :data:`NUM_STACKS` stacks, base width ``filters``; other fields as :func:`nasnet_config`. The one
    place the "3 x N" rule is written."""
    return nasnet_config(NUM_STACKS * cells, filters, stem, **kwargs)
