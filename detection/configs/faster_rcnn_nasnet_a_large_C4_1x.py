"""The paper's detector (Section 4.3; TF faster_rcnn_nas) as a LazyConfig, the twin of
faster_rcnn_nasnet_a_large_C4_1x.yaml: NASNet-A (6 @ 4032), the RPN on the concatenated outputs of
the last two stride-16 cells, the reduction cell and the last stack as the per-region box head;
1200-pixel inputs. detectron2's model-zoo C4 model (``common/models/mask_rcnn_c4.py``) without masks."""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from detection.backbone import NASNetC4Backbone, NASNetC4Head, nasnet_network
from detection.model_zoo import detectron2_lazy_config

model = detectron2_lazy_config("common/models/mask_rcnn_c4.py").model
dataloader = detectron2_lazy_config("common/data/coco.py").dataloader
optimizer = detectron2_lazy_config("common/optim.py").SGD
lr_multiplier = detectron2_lazy_config("common/coco_schedule.py").lr_multiplier_1x
train = detectron2_lazy_config("common/train.py").train

model.backbone = L(NASNetC4Backbone)(
    model=L(nasnet_network)(arch="nasnet_a_large"), freeze_at=2, norm="FrozenBN", grad_checkpointing=False)
model.proposal_generator.in_features = ["stride16"]
# The RPN reads both stride-16 outputs concatenated: 2 x 2016 channels for NASNet-A large
# (change with the network: 2 x its stride-16 width). TF's box predictor depth, 512: the default
# (the input width) would be 146M parameters.
model.proposal_generator.head.in_channels = 4032
model.proposal_generator.head.conv_dims = [512]
model.roi_heads.in_features = ["stride16"]
# The box head: the cells after the last stride-16 one, built from the same network (their own copy)
model.roi_heads.res5 = L(NASNetC4Head)(model="${...backbone.model}", norm="FrozenBN", grad_checkpointing=False)
model.roi_heads.box_predictor.input_shape = L(ShapeSpec)(channels=4032, height=1, width=1)  # the last cell's width
model.roi_heads.mask_head = None
model.pixel_mean = [127.5, 127.5, 127.5]
model.pixel_std = [127.5, 127.5, 127.5]
model.input_format = "RGB"

dataloader.train.mapper.image_format = "RGB"
dataloader.train.mapper.use_instance_mask = False
dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=(1200,), sample_style="choice", max_size=2000),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.test.mapper.augmentations = [L(T.ResizeShortestEdge)(short_edge_length=1200, max_size=2000)]

train.init_checkpoint = "nasnet://nasnet_a_large"
