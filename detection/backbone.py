"""NASNet backbones for detectron2: multi-scale (for FPN and RetinaNet) and the paper's C4 split.

``build_nasnet_backbone`` returns the ReLU'd output of the deepest cell at each requested stride
("stride4" .. "stride32"). ``build_nasnet_fpn_backbone`` / ``build_nasnet_retinanet_fpn_backbone``
put detectron2's FPN on top. ``build_nasnet_c4_backbone`` with :class:`NASNetC4ROIHeads` is the
setup of the paper (Section 4.3) and TF's ``faster_rcnn_nas``: the RPN reads the concatenated
outputs of the last two stride-16 cells, and the remaining cells (a reduction and the last stack)
are run on each cropped region as the box head.
"""

from __future__ import annotations

import logging

import torch
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, ROI_HEADS_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool, LastLevelP6P7
from detectron2.modeling.roi_heads import Res5ROIHeads
from torch import nn

from nasnet_backbones import Genotype, GenotypeError, NASNet, build_model
from nasnet_backbones.drop_path import ScheduledDropPath

from .imagenet_init import check_body_filled
from .fast_path import FastInference

__all__ = [
    "NASNetBackbone", "NASNetC4Backbone", "NASNetC4Head", "NASNetC4ROIHeads", "build_nasnet_from_cfg", "nasnet_network",
    "build_nasnet_backbone", "build_nasnet_fpn_backbone", "build_nasnet_retinanet_fpn_backbone",
    "build_nasnet_c4_backbone",
]

logger = logging.getLogger(__name__)

_NORMS = ("FrozenBN", "BN", "SyncBN")


def nasnet_network(*, arch: str = "nasnet_a_mobile", genotype: str = "", cells: int = 4, filters: int = 44,
                   drop_path_prob: float = 0.0, bn_momentum: float = 0.1, **kwargs) -> NASNet:
    """The classification network a detector's backbone is cut from (no classifier, no auxiliary
    head): the registered ``arch``, or a ``genotype`` JSON file with ``cells`` and ``filters`` and
    an ImageNet stem. The keywords are the ``MODEL.NASNET`` keys of the same names (and the
    LazyConfigs' ``model=L(nasnet_network)(...)``)."""
    kwargs = {"num_classes": 0, "aux_head": False, "drop_path_prob": drop_path_prob, "bn_momentum": bn_momentum,
              **kwargs}
    if genotype:
        try:
            parsed = Genotype.from_json(genotype)
        except FileNotFoundError:
            raise FileNotFoundError(f"MODEL.NASNET.GENOTYPE: {genotype} does not exist") from None
        except (GenotypeError, ValueError) as exc:
            raise ValueError(f"MODEL.NASNET.GENOTYPE {genotype}: {exc}") from None
        return build_model(parsed, genotype_file=genotype, cells=cells, filters=filters, stem="imagenet", **kwargs)
    try:
        return build_model(arch, **kwargs)
    except ValueError as exc:
        raise ValueError(f"MODEL.NASNET.ARCH: {exc}") from None


def build_nasnet_from_cfg(cfg, **kwargs) -> NASNet:
    """The classification network ``MODEL.NASNET`` describes (no classifier, no auxiliary head)."""
    n = cfg.MODEL.NASNET
    return nasnet_network(arch=n.ARCH, genotype=n.GENOTYPE, cells=n.CELLS, filters=n.FILTERS,
                          drop_path_prob=n.DROP_PATH_PROB, bn_momentum=n.BN_MOMENTUM, **kwargs)


def _note_load(module: nn.Module, state_dict, prefix: str, *args) -> None:
    # for _check_after_load, which load_state_dict tells neither where the module is nor what it was given
    module._load_seen = (prefix, {k for k in state_dict if k.startswith(prefix)})


def _check_after_load(module: nn.Module, incompatible) -> None:
    prefix, present = module.__dict__.pop("_load_seen", ("", set()))
    if isinstance(module, FastInference):
        module.drop_inference_copy()  # new weights (the fingerprint would see them too; this frees it now)
    check_body_filled(module, prefix, present, incompatible.missing_keys, incompatible.unexpected_keys)


def _check_loads(module: nn.Module) -> None:
    """Make every ``load_state_dict`` that reaches ``module`` fill it completely from
    classification weights, or fail (:func:`~detection.imagenet_init.check_body_filled`)."""
    module.register_load_state_dict_pre_hook(_note_load)
    module.register_load_state_dict_post_hook(_check_after_load)


def _check_norm(norm: str) -> str:
    if norm not in _NORMS:
        raise ValueError(f"MODEL.NASNET.NORM={norm!r} is not supported; use one of {', '.join(_NORMS)}")
    return norm


def _apply_norm(module: nn.Module, norm: str) -> nn.Module:
    if norm == "FrozenBN":
        return FrozenBatchNorm2d.convert_frozen_batchnorm(module)
    if norm == "SyncBN":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return module


def _freeze(module: nn.Module) -> None:
    """Fixed weights and statistics, and no random path dropping: a frozen cell is deterministic."""
    for p in module.parameters():
        p.requires_grad_(False)
    for m in module.modules():
        if isinstance(m, ScheduledDropPath):
            m.drop_prob = 0.0
    FrozenBatchNorm2d.convert_frozen_batchnorm(module)


def _prune_cells(model: NASNet, keep: range) -> None:
    """Delete the cells whose output positions are outside ``keep`` (and the head), so that no
    parameter goes unused (DistributedDataParallel requires that)."""
    for pos, (name, _, _) in enumerate(model.cell_positions()):
        if pos > 0 and pos not in keep:
            del model.cells[name]
    if hasattr(model, "classifier"):
        model.classifier = nn.Identity()


class NASNetBackbone(FastInference, Backbone):
    """The deepest cell output at each requested stride, as detectron2 features.

    ``grad_checkpointing`` recomputes the cells' activations in the backward pass
    (:meth:`NASNet.set_grad_checkpointing`, ``MODEL.NASNET.GRAD_CHECKPOINTING``).
    ``optimize_for_inference`` (``MODEL.NASNET.OPTIMIZE_FOR_INFERENCE``) lets eval-mode forward
    passes run a BatchNorm-folded copy of the network
    (:class:`~detection.fast_path.FastInference`)."""

    def __init__(self, model: NASNet, out_features: list[str], freeze_at: int = 0, norm: str = "FrozenBN",
                 grad_checkpointing: bool = False, optimize_for_inference: bool = True) -> None:
        super().__init__()
        self._init_fast_path(optimize_for_inference)
        positions = model.cell_positions()
        deepest = {f"stride{stride}": (pos, ch) for pos, (_, ch, stride) in enumerate(positions)}
        unknown = [f for f in out_features if f not in deepest]
        if unknown or not out_features:
            raise ValueError(
                f"MODEL.NASNET.OUT_FEATURES {list(out_features)}: {unknown or 'empty'} not available; "
                f"{model.pretrained_cfg.architecture if model.pretrained_cfg else 'this network'} has {', '.join(sorted(deepest, key=lambda k: int(k[6:])))}"
            )
        self._out_features = list(out_features)
        self._positions = {name: deepest[name][0] for name in out_features}
        self._out_feature_channels = {name: deepest[name][1] for name in out_features}
        self._out_feature_strides = {name: int(name[6:]) for name in out_features}
        last = max(self._positions.values())
        _prune_cells(model, range(0, last + 1))
        # Position -> the last position whose cell reads it (memory is released after that).
        self._last_read: dict[int, int] = {}
        for pos in range(1, last + 1):
            for p in model.cell_inputs(pos):
                self._last_read[p] = max(self._last_read.get(p, p), pos)
        self.body = _apply_norm(model, _check_norm(norm))
        self._freeze_stages(freeze_at)
        if grad_checkpointing:
            self.body.set_grad_checkpointing(True)
        _check_loads(self)

    def _freeze_stages(self, freeze_at: int) -> None:
        """Freeze the stem and every cell whose output stride is at most ``2 ** freeze_at``
        (so ``freeze_at=2`` fixes everything up to stride 4, as for ResNet's res2)."""
        if freeze_at <= 0:
            return
        for name, _, stride in self.body.cell_positions():
            if stride <= 2**freeze_at:
                module = self.body.stem if name == "stem" else self.body.cells[name] if name in self.body.cells else None
                if module is not None:
                    _freeze(module)

    @property
    def size_divisibility(self) -> int:
        return 32

    def _run_trunk(self, x: torch.Tensor, keep: set[int]) -> dict[int, torch.Tensor]:
        """Outputs of the stem and cells up to ``max(keep)``; each dropped once its last reader
        has run, except the positions in ``keep``."""
        body, x = self._inference_body(self.body, x)
        states = {0: body.stem(x)}
        for pos in range(1, max(keep) + 1):
            states[pos] = body.run_cells(states, pos, pos + 1)  # checkpointed when the body's flag is on
            for p in [p for p in states if p not in keep and self._last_read.get(p, p) <= pos]:
                del states[p]
        return states

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        states = self._run_trunk(x, set(self._positions.values()))
        return {name: torch.relu(states[pos]) for name, pos in self._positions.items()}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
                for name in self._out_features}


def _c4_split(model: NASNet) -> tuple[int, int, int]:
    """(position of the last stride-16 cell, of the one before it, number of positions)."""
    positions = model.cell_positions()
    last16 = max(pos for pos, (_, _, stride) in enumerate(positions) if stride == 16)
    if positions[-1][2] != 32 or last16 < 2:
        raise ValueError("the C4 split needs a network with stride-16 cells followed by a stride-32 stack")
    later_inputs = {p for pos in range(last16 + 1, len(positions)) for p in model.cell_inputs(pos) if p <= last16}
    if not later_inputs <= {last16 - 1, last16}:
        raise ValueError(f"cells after position {last16} read outputs {sorted(later_inputs)}; the C4 split passes "
                         "only the last two stride-16 outputs to the box head")
    return last16, last16 - 1, len(positions)


class NASNetC4Backbone(NASNetBackbone):
    """The trunk up to the last stride-16 cell; feature "stride16" is the concatenation of the
    last two stride-16 cell outputs (TF ``faster_rcnn_nas``'s RPN feature map)."""

    def __init__(self, model: NASNet, freeze_at: int = 0, norm: str = "FrozenBN",
                 grad_checkpointing: bool = False, optimize_for_inference: bool = True) -> None:
        last, prev, _ = _c4_split(model)
        super().__init__(model, ["stride16"], freeze_at, norm, grad_checkpointing, optimize_for_inference)
        channels = model.cell_positions()
        self._prev = prev
        self._positions = {"stride16": last}
        self._out_feature_channels = {"stride16": channels[prev][1] + channels[last][1]}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        last = self._positions["stride16"]
        states = self._run_trunk(x, {self._prev, last})
        # Not ReLU'd: the box head's cells start with their own ReLU, as in TF.
        return {"stride16": torch.cat([states[self._prev], states[last]], dim=1)}


class NASNetC4Head(FastInference, nn.Module):
    """The cells after the last stride-16 one, run on each region's pooled features (the box
    head of the paper's Faster R-CNN); ends with ReLU like the classifier's head.
    ``optimize_for_inference`` as for :class:`NASNetBackbone`."""

    def __init__(self, model: NASNet, norm: str = "FrozenBN", grad_checkpointing: bool = False,
                 optimize_for_inference: bool = True) -> None:
        super().__init__()
        self._init_fast_path(optimize_for_inference)
        last, prev, count = _c4_split(model)
        positions = model.cell_positions()
        self._split = [positions[prev][1], positions[last][1]]
        self._prev, self._last, self._count = prev, last, count
        _prune_cells(model, range(last + 1, count))
        model.stem = nn.Identity()
        self.body = _apply_norm(model, _check_norm(norm))
        self.out_channels = positions[-1][1]
        if grad_checkpointing:
            self.body.set_grad_checkpointing(True)
        _check_loads(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        body, x = self._inference_body(self.body, x)
        prev, last = torch.split(x, self._split, dim=1)
        states = {self._prev: prev, self._last: last}
        for pos in range(self._last + 1, self._count):
            states[pos] = body.run_cells(states, pos, pos + 1)  # checkpointed when the body's flag is on
        return torch.relu(states[self._count - 1])


@ROI_HEADS_REGISTRY.register()
class NASNetC4ROIHeads(Res5ROIHeads):
    """detectron2's C4 ROI heads with the NASNet tail (:class:`NASNetC4Head`) in place of res5."""

    @classmethod
    def _build_res5_block(cls, cfg):
        head = NASNetC4Head(build_nasnet_from_cfg(cfg), cfg.MODEL.NASNET.NORM, cfg.MODEL.NASNET.GRAD_CHECKPOINTING,
                            cfg.MODEL.NASNET.OPTIMIZE_FOR_INFERENCE)
        return head, head.out_channels


@BACKBONE_REGISTRY.register()
def build_nasnet_backbone(cfg, input_shape: ShapeSpec) -> NASNetBackbone:
    """``MODEL.NASNET`` as a multi-scale detectron2 backbone."""
    _check_input_channels(input_shape)
    return NASNetBackbone(build_nasnet_from_cfg(cfg), list(cfg.MODEL.NASNET.OUT_FEATURES),
                          cfg.MODEL.BACKBONE.FREEZE_AT, cfg.MODEL.NASNET.NORM, cfg.MODEL.NASNET.GRAD_CHECKPOINTING,
                          cfg.MODEL.NASNET.OPTIMIZE_FOR_INFERENCE)


def _check_fpn_features(bottom_up: NASNetBackbone, in_features: list[str]) -> None:
    shapes = bottom_up.output_shape()
    missing = [f for f in in_features if f not in shapes]
    if missing:
        raise ValueError(f"MODEL.FPN.IN_FEATURES {list(in_features)}: {missing} are not in MODEL.NASNET.OUT_FEATURES "
                         f"{list(shapes)}")
    strides = [shapes[f].stride for f in in_features]
    if any(b != 2 * a for a, b in zip(strides, strides[1:])):
        raise ValueError(f"MODEL.FPN.IN_FEATURES {list(in_features)} have strides {strides}; FPN needs consecutive "
                         "powers of two in increasing order (e.g. stride4, stride8, stride16, stride32)")


@BACKBONE_REGISTRY.register()
def build_nasnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """NASNet + FPN (P2-P6 from stride4-stride32 and a max-pooled P6), for Faster R-CNN."""
    bottom_up = build_nasnet_backbone(cfg, input_shape)
    in_features = list(cfg.MODEL.FPN.IN_FEATURES)
    _check_fpn_features(bottom_up, in_features)
    return FPN(bottom_up=bottom_up, in_features=in_features, out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
               norm=cfg.MODEL.FPN.NORM, top_block=LastLevelMaxPool(), fuse_type=cfg.MODEL.FPN.FUSE_TYPE)


@BACKBONE_REGISTRY.register()
def build_nasnet_retinanet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """NASNet + FPN with P6/P7 computed from P5, for RetinaNet (P3-P7)."""
    bottom_up = build_nasnet_backbone(cfg, input_shape)
    in_features = list(cfg.MODEL.FPN.IN_FEATURES)
    _check_fpn_features(bottom_up, in_features)
    out = cfg.MODEL.FPN.OUT_CHANNELS
    return FPN(bottom_up=bottom_up, in_features=in_features, out_channels=out, norm=cfg.MODEL.FPN.NORM,
               top_block=LastLevelP6P7(out, out, in_feature="p5"), fuse_type=cfg.MODEL.FPN.FUSE_TYPE)


@BACKBONE_REGISTRY.register()
def build_nasnet_c4_backbone(cfg, input_shape: ShapeSpec) -> NASNetC4Backbone:
    """The paper's C4 trunk; use with ``MODEL.ROI_HEADS.NAME: NASNetC4ROIHeads``."""
    _check_input_channels(input_shape)
    return NASNetC4Backbone(build_nasnet_from_cfg(cfg), cfg.MODEL.BACKBONE.FREEZE_AT, cfg.MODEL.NASNET.NORM,
                            cfg.MODEL.NASNET.GRAD_CHECKPOINTING, cfg.MODEL.NASNET.OPTIMIZE_FOR_INFERENCE)


def _check_input_channels(input_shape: ShapeSpec) -> None:
    if input_shape.channels != 3:
        raise ValueError(f"NASNet backbones take 3-channel images; MODEL.PIXEL_MEAN has {input_shape.channels} values")

