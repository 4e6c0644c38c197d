"""SSDlite (Sandler et al., 2018, MobileNetV2 Sec. 6.2) with a NASNet backbone, for torchvision's ``SSD``.

torchvision's ``ssdlite320_mobilenet_v3_large`` predicts from MobileNetV3's stride-16 features
(the C4 expansion layer) and its last, stride-32, features, then four extra down-sampling blocks
(1x1 projection to half width, 3x3 depthwise stride 2, 1x1 projection; BatchNorm and ReLU6 after
each): six maps, 20 to 1 pixels across at 320x320. :class:`NASNetSSDLiteExtractor` does the same
with a NASNet's stride-16 and stride-32 cell outputs, and :func:`ssdlite_nasnet` builds the whole
detector with torchvision's head, default boxes and settings. NASNet's preprocessing (mean = std =
127.5 on 0-255) is torchvision's SSDlite normalisation (mean = std = 0.5 on 0-1), so pretrained
ImageNet backbones see the inputs they were trained on.

>>> model = ssdlite_nasnet("nasnet_a_mobile", num_classes=91, pretrained=True)
>>> model.eval()([torch.rand(3, 480, 640)])[0]["boxes"].shape  # boxes in the input image's pixels
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.ssdlite import SSDLiteHead
from torchvision.ops.misc import Conv2dNormActivation

from nasnet_backbones import Genotype

from .backbone import NASNetBody, torchvision_backbone

__all__ = ["NASNetSSDLiteExtractor", "ssdlite_nasnet"]

# torchvision's SSDlite settings (ssdlite320_mobilenet_v3_large), the defaults of ssdlite_nasnet.
SSDLITE_DEFAULTS: dict[str, Any] = {
    "score_thresh": 0.001,
    "nms_thresh": 0.55,
    "detections_per_img": 300,
    "topk_candidates": 300,
    "image_mean": [0.5, 0.5, 0.5],  # [0, 1] -> [-1, 1]: NASNet's mean = std = 127.5 on 0-255
    "image_std": [0.5, 0.5, 0.5],
}


def _ssdlite_norm() -> Callable[..., nn.Module]:
    return partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)  # torchvision's SSDlite BatchNorm


def _downsample_block(in_channels: int, out_channels: int, norm_layer: Callable[..., nn.Module]) -> nn.Sequential:
    """Depthwise-separable stride-2 block: 1x1 to half width, 3x3 depthwise stride 2, 1x1 out."""
    mid = out_channels // 2
    layer = partial(Conv2dNormActivation, norm_layer=norm_layer, activation_layer=nn.ReLU6)
    return nn.Sequential(
        layer(in_channels, mid, kernel_size=1),
        layer(mid, mid, kernel_size=3, stride=2, groups=mid),
        layer(mid, out_channels, kernel_size=1),
    )


class NASNetSSDLiteExtractor(nn.Module):
    """Six feature maps for SSD: a NASNet's stride-16 and stride-32 outputs, then one extra
    down-sampling block per entry of ``extra_channels`` (strides 64, 128, 256, 512).

    ``out_channels`` lists the width of each map (what ``SSDLiteHead`` takes); ``forward``
    returns them in an ``OrderedDict`` keyed ``"0"`` .. ``"5"``, finest first.
    """

    def __init__(self, body: NASNetBody, extra_channels: Sequence[int] = (512, 256, 256, 128),
                 norm_layer: Callable[..., nn.Module] | None = None) -> None:
        super().__init__()
        if body.strides != [16, 32]:
            raise ValueError(f"NASNetSSDLiteExtractor takes the stride-16 and stride-32 features, got strides "
                             f"{body.strides} (build the body with returned_strides=(16, 32))")
        norm_layer = norm_layer or _ssdlite_norm()
        self.body = body
        widths = [body.channels[-1], *extra_channels]
        self.extra = nn.ModuleList(_downsample_block(a, b, norm_layer) for a, b in zip(widths, widths[1:]))
        for m in self.extra.modules():  # torchvision's SSDlite initialisation of the new layers
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, mean=0.0, std=0.03)
        self.out_channels = [*body.channels, *extra_channels]

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        features = list(self.body(x).values())
        x = features[-1]
        for block in self.extra:
            x = block(x)
            features.append(x)
        return OrderedDict((str(i), f) for i, f in enumerate(features))


def ssdlite_nasnet(
    name_or_genotype: str | Genotype | Path = "nasnet_a_mobile",
    num_classes: int = 91,
    size: int = 320,
    pretrained: bool | str | Path = False,
    trainable_stages: int | None = None,
    cells: int = 4,
    filters: int = 44,
    extra_channels: Sequence[int] = (512, 256, 256, 128),
    backbone_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> SSD:
    """torchvision's ``SSD`` with a NASNet SSDlite extractor, ``SSDLiteHead`` and default boxes,
    set up as ``ssdlite320_mobilenet_v3_large``.

    Args:
        name_or_genotype: a registered model name, a :class:`Genotype` or a genotype JSON file
            (then ``cells`` per stack and base width ``filters``, ImageNet stem).
        num_classes: classes including the background (COCO: 91).
        size: the square side images are resized to (torchvision: 320).
        pretrained: ImageNet weights for a registered backbone, as :func:`create_model` takes them
            (True, a weights tag or a file); the extra blocks and the head start from random weights.
        trainable_stages: how many of the backbone's deepest strides train (None: all).
        extra_channels: widths of the extra down-sampling blocks.
        backbone_kwargs: more arguments for :func:`torchvision_backbone` (``norm_layer``, NASNet
            fields such as ``bn_momentum``: 0.1 when training from scratch, see
            :func:`~detection.torchvision.detectors.torchvision_detector`).
        kwargs: ``SSD`` arguments, over :data:`SSDLITE_DEFAULTS` (``score_thresh``, ``nms_thresh``,
            ``detections_per_img``, ``topk_candidates``, ``image_mean``, ``image_std``, ...).
    """
    body = torchvision_backbone(name_or_genotype, fpn=False, trainable_stages=trainable_stages,
                                returned_strides=(16, 32), pretrained=pretrained, cells=cells, filters=filters,
                                **(backbone_kwargs or {}))
    norm_layer = _ssdlite_norm()
    extractor = NASNetSSDLiteExtractor(body, extra_channels, norm_layer)
    anchors = DefaultBoxGenerator([[2, 3] for _ in extractor.out_channels], min_ratio=0.2, max_ratio=0.95)
    head = SSDLiteHead(extractor.out_channels, anchors.num_anchors_per_location(), num_classes, norm_layer)
    return SSD(extractor, anchors, (size, size), num_classes, head=head, **{**SSDLITE_DEFAULTS, **kwargs})
