"""RetinaNet with NASNet-A (4 @ 1056) + FPN (P3-P7), COCO 1x schedule: the LazyConfig of
retinanet_nasnet_a_mobile_FPN_1x.yaml (detectron2's model-zoo RetinaNet with the backbone
swapped and NASNet's input convention)."""

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.fpn import LastLevelP6P7

from detection.backbone import NASNetBackbone, nasnet_network
from detection.model_zoo import detectron2_lazy_config

model = detectron2_lazy_config("common/models/retinanet.py").model
dataloader = detectron2_lazy_config("common/data/coco.py").dataloader
optimizer = detectron2_lazy_config("common/optim.py").SGD
lr_multiplier = detectron2_lazy_config("common/coco_schedule.py").lr_multiplier_1x
train = detectron2_lazy_config("common/train.py").train

model.backbone.bottom_up = L(NASNetBackbone)(
    model=L(nasnet_network)(arch="nasnet_a_mobile"),
    out_features=["stride8", "stride16", "stride32"],
    freeze_at=2,
    norm="FrozenBN",
    grad_checkpointing=False,
)
model.backbone.in_features = "${.bottom_up.out_features}"
model.backbone.out_channels = 128  # mobile-sized heads, as in faster_rcnn_nasnet_a_mobile_FPN_1x
# P6 and P7 from P5, as build_nasnet_retinanet_fpn_backbone (the model zoo's ResNet reads C5)
model.backbone.top_block = L(LastLevelP6P7)(in_channels=128, out_channels=128, in_feature="p5")
model.head.input_shape = [ShapeSpec(channels=128)] * 5
model.head.conv_dims = [128] * 4
# Three scales per octave, x, x * 2^(1/3), x * 2^(2/3) for x in 32 .. 512, rounded as in the YAML config
model.anchor_generator.sizes = [[32.0, 40.317, 50.797], [64.0, 80.635, 101.594], [128.0, 161.27, 203.187],
                                [256.0, 322.54, 406.375], [512.0, 645.08, 812.749]]
model.pixel_mean = [127.5, 127.5, 127.5]
model.pixel_std = [127.5, 127.5, 127.5]
model.input_format = "RGB"

dataloader.train.mapper.image_format = "RGB"
dataloader.train.mapper.use_instance_mask = False

optimizer.lr = 0.01
train.init_checkpoint = "nasnet://nasnet_a_mobile"
