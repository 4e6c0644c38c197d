"""NASNet backbones inside torchvision's detection models: training losses, inference outputs,
frozen stages and BatchNorm, and weights through the weights API."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

from nasnet_backbones import genotypes
from detection.torchvision import torchvision_backbone

TINY = dict(cells=1, filters=4)


def _targets(masks: bool = False) -> list[dict[str, torch.Tensor]]:
    target = {"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0], [30.0, 20.0, 60.0, 50.0]]), "labels": torch.tensor([1, 2])}
    if masks:
        m = torch.zeros(2, 64, 64, dtype=torch.uint8)
        m[0, 8:40, 8:40] = 1
        m[1, 20:50, 30:60] = 1
        target["masks"] = m
    return [target, target]


def _run(model: torch.nn.Module, masks: bool = False) -> None:
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    model.train()
    losses = model(images, _targets(masks))
    assert losses and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2 and {"boxes", "scores", "labels"} <= set(out[0])


@pytest.mark.parametrize("head", ["faster_rcnn", "mask_rcnn"])
def test_rcnn_heads_train_and_infer(head):
    backbone = torchvision_backbone(genotypes.NASNET_A, out_channels=32, **TINY)
    assert backbone.out_channels == 32
    cls = FasterRCNN if head == "faster_rcnn" else MaskRCNN
    _run(cls(backbone, num_classes=3, min_size=64, max_size=64), masks=head == "mask_rcnn")


@pytest.mark.parametrize("head", [RetinaNet, FCOS])
def test_dense_heads_with_p6_p7(head):
    backbone = torchvision_backbone(genotypes.NASNET_A, returned_strides=(8, 16, 32), out_channels=32,
                                    extra_blocks=LastLevelP6P7(32, 32), **TINY)
    anchors = AnchorGenerator(((16,), (32,), (64,), (128,), (256,)), ((0.5, 1.0, 2.0),) * 5)
    if head is FCOS:
        anchors = AnchorGenerator(((8,), (16,), (32,), (64,), (128,)), ((1.0,),) * 5)
    _run(head(backbone, num_classes=3, anchor_generator=anchors, min_size=64, max_size=64))


def test_frozen_stages_batchnorm_and_plain_features():
    backbone = torchvision_backbone(genotypes.NASNET_A, trainable_stages=2, norm_layer=FrozenBatchNorm2d, **TINY)
    model = backbone.body.model
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert any(n.startswith("stem.") for n in frozen) and any(n.startswith("cells.stem_0.") for n in frozen)
    assert not any(n.startswith("cells.cell_2.") for n in frozen)  # the stride-32 stage trains
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    plain = torchvision_backbone(genotypes.NASNET_A, fpn=False, **TINY)
    features = plain(torch.rand(1, 3, 64, 64))
    assert list(features) == ["0", "1", "2", "3"] and plain.strides == [4, 8, 16, 32]
    assert features["3"].shape[1] == plain.out_channels and features["3"].shape[-1] == 2
    with pytest.raises(ValueError, match="trainable_stages must be between 0 and"):
        torchvision_backbone(genotypes.NASNET_A, trainable_stages=9, **TINY)


def test_pretrained_weights_load_through_the_weights_api(tmp_path):
    from nasnet_backbones import create_model

    reference = create_model("nasnet_a_mobile")
    torch.save(reference.state_dict(), tmp_path / "weights.pth")
    backbone = torchvision_backbone("nasnet_a_mobile", pretrained=tmp_path / "weights.pth", fpn=False)
    got = backbone.model.cells["cell_11"].preprocess.conv.weight
    assert torch.equal(got, reference.cells["cell_11"].preprocess.conv.weight)
    with pytest.raises(ValueError, match="pretrained weights exist for registered models only"):
        torchvision_backbone(genotypes.NASNET_A, pretrained=True, **TINY)
