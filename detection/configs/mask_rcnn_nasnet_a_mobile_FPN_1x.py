"""Mask R-CNN with NASNet-A (4 @ 1056) + FPN, COCO 1x schedule, ImageNet-initialised, with
mobile-sized FPN and heads: the LazyConfig of mask_rcnn_nasnet_a_mobile_FPN_1x.yaml."""

from .base_nasnet_fpn import dataloader, lr_multiplier, model, optimizer, train

model.backbone.out_channels = 128  # as faster_rcnn_nasnet_a_mobile_FPN_1x (R50-FPN's 256 would cost ~8x the backbone)
model.roi_heads.mask_head.conv_dims = [128] * 5  # 4 convolutions and the deconvolution
