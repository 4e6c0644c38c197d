"""NASNet backbones for both detection frameworks.

- detectron2: Faster R-CNN (FPN and the paper's C4), Mask R-CNN, Panoptic FPN, RetinaNet, configs,
  datasets for every head, ImageNet initialisation, and the ``nasnet detect`` commands (the modules
  of this package).
- torchvision: :mod:`detection.torchvision` (backbone with FPN, SSDlite, the five detector
  builders); it needs torchvision only.

When detectron2 is installed, importing the package registers the backbones
(``build_nasnet_backbone``, ``build_nasnet_fpn_backbone``, ``build_nasnet_retinanet_fpn_backbone``,
``build_nasnet_c4_backbone``), the ``NASNetC4ROIHeads``, the ``MODEL.NASNET`` config keys (in
detectron2's own defaults, so its stock ``get_cfg()`` and tools read the shipped configs) and the
``nasnet://`` weights prefix (read by detectron2's own checkpointer too) with detectron2 and
exports the names below; without detectron2 it imports (so that :mod:`detection.torchvision` and
:mod:`detection.synthetic` work) and exports none of them:

>>> import detection
>>> cfg = detection.get_config("faster_rcnn_nasnet_a_mobile_FPN_1x")
>>> from detectron2.modeling import build_model
>>> model = build_model(cfg)

or, as a LazyConfig (``tools/lazyconfig_train_net.py``):

>>> from detectron2.config import instantiate
>>> model = instantiate(detection.get_lazy_config("faster_rcnn_nasnet_a_mobile_FPN_1x").model)
"""

import logging

logger = logging.getLogger(__name__)

try:
    import detectron2  # noqa: F401  (probe only: the registrations below need it)
except ImportError as exc:  # torchvision-only installs: detection.torchvision still works
    logger.debug("detectron2 is not importable (%s); the detectron2 backbones are not registered", exc)
    __all__: list[str] = []
else:
    from .backbone import (NASNetBackbone, NASNetC4Backbone, NASNetC4Head, NASNetC4ROIHeads, build_nasnet_backbone,
                           build_nasnet_c4_backbone, build_nasnet_fpn_backbone,
                           build_nasnet_retinanet_fpn_backbone, nasnet_network)
    from .checkpoint import NASNetDetectionCheckpointer
    from .config import add_nasnet_config, register_nasnet_defaults
    from .model_zoo import (get_config, get_config_file, get_lazy_config, get_lazy_config_file, list_configs,
                            list_lazy_configs)

    register_nasnet_defaults()

    __all__ = [
        "NASNetBackbone", "NASNetC4Backbone", "NASNetC4Head", "NASNetC4ROIHeads", "NASNetDetectionCheckpointer",
        "add_nasnet_config", "register_nasnet_defaults", "build_nasnet_backbone", "build_nasnet_c4_backbone",
        "build_nasnet_fpn_backbone", "build_nasnet_retinanet_fpn_backbone", "get_config", "get_config_file",
        "list_configs", "get_lazy_config", "get_lazy_config_file", "list_lazy_configs", "nasnet_network",
    ]
