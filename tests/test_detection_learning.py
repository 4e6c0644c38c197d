"""Learning tests: detectors with a NASNet-A FPN backbone of mobile depth (N = 4, width reduced to
12 for speed), trained from scratch on the synthetic shapes for 150 iterations at 128 pixels through
`nasnet detect train`, must find them on the held-out split.

- Faster R-CNN: bbox AP50 >= 50 (it reaches 100 here, AP about 75).
- Mask R-CNN: bbox and mask AP50 >= 50 (both reach 97-100 here; mask AP about 80, box AP 73-79).

About two and a half minutes each on one CPU core."""

import json

import pytest

pytest.importorskip("detectron2")

from detection.synthetic import make_synthetic  # noqa: E402
from nasnet_backbones import genotypes  # noqa: E402
from nasnet_backbones.cli import main  # noqa: E402


@pytest.mark.slow
@pytest.mark.parametrize("config, tasks", [
    ("faster_rcnn_nasnet_a_mobile_FPN_1x", ["bbox"]),
    ("mask_rcnn_nasnet_a_mobile_FPN_1x", ["bbox", "segm"]),
])
def test_nasnet_fpn_detector_learns_synthetic_shapes(config, tasks, tmp_path):
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
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert sorted(results) == sorted(tasks)
    for task in tasks:
        assert results[task]["AP50"] >= 50, results
