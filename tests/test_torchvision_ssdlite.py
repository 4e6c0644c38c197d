"""SSDlite with a NASNet extractor in torchvision's SSD, the detector builder shared by export and
benchmarks, and the errors for backbones asked for what they do not have."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection import FasterRCNN, MaskRCNN, ssdlite320_mobilenet_v3_large
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.ssdlite import SSDLiteHead

import nasnet_backbones as nb
from nasnet_backbones import genotypes
from detection.torchvision import (NASNetSSDLiteExtractor, load_detector_weights, ssdlite_nasnet, torchvision_backbone,
                                   torchvision_detector)

TINY = dict(cells=1, filters=4)


def test_extractor_gives_six_maps_at_torchvisions_sizes():
    model = ssdlite_nasnet(genotypes.NASNET_A, num_classes=3, **TINY).eval()  # one image: BN in eval mode
    extractor = model.backbone
    assert isinstance(model, SSD) and isinstance(extractor, NASNetSSDLiteExtractor)
    assert isinstance(model.head, SSDLiteHead)
    with torch.no_grad():
        features = extractor(torch.rand(1, 3, 320, 320))
    assert list(features) == ["0", "1", "2", "3", "4", "5"]
    body = extractor.body.model
    stride16, stride32 = (f["num_chs"] for f in body.feature_info)
    assert extractor.out_channels == [stride16, stride32, 512, 256, 256, 128]
    assert [f.shape[1] for f in features.values()] == extractor.out_channels
    # MobileNetV3's SSDlite at 320 predicts from 20, 10, 5, 3, 2 and 1 pixel maps; so does this one
    reference = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None).eval()
    with torch.no_grad():
        expected = [f.shape[-1] for f in reference.backbone(torch.rand(1, 3, 320, 320)).values()]
    assert [f.shape[-1] for f in features.values()] == expected == [20, 10, 5, 3, 2, 1]


def test_settings_match_torchvisions_ssdlite320():
    ours = ssdlite_nasnet(genotypes.NASNET_A, **TINY)
    reference = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
    for attr in ("score_thresh", "nms_thresh", "detections_per_img", "topk_candidates"):
        assert getattr(ours, attr) == getattr(reference, attr), attr
    assert ours.head.classification_head.num_columns == reference.head.classification_head.num_columns == 91
    for attr in ("min_size", "max_size", "fixed_size", "image_mean", "image_std", "size_divisible"):
        assert getattr(ours.transform, attr) == getattr(reference.transform, attr), attr
    a, b = ours.anchor_generator, reference.anchor_generator
    assert a.aspect_ratios == b.aspect_ratios and a.scales == b.scales
    assert a.num_anchors_per_location() == b.num_anchors_per_location() == [6] * 6
    assert ours.transform.image_mean == [0.5] * 3  # 0-1 to [-1, 1]: NASNet's mean = std = 127.5
    custom = ssdlite_nasnet(genotypes.NASNET_A, num_classes=5, size=192, score_thresh=0.3, **TINY)
    assert custom.transform.fixed_size == (192, 192) and custom.score_thresh == 0.3
    assert custom.head.classification_head.num_columns == 5


def test_ssd_trains_and_detects_in_image_pixels():
    torch.manual_seed(0)
    model = ssdlite_nasnet(genotypes.NASNET_A, num_classes=3, size=128, **TINY)
    images = [torch.rand(3, 100, 140), torch.rand(3, 128, 96)]
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 60.0, 50.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[20.0, 30.0, 90.0, 120.0], [0.0, 0.0, 30.0, 30.0]]),
                "labels": torch.tensor([2, 1])}]
    model.train()
    losses = model(images, targets)
    assert set(losses) == {"bbox_regression", "classification"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    head_grad = model.head.classification_head.module_list[0][1].weight.grad
    cell_grad = model.backbone.body.model.cells["cell_0"].preprocess.conv.weight.grad
    assert head_grad.abs().sum() > 0 and cell_grad.abs().sum() > 0  # the whole network learns
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2 and len(out[0]["boxes"]) == 300  # score_thresh 0.001 keeps detections_per_img
    for image, det in zip(images, out):
        h, w = image.shape[1:]
        assert (det["boxes"][:, 2] <= w).all() and (det["boxes"][:, 3] <= h).all() and (det["boxes"] >= 0).all()
        assert ((det["labels"] >= 1) & (det["labels"] < 3)).all()  # never the background


def test_pretrained_backbone_and_frozen_stages(tmp_path):
    reference = nb.create_model("nasnet_a_mobile")
    torch.save(reference.state_dict(), tmp_path / "weights.pth")
    model = ssdlite_nasnet("nasnet_a_mobile", pretrained=tmp_path / "weights.pth", trainable_stages=2)
    body = model.backbone.body.model
    assert torch.equal(body.cells["cell_11"].preprocess.conv.weight, reference.cells["cell_11"].preprocess.conv.weight)
    assert not body.stem.conv.weight.requires_grad and not body.cells["cell_3"].preprocess.conv.weight.requires_grad
    assert body.cells["cell_7"].preprocess.conv.weight.requires_grad  # strides 16 and 32 train
    assert all(p.requires_grad for p in model.backbone.extra.parameters())


@pytest.mark.parametrize("strides", [(64,), (3,), (8, 64)])
def test_backbone_asked_for_missing_strides_names_the_available_ones(strides):
    with pytest.raises(ValueError, match=r"not available; this network has strides \[2, 4, 8, 16, 32\]"):
        torchvision_backbone(genotypes.NASNET_A, returned_strides=strides, **TINY)
    with pytest.raises(ValueError, match=r"not available; this network has strides \[2, 4, 8, 16, 32\]"):
        torchvision_backbone("nasnet_a_mobile", returned_strides=strides, fpn=False)


def test_backbone_stride_lists_that_name_nothing_are_refused():
    for strides in [(), (16, 16)]:
        with pytest.raises(ValueError, match=r"distinct strides of \[2, 4, 8, 16, 32\]"):
            torchvision_backbone(genotypes.NASNET_A, returned_strides=strides, **TINY)
    body = torchvision_backbone(genotypes.NASNET_A, fpn=False, returned_strides=(8, 16), **TINY)
    with pytest.raises(ValueError, match=r"stride-16 and stride-32 features, got strides \[8, 16\]"):
        NASNetSSDLiteExtractor(body)


def test_detector_builder_kinds_and_errors():
    faster = torchvision_detector("fasterrcnn", genotypes.NASNET_A, 3, fpn_channels=32, min_size=96, max_size=128,
                                  score_thresh=0.2, **TINY)
    assert isinstance(faster, FasterRCNN) and faster.roi_heads.score_thresh == 0.2
    assert faster.transform.min_size == (96,) and faster.transform.max_size == 128
    masks = torchvision_detector("maskrcnn", genotypes.NASNET_A, 3, fpn_channels=32, **TINY)
    assert isinstance(masks, MaskRCNN) and masks.roi_heads.has_mask()
    dense = torchvision_detector("retinanet", genotypes.NASNET_A, 3, fpn_channels=32, **TINY)
    assert list(dense.backbone(torch.rand(1, 3, 128, 128))) == ["0", "1", "2", "p6", "p7"]  # P3 - P7
    ssd = torchvision_detector("ssdlite", genotypes.NASNET_A, 3, min_size=160, **TINY)
    assert ssd.transform.fixed_size == (160, 160)
    with pytest.raises(ValueError, match="unknown detector 'yolo'; choose one of fasterrcnn, maskrcnn"):
        torchvision_detector("yolo")
    with pytest.raises(ValueError, match="fpn_channels must be a multiple of 32, not 48"):
        torchvision_detector("fcos", genotypes.NASNET_A, fpn_channels=48, **TINY)
    with pytest.raises(ValueError, match="fixed square; give its side as min_size"):
        torchvision_detector("ssdlite", genotypes.NASNET_A, max_size=400, **TINY)


def test_detector_weights_load_and_refuse_what_does_not_fit(tmp_path):
    torch.manual_seed(0)
    source = torchvision_detector("ssdlite", genotypes.NASNET_A, 3, min_size=96, **TINY)
    torch.save(source.state_dict(), tmp_path / "ssd.pth")
    torch.manual_seed(1)
    target = torchvision_detector("ssdlite", genotypes.NASNET_A, 3, min_size=96, **TINY)
    load_detector_weights(target, tmp_path / "ssd.pth")
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))
    other = torchvision_detector("ssdlite", genotypes.NASNET_A, 5, min_size=96, **TINY)
    with pytest.raises(ValueError, match=r"does not fit this SSD .*: \d+ with another shape: head\.classification"):
        load_detector_weights(other, tmp_path / "ssd.pth")
    faster = torchvision_detector("fasterrcnn", genotypes.NASNET_A, 3, fpn_channels=32, **TINY)
    with pytest.raises(ValueError, match=r"does not fit this FasterRCNN .*\d+ missing: .*\d+ unexpected: "):
        load_detector_weights(faster, tmp_path / "ssd.pth")
    torch.save({"model": source.state_dict()}, tmp_path / "nested.pth")
    with pytest.raises(ValueError, match=r"is not a state dict \(a dict of tensors"):
        load_detector_weights(target, tmp_path / "nested.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="is not a state dict saved with torch.save"):
        load_detector_weights(target, tmp_path / "junk.pth")
    with pytest.raises(FileNotFoundError, match="do not exist"):
        load_detector_weights(target, tmp_path / "missing.pth")
