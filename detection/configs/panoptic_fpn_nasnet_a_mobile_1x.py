"""Panoptic FPN (instances + semantic segmentation) with NASNet-A (4 @ 1056), COCO panoptic 1x
schedule, with the mobile widths of mask_rcnn_nasnet_a_mobile_FPN_1x: the LazyConfig of
panoptic_fpn_nasnet_a_mobile_1x.yaml. The semantic head predicts the "separated" classes: 0 for
any thing, then the stuff categories (54 on COCO)."""

from detectron2.modeling import PanopticFPN

from detection.model_zoo import detectron2_lazy_config

from .base_nasnet_fpn import lr_multiplier, model, optimizer, train

model._target_ = PanopticFPN
# detectron2's semantic FPN head (loss weight 0.5, GroupNorm); it reads the FPN's width
model.sem_seg_head = detectron2_lazy_config("common/models/panoptic_fpn.py").model.sem_seg_head
model.backbone.out_channels = 128
model.roi_heads.mask_head.conv_dims = [128] * 5

dataloader = detectron2_lazy_config("common/data/coco_panoptic_separated.py").dataloader
dataloader.train.mapper.image_format = "RGB"
