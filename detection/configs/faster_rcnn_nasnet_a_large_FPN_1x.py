"""NASNet-A (6 @ 4032) + FPN, Faster R-CNN, COCO 1x schedule, ImageNet-initialised: the LazyConfig
of faster_rcnn_nasnet_a_large_FPN_1x.yaml."""

from .base_nasnet_fpn import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.model.arch = "nasnet_a_large"
model.roi_heads.update(mask_in_features=None, mask_pooler=None, mask_head=None)
dataloader.train.mapper.use_instance_mask = False
train.init_checkpoint = "nasnet://nasnet_a_large"
