"""detection/: the backbone contract, every shipped config through build_model, ImageNet
initialisation, COCO evaluation, the synthetic dataset, the CLI, and clear errors for bad input."""

import json
import math
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from PIL import Image

detectron2 = pytest.importorskip("detectron2")

from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.evaluation import COCOEvaluator  # noqa: E402
from detectron2.modeling import build_backbone, build_model  # noqa: E402
from detectron2.structures import BitMasks, Boxes, ImageList, Instances  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

import detection  # noqa: E402
from detection.checkpoint import NASNetDetectionCheckpointer  # noqa: E402
from detection.datasets import register_coco_json  # noqa: E402
from detection.synthetic import make_synthetic  # noqa: E402
from nasnet_backbones import build_nasnet, genotypes, save_checkpoint  # noqa: E402
from nasnet_backbones.cli import main  # noqa: E402
from nasnet_backbones.convert import convert_state_dict  # noqa: E402


def cpu_config(name, **overrides):
    cfg = detection.get_config(name)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    for key, value in overrides.items():
        node = cfg
        *path, leaf = key.split(".")
        for part in path:
            node = getattr(node, part)
        setattr(node, leaf, value)
    return cfg


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    files = make_synthetic(root, num_images=10, size=96)
    return root, files


# -- backbone contract --------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["nasnet_a_mobile", pytest.param("nasnet_a_large", marks=pytest.mark.slow)])
def test_feature_shapes_equal_output_shape(arch):
    cfg = cpu_config("faster_rcnn_nasnet_a_mobile_FPN_1x")
    cfg.MODEL.NASNET.ARCH = arch
    cfg.MODEL.NASNET.OUT_FEATURES = ["stride4", "stride8", "stride16", "stride32"]
    backbone = build_backbone(cfg).bottom_up.eval()
    assert backbone.size_divisibility == 32
    shapes = backbone.output_shape()
    assert [shapes[k].stride for k in shapes] == [4, 8, 16, 32]
    for h, w in [(64, 96), (97, 131), (160, 129)]:  # odd sizes are padded by the ImageList
        images = ImageList.from_tensors([torch.randn(3, h, w)], size_divisibility=backbone.size_divisibility)
        with torch.no_grad():
            features = backbone(images.tensor)
        ph, pw = images.tensor.shape[-2:]
        for name, spec in shapes.items():
            assert features[name].shape[1:] == (spec.channels, math.ceil(ph / spec.stride), math.ceil(pw / spec.stride))
            assert features[name].shape[-2:] == (ph // spec.stride, pw // spec.stride)


def test_mobile_channels_match_tf_slim():
    shapes = build_backbone(cpu_config("faster_rcnn_nasnet_a_mobile_FPN_1x")).bottom_up.output_shape()
    # TF-slim end points at 224: stem 88 (stride 8 stack of 264 behind it), 528 at 16, 1056 at 32.
    assert {k: v.channels for k, v in shapes.items()} == {"stride4": 44, "stride8": 264, "stride16": 528, "stride32": 1056}


def test_freeze_at_and_norm():
    cfg = cpu_config("faster_rcnn_nasnet_a_mobile_FPN_1x")
    cfg.MODEL.BACKBONE.FREEZE_AT = 2
    cfg.MODEL.NASNET.NORM = "BN"
    body = build_backbone(cfg).bottom_up.body
    assert not any(p.requires_grad for p in body.stem.parameters())
    assert not any(p.requires_grad for p in body.cells["stem_0"].parameters())  # stride 4
    assert all(p.requires_grad for p in body.cells["stem_1"].parameters())  # stride 8
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in body.cells["cell_0"].modules())
    cfg.MODEL.NASNET.NORM = "FrozenBN"
    body = build_backbone(cfg).bottom_up.body
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in body.modules())


def test_unused_cells_are_pruned():
    cfg = cpu_config("retinanet_nasnet_a_mobile_FPN_1x")
    cfg.MODEL.NASNET.OUT_FEATURES = ["stride4", "stride8", "stride16"]
    cfg.MODEL.BACKBONE.NAME = "build_nasnet_backbone"
    backbone = build_backbone(cfg)
    assert "reduction_1" not in backbone.body.cells and "cell_11" not in backbone.body.cells


# -- every shipped config: one training and one inference step ---------------------------------

def _batch(size=(96, 128)):
    h, w = size
    inst = Instances((h, w))
    boxes = [[10, 12, 60, 70], [50, 30, 90, 80]]
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.gt_classes = torch.tensor([1, 3])
    masks = torch.zeros(2, h, w, dtype=torch.bool)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes):
        mask[y0:y1, x0:x1] = True
    inst.gt_masks = BitMasks(masks)
    sem_seg = (~masks.any(0)).long()  # Panoptic FPN's separated labels: 0 things, 1 background
    return [{"image": torch.randint(0, 255, (3, h, w)).float(), "height": h, "width": w, "instances": inst,
             "sem_seg": sem_seg}]


@pytest.mark.parametrize("name", detection.list_configs())
def test_shipped_config_trains_and_infers(name):
    cfg = cpu_config(name)
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = 100
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 20
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 16
    cfg.MODEL.NASNET.NORM = "BN"  # random weights: keep activations normalised
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 2
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    with EventStorage(0):
        losses = model(_batch())
    heads = {"loss_mask": cfg.MODEL.MASK_ON, "loss_sem_seg": cfg.MODEL.META_ARCHITECTURE == "PanopticFPN"}
    assert {k for k, wanted in heads.items() if wanted} <= set(losses) and set(losses) & set(heads) <= {
        k for k, wanted in heads.items() if wanted}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in trainable), "every trainable parameter takes part"
    model.eval()
    with torch.no_grad():
        result = model(_batch())[0]
    out = result["instances"]
    assert out.image_size == (96, 128) and out.pred_boxes.tensor.shape[1] == 4
    if cfg.MODEL.MASK_ON:
        assert out.pred_masks.shape == (len(out), 96, 128)
    if cfg.MODEL.META_ARCHITECTURE == "PanopticFPN":
        assert result["sem_seg"].shape == (2, 96, 128)
        panoptic, segments = result["panoptic_seg"]
        assert panoptic.shape == (96, 128) and isinstance(segments, list)


def test_c4_split_passes_two_states_to_the_box_head():
    cfg = cpu_config("faster_rcnn_nasnet_a_large_C4_1x")
    cfg.MODEL.NASNET.ARCH = "nasnet_a_mobile"  # the same split, smaller
    model = build_model(cfg)
    shape = model.backbone.output_shape()["stride16"]
    assert (shape.channels, shape.stride) == (528 + 528, 16)
    head = model.roi_heads.res5
    assert set(head.body.cells) == {"reduction_1", "cell_8", "cell_9", "cell_10", "cell_11"}
    assert head.out_channels == 1056
    assert set(model.backbone.body.cells).isdisjoint(head.body.cells)


# -- ImageNet initialisation --------------------------------------------------------------------

def test_cadene_checkpoint_initialises_the_backbone(cadene_mobile, tmp_path):
    path = tmp_path / "nasnetamobile.pth"
    torch.save(cadene_mobile.state_dict(), path)
    cfg = cpu_config("faster_rcnn_nasnet_a_mobile_FPN_1x")
    model = build_model(cfg)
    NASNetDetectionCheckpointer(model, cfg=cfg).load(str(path))
    reference = detection.backbone.build_nasnet_from_cfg(cfg)
    expected = convert_state_dict(reference, cadene_mobile.state_dict(), skip_head=True)
    body = model.backbone.bottom_up.body.state_dict()
    compared = 0
    for key, value in body.items():
        if key in expected and not key.endswith("num_batches_tracked"):
            torch.testing.assert_close(value, expected[key], msg=key, atol=0, rtol=0)
            compared += 1
    assert compared == len([k for k in body if not k.endswith("num_batches_tracked")])  # every tensor came from it


def test_own_checkpoint_initialises_c4_backbone_and_box_head(genotype_file, tmp_path):
    network = build_nasnet(genotypes.NASNET_A, num_cells=6, num_filters=8, stem="imagenet", num_classes=1000)
    save_checkpoint(network, tmp_path / "cls.safetensors")
    cfg = cpu_config("faster_rcnn_nasnet_a_large_C4_1x")
    cfg.MODEL.NASNET.GENOTYPE, cfg.MODEL.NASNET.CELLS, cfg.MODEL.NASNET.FILTERS = str(genotype_file), 2, 8
    model = build_model(cfg)
    NASNetDetectionCheckpointer(model, cfg=cfg).load(str(tmp_path / "cls.safetensors"))
    source = network.state_dict()
    for prefix, module in (("backbone.body.", model.backbone.body), ("roi_heads.res5.body.", model.roi_heads.res5.body)):
        for key, value in module.state_dict().items():
            if "cells." in key and not key.endswith("num_batches_tracked"):
                torch.testing.assert_close(value, source[key], msg=prefix + key, atol=0, rtol=0)


def test_unrelated_weights_file_is_a_clear_error(tmp_path):
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "x.pth")
    cfg = cpu_config("faster_rcnn_nasnet_a_mobile_FPN_1x")
    with pytest.raises(ValueError, match="neither a detectron2 checkpoint nor a NASNet classification"):
        NASNetDetectionCheckpointer(build_model(cfg), cfg=cfg).load(str(tmp_path / "x.pth"))


# -- data and evaluation ----------------------------------------------------------------------

def test_synthetic_dataset_is_deterministic_with_exact_boxes(tmp_path):
    a = make_synthetic(tmp_path / "a", 6, 64, seed=3)
    b = make_synthetic(tmp_path / "b", 6, 64, seed=3)
    assert a["train"].read_bytes() == b["train"].read_bytes()
    assert (tmp_path / "a" / "val" / "val_000000.png").read_bytes() == (tmp_path / "b" / "val" / "val_000000.png").read_bytes()
    data = json.loads(a["train"].read_text())
    colours = {1: (220, 60, 50), 2: (50, 170, 60), 3: (60, 80, 220)}
    for ann in data["annotations"]:
        image = data["images"][ann["image_id"] - 1]
        pixels = np.asarray(Image.open(tmp_path / "a" / "train" / image["file_name"]))
        x, y, w, h = ann["bbox"]
        inside = (pixels[y : y + h, x : x + w] == colours[ann["category_id"]]).all(axis=2)
        # The shape touches all four sides of its box, and nothing of it lies outside.
        assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
        assert inside.sum() == ann["area"]
        # The mask is exactly the shape's pixels.
        mask = mask_util.decode(ann["segmentation"]).astype(bool)
        shape = np.zeros_like(mask)
        shape[y : y + h, x : x + w] = inside
        assert (mask == shape).all()
    # Panoptic: every pixel in exactly one segment; each thing segment is its instance mask, the
    # background segment the rest; the stuff map says 0 on things and 1 on background.
    panoptic = json.loads((tmp_path / "a" / "annotations" / "panoptic_train.json").read_text())
    assert [c["isthing"] for c in panoptic["categories"]] == [1, 1, 1, 0]
    for image, entry in zip(data["images"], panoptic["annotations"]):
        assert entry["image_id"] == image["id"] and entry["file_name"] == image["file_name"]
        rgb = np.asarray(Image.open(tmp_path / "a" / "panoptic_train" / image["file_name"])).astype(np.int64)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 256**2 * rgb[..., 2]
        stuff = np.asarray(Image.open(tmp_path / "a" / "panoptic_stuff_train" / image["file_name"]))
        instances = [a for a in data["annotations"] if a["image_id"] == image["id"]]
        segments = entry["segments_info"]
        assert len(segments) == len(instances) + 1 and sorted(np.unique(ids)) == [s["id"] for s in segments]
        for segment, ann in zip(segments, instances):
            assert segment["category_id"] == ann["category_id"] and segment["area"] == ann["area"]
            assert ((ids == segment["id"]) == mask_util.decode(ann["segmentation"]).astype(bool)).all()
        background = ids == segments[-1]["id"]
        assert segments[-1]["category_id"] == 4 and segments[-1]["area"] == background.sum()
        assert (stuff == background).all()


def test_coco_evaluator_scores_ground_truth_100(synthetic, tmp_path):
    root, files = synthetic
    name = register_coco_json("synthetic_eval_roundtrip", files["val"], root / "val")
    dicts = DatasetCatalog.get(name)
    evaluator = COCOEvaluator(name, output_dir=str(tmp_path), use_fast_impl=False)
    evaluator.reset()
    meta = MetadataCatalog.get(name)
    contiguous = meta.thing_dataset_id_to_contiguous_id
    for d in dicts:
        inst = Instances((d["height"], d["width"]))
        boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in d["annotations"]]
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        inst.scores = torch.ones(len(boxes))
        inst.pred_classes = torch.tensor([a["category_id"] for a in d["annotations"]], dtype=torch.int64)
        evaluator.process([{"image_id": d["image_id"]}], [{"instances": inst}])
    # register_coco_instances maps category ids to contiguous ones; the annotations above are
    # already contiguous (detectron2's loader converted them).
    assert set(contiguous.values()) == {0, 1, 2}
    results = evaluator.evaluate()
    assert results["bbox"]["AP"] == pytest.approx(100.0)
    assert results["bbox"]["AP50"] == pytest.approx(100.0)


def test_panoptic_evaluators_score_ground_truth_100(synthetic, tmp_path):
    """The trainer's evaluators for a panoptic dataset (COCO boxes and masks, mIoU, PQ), given the
    ground truth as predictions, all report 100: the data, its registration and the evaluators agree."""
    from detection.datasets import register_coco_panoptic_separated_json
    from detection.engine import NASNetTrainer

    root, files = synthetic
    name = register_coco_panoptic_separated_json("synthetic_panoptic_roundtrip", files["val"], root / "val")
    meta = MetadataCatalog.get(name)
    assert meta.stuff_classes == ["things", "background"] and meta.evaluator_type == "coco_panoptic_seg"
    cfg = cpu_config("panoptic_fpn_nasnet_a_mobile_1x")
    evaluator = NASNetTrainer.build_evaluator(cfg, name, str(tmp_path))
    evaluator.reset()
    for d in DatasetCatalog.get(name):
        h, w = d["height"], d["width"]
        anns = d["annotations"]
        masks = torch.stack([torch.from_numpy(mask_util.decode(a["segmentation"])).bool() for a in anns])
        inst = Instances((h, w))
        inst.pred_boxes = Boxes(torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                                               a["bbox"][1] + a["bbox"][3]] for a in anns], dtype=torch.float32))
        inst.scores = torch.ones(len(anns))
        inst.pred_classes = torch.tensor([a["category_id"] for a in anns])  # contiguous already
        inst.pred_masks = masks
        stuff = torch.from_numpy(np.array(Image.open(d["sem_seg_file_name"]))).long()
        sem_seg = torch.nn.functional.one_hot(stuff, 2).permute(2, 0, 1).float()
        panoptic = torch.zeros(h, w, dtype=torch.int32)
        segments = []
        for i, (mask, a) in enumerate(zip(masks, anns), start=1):
            panoptic[mask] = i
            segments.append({"id": i, "category_id": a["category_id"], "isthing": True, "score": 1.0,
                             "instance_id": i - 1})
        panoptic[panoptic == 0] = len(anns) + 1
        segments.append({"id": len(anns) + 1, "category_id": 1, "isthing": False, "area": 0})
        evaluator.process([{"image_id": d["image_id"], "file_name": d["file_name"]}],
                          [{"instances": inst, "sem_seg": sem_seg, "panoptic_seg": (panoptic, segments)}])
    results = evaluator.evaluate()
    assert results["bbox"]["AP"] == pytest.approx(100.0) and results["segm"]["AP"] == pytest.approx(100.0)
    assert results["sem_seg"]["mIoU"] == pytest.approx(100.0)
    assert results["panoptic_seg"]["PQ"] == pytest.approx(100.0)


# -- the command line -------------------------------------------------------------------------

def _tiny_train_args(genotype_file, synthetic, out, flags=(), opts=(), config="faster_rcnn_nasnet_a_mobile_FPN_1x"):
    root, files = synthetic
    return ["detect", "train", "--config-file", config,
            "--dataset-json", str(files["train"]), "--image-root", str(root / "train"),
            "--val-json", str(files["val"]), "--val-image-root", str(root / "val"), *flags,
            "MODEL.WEIGHTS", "", "MODEL.NASNET.GENOTYPE", str(genotype_file), "MODEL.NASNET.CELLS", "1",
            "MODEL.NASNET.FILTERS", "8", "MODEL.NASNET.NORM", "BN", "MODEL.FPN.OUT_CHANNELS", "32",
            "MODEL.ROI_BOX_HEAD.FC_DIM", "64", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
            "MODEL.RPN.POST_NMS_TOPK_TRAIN", "50", "MODEL.RPN.POST_NMS_TOPK_TEST", "20",
            "SOLVER.IMS_PER_BATCH", "2", "SOLVER.BASE_LR", "0.01", "SOLVER.CHECKPOINT_PERIOD", "2",
            "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "96", "INPUT.MIN_SIZE_TEST", "96",
            "INPUT.MAX_SIZE_TEST", "96", "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(out), *opts]


def test_detect_train_resume_eval_and_predict(genotype_file, synthetic, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_tiny_train_args(genotype_file, synthetic, out, opts=["SOLVER.MAX_ITER", "4"])) == 0
    assert (out / "model_0000001.pth").is_file() and (out / "model_final.pth").is_file()
    assert list(out.glob("events.out.tfevents.*"))
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert max(m["iteration"] for m in metrics if "total_loss" in m) == 3
    assert "bbox" in json.loads((out / "results.json").read_text())
    # Resume: continues at iteration 4 from model_final, up to the new MAX_ITER.
    assert main(_tiny_train_args(genotype_file, synthetic, out, ["--resume"], ["SOLVER.MAX_ITER", "6"])) == 0
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    iterations = [m["iteration"] for m in metrics if "total_loss" in m]
    assert iterations[-1] == 5
    assert "Starting training from iteration 4" in (out / "log.txt").read_text()
    capsys.readouterr()
    # Evaluation only, then drawings and JSON for two images.
    assert main(_tiny_train_args(genotype_file, synthetic, out, ["--eval-only"],
                                 ["MODEL.WEIGHTS", str(out / "model_final.pth")])) == 0
    assert "AP50" in json.loads((out / "results.json").read_text())["bbox"]
    root, files = synthetic
    images = sorted((root / "val").glob("*.png"))[:2]
    drawn = tmp_path / "drawn"
    assert main(["detect", "predict", *map(str, images), "--config-file", "faster_rcnn_nasnet_a_mobile_FPN_1x",
                 "--weights", str(out / "model_final.pth"), "--output-dir", str(drawn), "--score-threshold", "0",
                 "--dataset-json", str(files["val"]), "--opts", "MODEL.NASNET.GENOTYPE", str(genotype_file),
                 "MODEL.NASNET.CELLS", "1", "MODEL.NASNET.FILTERS", "8", "MODEL.NASNET.NORM", "BN",
                 "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
                 "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "96"]) == 0  # classes from the json
    detections = json.loads((drawn / "detections.json").read_text())
    assert len(detections) == 2 and all(Path(d["drawing"]).is_file() for d in detections)
    assert Image.open(detections[0]["drawing"]).size == (96, 96)
    for d in detections:
        for det in d["detections"]:
            assert det["label"] in {"square", "disc", "triangle"} and len(det["bbox_xyxy"]) == 4
    results = json.loads((out / "results.json").read_text())  # strict JSON: NaN metrics are null
    assert all(v is None or isinstance(v, float) for v in results["bbox"].values())
    # A detector checkpoint that does not fit the config (80 COCO classes) is an error, not noise.
    assert main(["detect", "predict", str(images[0]), "--config-file", "faster_rcnn_nasnet_a_mobile_FPN_1x",
                 "--weights", str(out / "model_final.pth"), "--output-dir", str(tmp_path / "nope"), "--opts",
                 "MODEL.NASNET.GENOTYPE", str(genotype_file), "MODEL.NASNET.CELLS", "1", "MODEL.NASNET.FILTERS", "8",
                 "MODEL.NASNET.NORM", "BN", "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64"]) == 2
    assert "does not fit this config" in capsys.readouterr().err


@pytest.mark.parametrize("config, tasks", [
    ("mask_rcnn_nasnet_a_mobile_FPN_1x", {"bbox", "segm"}),
    ("panoptic_fpn_nasnet_a_mobile_1x", {"bbox", "segm", "sem_seg", "panoptic_seg"}),
])
def test_mask_and_panoptic_configs_train_and_evaluate(config, tasks, genotype_file, synthetic, tmp_path):
    """Through `nasnet detect train`: the synthetic RLE masks (read as bitmasks), the panoptic files
    found in COCO's layout, the semantic head sized from them, and every evaluator's metrics."""
    out = tmp_path / "run"
    args = _tiny_train_args(genotype_file, synthetic, out, config=config,
                            opts=["SOLVER.MAX_ITER", "2", "MODEL.ROI_MASK_HEAD.CONV_DIM", "16"])
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results) == tasks
    if "panoptic_seg" in tasks:
        assert {"PQ", "SQ", "RQ"} <= set(results["panoptic_seg"]) and "mIoU" in results["sem_seg"]
        config_dump = (out / "config.yaml").read_text()
        assert "NUM_CLASSES: 2" in config_dump  # things + background, from the panoptic json
    assert "MASK_FORMAT: bitmask" in (out / "config.yaml").read_text()
    # Predictions carry each detection's mask as COCO RLE, decodable to the image's size.
    root, files = synthetic
    image = sorted((root / "val").glob("*.png"))[0]
    assert main(["detect", "predict", str(image), "--config-file", str(out / "config.yaml"), "--weights",
                 str(out / "model_final.pth"), "--output-dir", str(tmp_path / "drawn"), "--score-threshold", "0"]) == 0
    detections = json.loads((tmp_path / "drawn" / "detections.json").read_text())[0]["detections"]
    assert detections and all(mask_util.decode(d["segmentation"]).shape == (96, 96) for d in detections)


def test_heads_without_their_annotations_fail_before_training(synthetic, tmp_path, capsys):
    root, files = synthetic
    data = json.loads(files["train"].read_text())
    for ann in data["annotations"]:
        del ann["segmentation"]
    boxes_only = tmp_path / "annotations" / "instances_train.json"
    boxes_only.parent.mkdir()
    boxes_only.write_text(json.dumps(data))
    base = ["--dataset-json", str(boxes_only), "--image-root", str(root / "train"), "MODEL.WEIGHTS", "",
            "OUTPUT_DIR", str(tmp_path / "never")]
    assert main(["detect", "train", "--config-file", "mask_rcnn_nasnet_a_mobile_FPN_1x", *base]) == 2
    assert "have no 'segmentation'" in capsys.readouterr().err
    # Panoptic FPN: the boxes-only json has no panoptic files beside it.
    assert main(["detect", "train", "--config-file", "panoptic_fpn_nasnet_a_mobile_1x", *base]) == 2
    assert "Panoptic FPN needs semantic maps" in capsys.readouterr().err
    # A dataset named outside COCO's layout cannot be matched with its panoptic files.
    elsewhere = tmp_path / "mine.json"
    elsewhere.write_text(files["train"].read_text())
    assert main(["detect", "train", "--config-file", "panoptic_fpn_nasnet_a_mobile_1x", "--dataset-json",
                 str(elsewhere), "--image-root", str(root / "train"), "MODEL.WEIGHTS", ""]) == 2
    assert "COCO's layout" in capsys.readouterr().err
    # A detectron2 instances-only dataset name for a semantic head.
    assert main(["detect", "train", "--config-file", "panoptic_fpn_nasnet_a_mobile_1x", "DATASETS.TRAIN",
                 "('coco_2017_train',)", "MODEL.WEIGHTS", ""]) == 2
    assert "has no semantic maps" in capsys.readouterr().err
    assert not (tmp_path / "never" / "metrics.json").exists()


@pytest.mark.parametrize("overrides, message", [
    (["MODEL.NASNET.ARCH", "nasnet_b"], "MODEL.NASNET.ARCH: unknown model 'nasnet_b'"),
    (["MODEL.FPN.IN_FEATURES", "['stride4', 'stride16']"], "consecutive powers of two"),
    (["MODEL.NASNET.OUT_FEATURES", "['stride4', 'stride64']"], "stride64"),
    (["MODEL.NASNET.NORM", "GN"], "MODEL.NASNET.NORM='GN' is not supported"),
    (["MODEL.NOT_A_KEY", "1"], "config override"),
    (["MODEL.BACKBONE.NAME", "build_nasnet_c4_backbone", "MODEL.NASNET.OUT_FEATURES", "['stride16']"],
     "its box head is MODEL.ROI_HEADS.NAME NASNetC4ROIHeads"),
])
def test_bad_configs_fail_before_training(overrides, message, synthetic, tmp_path, capsys):
    root, files = synthetic
    code = main(["detect", "train", "--config-file", "faster_rcnn_nasnet_a_mobile_FPN_1x", "--dataset-json",
                 str(files["train"]), "--image-root", str(root / "train"), *overrides, "MODEL.WEIGHTS", "",
                 "OUTPUT_DIR", str(tmp_path / "never")])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "never" / "metrics.json").exists()


def test_bad_genotype_and_missing_dataset(tmp_path, synthetic, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema_version": 1, "normal": {"blocks": [], "concat": []}, "reduce": {}}))
    root, files = synthetic
    args = ["detect", "train", "--config-file", "faster_rcnn_nasnet_a_mobile_FPN_1x", "--dataset-json",
            str(files["train"]), "--image-root", str(root / "train"), "MODEL.NASNET.GENOTYPE", str(bad)]
    assert main(args) == 2
    assert f"MODEL.NASNET.GENOTYPE {bad}" in capsys.readouterr().err
    assert main(["detect", "train", "--config-file", "faster_rcnn_nasnet_a_mobile_FPN_1x", "--dataset-json",
                 str(tmp_path / "missing.json"), "--image-root", str(root)]) == 2
    assert "missing.json does not exist" in capsys.readouterr().err
    assert main(["detect", "train", "--config-file", "no_such_config"]) == 2
    assert "no shipped config named 'no_such_config'" in capsys.readouterr().err
    assert main(["detect", "train", "--config-file", "faster_rcnn_nasnet_a_mobile_FPN_1x", "--num-gpus", "2"]) == 2


def test_eval_only_needs_weights_and_a_test_set(synthetic, tmp_path, capsys):
    root, files = synthetic
    base = ["detect", "train", "--config-file", "faster_rcnn_nasnet_a_mobile_FPN_1x", "--eval-only"]
    assert main([*base, "--dataset-json", str(files["val"]), "--image-root", str(root / "val"), "MODEL.WEIGHTS", ""]) == 2
    assert "would evaluate random weights" in capsys.readouterr().err
    assert main([*base, "DATASETS.TEST", "()", "MODEL.WEIGHTS", "x.pth"]) == 2
    assert "--eval-only needs a dataset" in capsys.readouterr().err


def test_builtin_coco_without_files_says_where_to_put_them(tmp_path, monkeypatch, capsys):
    code = main(["detect", "train", "--config-file", "faster_rcnn_nasnet_a_mobile_FPN_1x", "MODEL.WEIGHTS", "",
                 "OUTPUT_DIR", str(tmp_path)])
    assert code == 2
    assert "DETECTRON2_DATASETS" in capsys.readouterr().err
