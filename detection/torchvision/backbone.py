"""NASNet backbones for torchvision's detection models (``FasterRCNN``, ``MaskRCNN``, ``RetinaNet``, ``FCOS``).

torchvision's detectors take any module with an ``out_channels`` attribute whose forward returns
an ``OrderedDict`` of feature maps (``torchvision.models.detection.backbone_utils.BackboneWithFPN``
is the ResNet version). :func:`torchvision_backbone` builds one from a registered model or a
genotype: the network's multi-scale features (``features_only``), an optional FPN, stages frozen
from the stem up, and BatchNorm optionally frozen, as torchvision does for ResNets.

>>> from torchvision.models.detection import FasterRCNN
>>> backbone = torchvision_backbone("nasnet_a_mobile", pretrained=True, trainable_stages=3)
>>> model = FasterRCNN(backbone, num_classes=91)
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from nasnet_backbones import Genotype, NASNet, build_model

from ..fast_path import FastInference, drop_after_load

__all__ = ["NASNetBody", "NASNetFPN", "torchvision_backbone"]


class NASNetBody(FastInference, nn.Module):
    """The network's feature maps, finest first, keyed ``"0"``, ``"1"``, ... as torchvision's
    backbones are (its detectors' default RoI pooling reads those names); ``strides`` says which
    stride each is, ``out_channels`` is the last map's width.

    ``optimize_for_inference``: in eval mode, without gradients and outside tracing and export,
    run a copy of the network with its BatchNorms folded into the convolutions (exact within float
    rounding; rebuilt when the weights change; in no state dict):
    :class:`~detection.fast_path.InferenceShadow`."""

    def __init__(self, model: NASNet, optimize_for_inference: bool = True) -> None:
        super().__init__()
        if not model.features_only:
            raise ValueError("NASNetBody needs a features_only network")
        self._init_fast_path(optimize_for_inference)
        self.register_load_state_dict_post_hook(drop_after_load)
        self.model = model
        self.names = [f["name"] for f in model.feature_info]
        self.strides = [f["reduction"] for f in model.feature_info]
        self.channels = [f["num_chs"] for f in model.feature_info]
        self.out_channels = self.channels[-1]

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        model, x = self._inference_body(self.model, x)
        features = model(x)
        return OrderedDict((str(i), features[name]) for i, name in enumerate(self.names))


class NASNetFPN(nn.Module):
    """A :class:`NASNetBody` followed by torchvision's FPN (``out_channels`` per level)."""

    def __init__(self, body: NASNetBody, out_channels: int = 256, extra_blocks: ExtraFPNBlock | None = None,
                 norm_layer: Callable[..., nn.Module] | None = None) -> None:
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(body.channels, out_channels, extra_blocks or LastLevelMaxPool(), norm_layer)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        return self.fpn(self.body(x))


def _freeze_stages(model: NASNet, trainable_stages: int) -> None:
    """Keep the last ``trainable_stages`` strides trainable; freeze the stem and every cell before them."""
    positions = model.cell_positions()  # (module name, channels, stride) per output position
    strides = sorted({stride for _, _, stride in positions})
    if not 0 <= trainable_stages <= len(strides):
        raise ValueError(f"trainable_stages must be between 0 and {len(strides)} (this network's strides "
                         f"{strides}), got {trainable_stages}")
    first_trainable = strides[len(strides) - trainable_stages] if trainable_stages else float("inf")
    for name, _, stride in positions:
        if stride < first_trainable:
            module = model.stem if name == "stem" else model.cells[name]
            for p in module.parameters():
                p.requires_grad_(False)


def _freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d by a FrozenBatchNorm2d with its statistics and affine parameters."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            _freeze_batchnorm(child)
    return module


def torchvision_backbone(
    name_or_genotype: str | Genotype | Path,
    fpn: bool = True,
    trainable_stages: int | None = None,
    returned_strides: Sequence[int] = (4, 8, 16, 32),
    norm_layer: Callable[..., nn.Module] | None = None,
    pretrained: bool | str | Path = False,
    out_channels: int = 256,
    extra_blocks: ExtraFPNBlock | None = None,
    cells: int = 4,
    filters: int = 44,
    optimize_for_inference: bool = True,
    **kwargs: Any,
) -> nn.Module:
    """A backbone for torchvision's detection models.

    Args:
        name_or_genotype: a registered model name (``nasnet_a_mobile``, ...), a :class:`Genotype`, or
            a genotype JSON file (then ``cells`` per stack and base width ``filters``, ImageNet stem).
        fpn: add an FPN (``out_channels`` per level, ``extra_blocks`` default max-pool P6; pass
            ``torchvision.ops.feature_pyramid_network.LastLevelP6P7(out_channels, out_channels)``
            for RetinaNet / FCOS). Without it the backbone returns the feature maps as they are.
        trainable_stages: how many of the deepest strides train (None: all); the rest, stem first,
            are frozen, like torchvision's ``trainable_layers``.
        returned_strides: the strides returned (and fed to the FPN).
        norm_layer: ``torchvision.ops.misc.FrozenBatchNorm2d`` freezes every BatchNorm of the
            network (statistics and affine), as torchvision's ResNet backbones do; None keeps them.
        pretrained: for a registered name, as :func:`create_model` (True, a weights tag or a file); for a
            genotype, a checkpoint file.
        optimize_for_inference: eval-mode forward passes without gradients run a BatchNorm-folded
            copy of the network (:class:`NASNetBody`); False always runs the network itself.
            (Through :func:`~detection.torchvision.torchvision_detector`: ``backbone_kwargs``.)
    """
    model = build_model(name_or_genotype, cells=cells, filters=filters, stem="imagenet", pretrained=pretrained,
                        features_only=True, out_strides=returned_strides, **kwargs)
    if trainable_stages is not None:
        _freeze_stages(model, trainable_stages)
    if norm_layer is not None:
        if norm_layer is not FrozenBatchNorm2d:
            raise ValueError("norm_layer: only torchvision.ops.misc.FrozenBatchNorm2d is supported (or None)")
        _freeze_batchnorm(model)
    body = NASNetBody(model, optimize_for_inference)
    return NASNetFPN(body, out_channels, extra_blocks) if fpn else body
