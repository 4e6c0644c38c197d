"""NASNet backbones for detectron2: Faster R-CNN (FPN and the paper's C4), Mask R-CNN, Panoptic FPN,
RetinaNet, configs, datasets for every head, ImageNet initialisation, and the ``nasnet detect`` commands.

Importing the package registers the backbones (``build_nasnet_backbone``,
``build_nasnet_fpn_backbone``, ``build_nasnet_retinanet_fpn_backbone``, ``build_nasnet_c4_backbone``),
the ``NASNetC4ROIHeads`` and the ``nasnet://`` weights prefix with detectron2:

>>> import detection
>>> cfg = detection.get_config("faster_rcnn_nasnet_a_mobile_FPN_1x")
>>> from detectron2.modeling import build_model
>>> model = build_model(cfg)
"""

from .backbone import (NASNetBackbone, NASNetC4Backbone, NASNetC4ROIHeads, build_nasnet_backbone,
                       build_nasnet_c4_backbone, build_nasnet_fpn_backbone, build_nasnet_retinanet_fpn_backbone)
from .checkpoint import NASNetDetectionCheckpointer
from .config import add_nasnet_config
from .model_zoo import get_config, get_config_file, list_configs

__all__ = [
    "NASNetBackbone", "NASNetC4Backbone", "NASNetC4ROIHeads", "NASNetDetectionCheckpointer", "add_nasnet_config",
    "build_nasnet_backbone", "build_nasnet_c4_backbone", "build_nasnet_fpn_backbone",
    "build_nasnet_retinanet_fpn_backbone", "get_config", "get_config_file", "list_configs",
]
