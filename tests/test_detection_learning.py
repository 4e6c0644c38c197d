"""Learning tests: detectors with a NASNet-A FPN backbone of mobile depth (N = 4, width reduced to
12 for speed), trained from scratch on the synthetic shapes for 150 iterations at 128 pixels through
`nasnet detect train`, must find and segment them on the held-out split.

- Mask R-CNN: bbox and mask AP50 >= 50 (97-100 measured here; mask AP about 80, box AP 73-79).
- Panoptic FPN: the same, and PQ and mIoU >= 50 (PQ 91, mIoU 95, mask AP 78 measured here).

Faster R-CNN's box learning is the Mask R-CNN test's bbox half (same config without the mask
head). About two and a half and three minutes on one CPU core."""

import json

import pytest

pytest.importorskip("detectron2")

from detection.synthetic import make_synthetic  # noqa: E402
from nasnet_backbones import genotypes  # noqa: E402
from nasnet_backbones.cli import main  # noqa: E402


def _train_on_shapes(config: str, tmp_path) -> dict:
    files = make_synthetic(tmp_path / "data", num_images=250, size=128)
    genotypes.NASNET_A.to_json(tmp_path / "nasnet_a.json")
    code = main([
        "detect", "train", "--config-file", config,
        "--dataset-json", str(files["train"]), "--image-root", str(tmp_path / "data" / "train"),
        "--val-json", str(files["val"]), "--val-image-root", str(tmp_path / "data" / "val"),
        "MODEL.WEIGHTS", "", "MODEL.NASNET.GENOTYPE", str(tmp_path / "nasnet_a.json"),
        "MODEL.NASNET.CELLS", "4", "MODEL.NASNET.FILTERS", "12", "MODEL.NASNET.NORM", "BN",
        "MODEL.BACKBONE.FREEZE_AT", "0", "MODEL.FPN.OUT_CHANNELS", "64", "MODEL.ROI_BOX_HEAD.FC_DIM", "256",
        "MODEL.ROI_MASK_HEAD.CONV_DIM", "64",
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64", "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "400",
        "MODEL.RPN.POST_NMS_TOPK_TRAIN", "200", "MODEL.RPN.PRE_NMS_TOPK_TEST", "200", "MODEL.RPN.POST_NMS_TOPK_TEST", "100",
        "MODEL.ANCHOR_GENERATOR.SIZES", "[[16], [32], [64], [128], [256]]",
        "SOLVER.MAX_ITER", "150", "SOLVER.IMS_PER_BATCH", "8", "SOLVER.BASE_LR", "0.02", "SOLVER.WARMUP_ITERS", "50",
        "SOLVER.STEPS", "(130,)", "SOLVER.CHECKPOINT_PERIOD", "100000",
        "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "128", "INPUT.MIN_SIZE_TEST", "128",
        "INPUT.MAX_SIZE_TEST", "128", "DATALOADER.NUM_WORKERS", "1", "SEED", "0", "OUTPUT_DIR", str(tmp_path / "run"),
    ])
    assert code == 0
    return json.loads((tmp_path / "run" / "results.json").read_text())


@pytest.mark.slow
def test_mask_rcnn_nasnet_fpn_learns_synthetic_shapes(tmp_path):
    results = _train_on_shapes("mask_rcnn_nasnet_a_mobile_FPN_1x", tmp_path)
    assert sorted(results) == ["bbox", "segm"]
    assert results["bbox"]["AP50"] >= 50 and results["segm"]["AP50"] >= 50, results


@pytest.mark.slow
def test_panoptic_fpn_nasnet_learns_synthetic_shapes(tmp_path):
    results = _train_on_shapes("panoptic_fpn_nasnet_a_mobile_1x", tmp_path)
    assert sorted(results) == ["bbox", "panoptic_seg", "segm", "sem_seg"]
    assert results["segm"]["AP50"] >= 50 and results["bbox"]["AP50"] >= 50, results
    assert results["panoptic_seg"]["PQ"] >= 50 and results["sem_seg"]["mIoU"] >= 50, results
