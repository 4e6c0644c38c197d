"""Faster R-CNN / Mask R-CNN with a NASNet + FPN backbone, as a LazyConfig: what
Base-NASNet-FPN.yaml is to the YAML configs. detectron2's model-zoo Mask R-CNN FPN (its
``common/models/mask_rcnn_fpn.py``), COCO data, SGD and 1x schedule, with the backbone swapped
and NASNet's input convention (RGB, mean = std = 127.5). The named configs import it and change
what differs; on its own it is NASNet-A mobile with R50-FPN's 256 channels and a mask head."""

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from detection.backbone import NASNetBackbone, nasnet_network
from detection.model_zoo import detectron2_lazy_config

model = detectron2_lazy_config("common/models/mask_rcnn_fpn.py").model
dataloader = detectron2_lazy_config("common/data/coco.py").dataloader
optimizer = detectron2_lazy_config("common/optim.py").SGD
lr_multiplier = detectron2_lazy_config("common/coco_schedule.py").lr_multiplier_1x
train = detectron2_lazy_config("common/train.py").train

# MODEL.NASNET as keywords: nasnet_network(arch=..., or genotype=..., cells=..., filters=...,
# drop_path_prob=..., bn_momentum=...); the backbone returns the ReLU'd deepest cell per stride.
model.backbone.bottom_up = L(NASNetBackbone)(
    model=L(nasnet_network)(arch="nasnet_a_mobile"),
    out_features=["stride4", "stride8", "stride16", "stride32"],
    freeze_at=2,
    norm="FrozenBN",
    grad_checkpointing=False,  # MODEL.NASNET.GRAD_CHECKPOINTING: less memory, one more backbone forward
)
# FPN reads bottom_up.out_features (model zoo's "${.bottom_up.out_features}"); the heads follow its width.
model.proposal_generator.head.in_channels = "${...backbone.out_channels}"
model.roi_heads.box_head.input_shape = L(ShapeSpec)(channels="${....backbone.out_channels}", height=7, width=7)
model.roi_heads.mask_head.input_shape = L(ShapeSpec)(channels="${....backbone.out_channels}", height=14, width=14)
model.pixel_mean = [127.5, 127.5, 127.5]
model.pixel_std = [127.5, 127.5, 127.5]
model.input_format = "RGB"

dataloader.train.mapper.image_format = "RGB"  # the test mapper follows it

# ImageNet initialisation through detectron2's own checkpointer: registered weights, or a local
# classification checkpoint as nasnet:///absolute/path (see detection/checkpoint.py).
train.init_checkpoint = "nasnet://nasnet_a_mobile"
