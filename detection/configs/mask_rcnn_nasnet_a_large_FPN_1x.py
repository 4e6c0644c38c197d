"""Mask R-CNN with NASNet-A (6 @ 4032) + FPN, COCO 1x schedule, ImageNet-initialised: the
LazyConfig of mask_rcnn_nasnet_a_large_FPN_1x.yaml (detectron2's mask_rcnn_R_50_FPN_1x with the
backbone swapped)."""

from .base_nasnet_fpn import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.model.arch = "nasnet_a_large"
train.init_checkpoint = "nasnet://nasnet_a_large"
