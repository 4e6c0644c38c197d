"""NASNet-A (4 @ 1056) + FPN, Faster R-CNN, COCO 1x schedule, ImageNet-initialised: the LazyConfig
of faster_rcnn_nasnet_a_mobile_FPN_1x.yaml."""

from .base_nasnet_fpn import dataloader, lr_multiplier, model, optimizer, train

# A mobile-sized FPN: with R50-FPN's 256 channels the FPN, RPN and box head cost ~8x the
# backbone at 800 pixels (benchmarks/detection_latency.py); 128 channels quarter that.
model.backbone.out_channels = 128
model.roi_heads.update(mask_in_features=None, mask_pooler=None, mask_head=None)
dataloader.train.mapper.use_instance_mask = False
