"""Bad COCO data for `nasnet detect train` (issue 14): a malformed json, bad boxes, ids and masks,
and image files missing under the image root are each refused before training, with one message
naming the json file and the offending entry, and nothing written to the output directory."""

import json
import logging
import math
import time

import numpy as np
import pycocotools.mask as mask_util
import pytest

pytest.importorskip("detectron2")

from helpers import expect_clean_error, run_cli, snapshot  # noqa: E402

from detection.datasets import check_dataset, register_coco_json  # noqa: E402
from detection.model_zoo import get_config  # noqa: E402
from detection.synthetic import make_synthetic  # noqa: E402
from detection.validate import read_coco_json, rle_total, validate_coco_instances  # noqa: E402

CONFIG = "faster_rcnn_nasnet_a_mobile_FPN_1x"
SIZE = 64


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    files = make_synthetic(root, num_images=6, size=SIZE)
    return root, files


@pytest.fixture
def valid(synthetic):
    """A fresh copy of the valid training json's contents, to corrupt."""
    return json.loads(synthetic[1]["train"].read_text())


def _train(capsys, synthetic, tmp_path, train_json, names, *, val_json=None, config=CONFIG, image_root=None):
    """`nasnet detect train` on ``train_json``: refused with exit 2, no traceback, every string of
    ``names`` in the message, and neither the output directory nor the data changed."""
    root, files = synthetic
    out = tmp_path / "run"
    out.mkdir(exist_ok=True)
    (out / "notes.txt").write_text("an earlier run's file\n")
    before, data_before = snapshot(out), snapshot(root)
    err = expect_clean_error(
        capsys, "detect", "train", "--config-file", config, "--dataset-json", train_json,
        "--image-root", image_root or root / "train",
        *(["--val-json", val_json, "--val-image-root", root / "val"] if val_json else []), "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "SOLVER.MAX_ITER", "1",
        "OUTPUT_DIR", out, names=[str(train_json if val_json is None else val_json), *names])
    assert snapshot(out) == before, "a refused run wrote to its output directory (not even its lock file)"
    assert snapshot(root) == data_before
    return err


def _write(tmp_path, data, name="bad.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


# -- the file itself --------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ('{"images": [', "is not valid JSON"),
    ('{"images": [], "annotations": [}', "line 1 column 32"),
    ("[1, 2]", "top level is a list"),
    ('{"images": [], "categories": []}', "no 'annotations'"),
    ('{"images": {}, "annotations": [], "categories": []}', "'images' must be a list"),
    ("\ufeff\xff not text", "not valid JSON"),
])
def test_malformed_json_is_one_clear_error(text, message, synthetic, tmp_path, capsys):
    _train(capsys, synthetic, tmp_path, _write(tmp_path, text), [message])


def test_non_utf8_json_is_one_clear_error(synthetic, tmp_path, capsys):
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"images": [], "name": "caf\xe9"}')
    _train(capsys, synthetic, tmp_path, path, ["not UTF-8"])


# -- boxes, ids, images -----------------------------------------------------------------------

def _annotation(index, **changes):
    def corrupt(data):
        data["annotations"][index].update(changes)
    return corrupt


def _drop(kind, index, key):
    def corrupt(data):
        del data[kind][index][key]
    return corrupt


def _duplicate_image_id(data):
    data["images"][3]["id"] = data["images"][1]["id"]


def _duplicate_annotation_id(data):
    data["annotations"][4]["id"] = data["annotations"][0]["id"]


def _not_an_object(data):
    data["annotations"][1] = [1, 2, 3]


@pytest.mark.parametrize("corrupt, names", [
    (_annotation(2, bbox=[10, 10, -5, 8]), ["annotation id 3 (index 2)", "negative width or height"]),
    (_annotation(2, bbox=[10, 10, 5, 0]), ["annotation id 3 (index 2)", "zero width or height"]),
    (_annotation(1, bbox=[10, float("nan"), 5, 5]), ["annotation id 2 (index 1)", "not finite"]),
    (_annotation(1, bbox=[10, 10, float("inf"), 5]), ["annotation id 2 (index 1)", "not finite"]),
    (_annotation(0, bbox=[50, 10, 30, 5]), ["annotation id 1 (index 0)", f"outside its {SIZE}x{SIZE} image"]),
    (_annotation(0, bbox=[-4, 10, 30, 5]), ["annotation id 1 (index 0)", "outside"]),
    (_annotation(3, bbox=[1, 2, 3]), ["annotation id 4 (index 3)", "four numbers"]),
    (_annotation(3, bbox="1 2 3 4"), ["annotation id 4 (index 3)", "four numbers"]),
    (_annotation(2, image_id=999), ["annotation id 3 (index 2)", "image_id 999 is not the id of any image"]),
    (_annotation(2, image_id=[1]), ["annotation id 3 (index 2)", "image_id [1]"]),
    (_annotation(2, category_id=7), ["annotation id 3 (index 2)", "category_id 7 is not the id of any category"]),
    (_annotation(2, iscrowd=2), ["annotation id 3 (index 2)", "'iscrowd' must be 0 or 1"]),
    (_annotation(2, ignore=1), ["annotation id 3 (index 2)", "'ignore'"]),
    (_drop("annotations", 2, "area"), ["annotation id 3 (index 2)", "'area'"]),
    (_drop("annotations", 2, "iscrowd"), ["annotation id 3 (index 2)", "'iscrowd'"]),
    (_drop("annotations", 2, "id"), ["annotation at index 2", "'id' must be an integer"]),
    (_duplicate_annotation_id, ["annotation id 1 (index 4)", "duplicate annotation id"]),
    (_duplicate_image_id, ["image id 2 (index 3)", "duplicate image id"]),
    (_drop("images", 2, "width"), ["image id 3 (index 2)", "'width' must be"]),
    (_drop("images", 0, "file_name"), ["image id 1 (index 0)", "'file_name'"]),
    (_not_an_object, ["annotation at index 1", "not an object"]),
], ids=["negative-width", "zero-height", "nan", "inf", "past-right-edge", "past-left-edge", "three-numbers",
        "string-bbox", "unknown-image", "unhashable-image-id", "unknown-category", "iscrowd-2", "ignore-1",
        "no-area", "no-iscrowd", "no-id", "duplicate-annotation-id", "duplicate-image-id", "no-width",
        "no-file-name", "annotation-not-object"])
def test_bad_annotations_are_refused_before_training(corrupt, names, valid, synthetic, tmp_path, capsys):
    corrupt(valid)
    _train(capsys, synthetic, tmp_path, _write(tmp_path, valid), names)


def test_every_problem_is_counted_and_the_first_named(valid, synthetic, tmp_path, capsys):
    for ann in valid["annotations"]:
        ann["bbox"][2] = 0
    count = len(valid["annotations"])
    err = _train(capsys, synthetic, tmp_path, _write(tmp_path, valid),
                 [f"{count} problems", "annotation id 1 (index 0)", f"and {count - 5} more"])
    assert f"annotation id {count} " not in err  # only the first few are listed


def test_a_bad_validation_json_is_named(valid, synthetic, tmp_path, capsys):
    valid["annotations"][0]["bbox"] = [0, 0, -1, -1]
    train = synthetic[1]["train"]
    _train(capsys, synthetic, tmp_path, train, ["annotation id 1 (index 0)"], val_json=_write(tmp_path, valid))


def test_panoptic_config_checks_the_instances_json_first(valid, synthetic, tmp_path, capsys):
    valid["annotations"][1]["bbox"] = [0, 0, 0, 3]
    _train(capsys, synthetic, tmp_path, _write(tmp_path, valid), ["annotation id 2 (index 1)"],
           config="panoptic_fpn_nasnet_a_mobile_1x")


def test_predict_classes_json_is_checked(tmp_path, capsys):
    bad = _write(tmp_path, '{"categories": [')
    expect_clean_error(capsys, "detect", "predict", tmp_path / "x.png", "--config-file", CONFIG, "--output-dir",
                       tmp_path / "out", "--dataset-json", bad, names=[str(bad), "not valid JSON"])
    assert not (tmp_path / "out").exists()


# -- image files ------------------------------------------------------------------------------

def test_missing_images_are_counted_and_named(valid, synthetic, tmp_path, capsys):
    for img in valid["images"][1:4]:
        img["file_name"] = f"gone_{img['id']}.png"
    n = len(valid["images"])
    _train(capsys, synthetic, tmp_path, _write(tmp_path, valid),
           [f"3 of {n} images are missing", "gone_2.png", "gone_3.png", "gone_4.png", "--image-root"])


def test_wrong_image_root_names_the_first_images(synthetic, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    root, files = synthetic
    n = len(json.loads(files["train"].read_text())["images"])
    _train(capsys, synthetic, tmp_path, files["train"], [f"{n} of {n} images are missing", str(empty),
                                                         "train_000000.png"], image_root=empty)


# -- masks ------------------------------------------------------------------------------------

def _rle(counts, size=(SIZE, SIZE)):
    return {"size": list(size), "counts": counts}


@pytest.mark.parametrize("segmentation, message", [
    ([[1, 1, 10, 1, 10]], "odd number of coordinates (5)"),
    ([[1, 1, 10, 10]], "has 2 points; a polygon needs at least 3"),
    ([[1, 1, 10, 1, 10, "x"]], "not a list of numbers"),
    ([[1, 1, 10, 1, 10, float("nan")]], "not finite"),
    (_rle("PPYo1", size=(SIZE, SIZE + 1)), f"is not the image's [height, width] [{SIZE}, {SIZE}]"),
    (_rle([10, 20]), f"cover 30 pixels, but its size {SIZE}x{SIZE} has {SIZE * SIZE}"),
    (_rle("0P"), "not a valid compressed RLE string"),  # the last group says more follow
    (_rle([1, -2, SIZE * SIZE + 1]), "non-negative integers"),
    ({"counts": "abc"}, "'size' must be [height, width]"),
    ("polygon", "not a str"),
], ids=["odd-coordinates", "two-points", "non-number", "nan", "rle-size", "rle-short-counts", "rle-truncated",
        "rle-negative", "rle-no-size", "string"])
def test_malformed_masks_are_refused(segmentation, message, valid, synthetic, tmp_path, capsys):
    valid["annotations"][2]["segmentation"] = segmentation
    _train(capsys, synthetic, tmp_path, _write(tmp_path, valid), ["annotation id 3 (index 2)", message])


def test_rle_total_matches_pycocotools():
    rng = np.random.default_rng(0)
    for _ in range(50):
        h, w = (int(v) for v in rng.integers(1, 80, 2))
        mask = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        counts = mask_util.encode(np.asfortranarray(mask))["counts"].decode("ascii")
        assert rle_total(counts) == h * w
    truncated = mask_util.encode(np.asfortranarray(np.eye(9, dtype=np.uint8)))["counts"].decode("ascii")[:-2]
    assert rle_total(truncated) != 81


# -- what passes ------------------------------------------------------------------------------

def test_valid_synthetic_data_passes_quickly(synthetic, tmp_path):
    """Registration (parse, validate) and the dataset check (image files) of a valid json with a
    few thousand annotations take well under a second."""
    root, files = synthetic
    data = json.loads(files["train"].read_text())
    base = data["annotations"]
    data["annotations"] = [{**a, "id": k + 1} for k, a in enumerate(base * math.ceil(3000 / len(base)))]
    big = _write(tmp_path, data, "big.json")
    cfg = get_config(CONFIG)
    start = time.perf_counter()
    register_coco_json("nasnet_fuzz_valid", big, root / "train")
    check_dataset(cfg, "nasnet_fuzz_valid")
    assert time.perf_counter() - start < 3.0
    validate_coco_instances(read_coco_json(files["val"]), json_file=files["val"])


def test_crowd_boxes_and_unused_images_are_warnings(valid, caplog):
    """Crowd regions are not trained on: an empty crowd box is logged, not refused; the same box
    without the crowd flag is an error."""
    valid["annotations"][0].update(iscrowd=1, bbox=[3, 3, 0, 0])
    valid["annotations"] = [a for a in valid["annotations"] if a["image_id"] != valid["images"][-1]["id"]]
    with caplog.at_level(logging.INFO, logger="detection.validate"):
        validate_coco_instances(valid, json_file="crowd.json")
    assert "1 crowd annotations have an empty or out-of-image box" in caplog.text
    assert "images have no annotations" in caplog.text
    valid["annotations"][0]["iscrowd"] = 0
    with pytest.raises(ValueError, match=r"(?s)crowd.json: 1 problem in .*annotation id 1 \(index 0\)"):
        validate_coco_instances(valid, json_file="crowd.json")


def test_a_box_within_the_tolerance_passes(valid):
    valid["annotations"][0]["bbox"] = [-0.5, 0, SIZE + 1.2, SIZE]  # ends 0.7 px past the edge
    validate_coco_instances(valid, json_file="edge.json")


def test_valid_run_gets_past_the_data_checks(synthetic, tmp_path, capsys):
    """With valid data, setup goes on to build the backbone: a bad architecture is then what fails."""
    root, files = synthetic
    result = run_cli(capsys, "detect", "train", "--config-file", CONFIG, "--dataset-json", files["train"],
                     "--image-root", root / "train", "--val-json", files["val"], "--val-image-root", root / "val",
                     "MODEL.WEIGHTS", "", "MODEL.NASNET.ARCH", "nasnet_b", "OUTPUT_DIR", tmp_path / "run")
    assert result.code == 2 and "unknown model 'nasnet_b'" in result.err


# -- file names that leave the image root -----------------------------------------------------

@pytest.mark.parametrize("file_name", ["/etc/passwd", "../val/val_000000.png", "sub/../../x.png", "..\\x.png"],
                         ids=["absolute", "parent", "nested-parent", "backslash-parent"])
def test_file_names_outside_the_image_root_are_refused(file_name, valid, synthetic, tmp_path, capsys):
    valid["images"][1]["file_name"] = file_name
    _train(capsys, synthetic, tmp_path, _write(tmp_path, valid),
           ["image id 2 (index 1)", repr(file_name), "relative to the image root"])


# -- pixels: detection reads images through open_rgb ------------------------------------------

def _tiny_detector_opts(out, max_iter=3, workers=0):
    return ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "MODEL.NASNET.CELLS", "1", "MODEL.NASNET.FILTERS", "8",
            "MODEL.NASNET.NORM", "BN", "MODEL.FPN.OUT_CHANNELS", "16", "MODEL.ROI_BOX_HEAD.FC_DIM", "32",
            "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "20",
            "MODEL.RPN.POST_NMS_TOPK_TEST", "10", "SOLVER.IMS_PER_BATCH", "1", "SOLVER.MAX_ITER", str(max_iter),
            "INPUT.MIN_SIZE_TRAIN", f"({SIZE},)", "INPUT.MAX_SIZE_TRAIN", str(SIZE), "INPUT.MIN_SIZE_TEST",
            str(SIZE), "INPUT.MAX_SIZE_TEST", str(SIZE), "DATALOADER.NUM_WORKERS", str(workers), "OUTPUT_DIR", out]


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_8bit_rgb_pixels_equal_detectron2s_reader(suffix, tmp_path):
    from detectron2.data.detection_utils import read_image
    from PIL import Image

    from detection.datasets import read_detection_image

    path = tmp_path / f"rgb{suffix}"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (21, 34, 3), dtype=np.uint8)).save(path)
    for fmt in ("BGR", "RGB"):
        ours, theirs = read_detection_image(path, fmt), read_image(str(path), format=fmt)
        assert ours.dtype == theirs.dtype == np.uint8 and ours.shape == theirs.shape == (21, 34, 3)
        np.testing.assert_array_equal(ours, theirs)


def test_exif_orientation_is_applied_as_detectron2_applies_it(tmp_path):
    from detectron2.data.detection_utils import read_image
    from PIL import Image

    from detection.datasets import read_detection_image

    img = Image.fromarray(np.random.default_rng(2).integers(0, 256, (10, 30, 3), dtype=np.uint8))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to show it upright
    img.save(tmp_path / "turned.jpg", exif=exif)
    ours, theirs = read_detection_image(tmp_path / "turned.jpg"), read_image(str(tmp_path / "turned.jpg"), "BGR")
    assert ours.shape == (30, 10, 3)
    np.testing.assert_array_equal(ours, theirs)


def test_16bit_png_and_transparency_are_converted_by_open_rgb(tmp_path):
    from PIL import Image

    from detection.datasets import read_detection_image

    Image.fromarray(np.full((8, 8), 32768, np.uint16)).save(tmp_path / "grey16.png")
    assert (read_detection_image(tmp_path / "grey16.png", "RGB") == 128).all()  # detectron2's reader: 255
    rgba = np.zeros((8, 8, 4), np.uint8)  # black, fully transparent: white over white
    Image.fromarray(rgba).save(tmp_path / "clear.png")
    assert (read_detection_image(tmp_path / "clear.png", "BGR") == 255).all()


def test_dataset_mapper_reads_through_open_rgb(synthetic, tmp_path):
    """The trainer's loaders use the mapper: a 16-bit image is scaled, a truncated one named."""
    from PIL import Image

    from detection.datasets import DatasetImageError, OpenRGBDatasetMapper

    cfg = get_config(CONFIG)
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = SIZE, SIZE
    Image.fromarray(np.full((SIZE, SIZE), 65535, np.uint16)).save(tmp_path / "white16.png")
    Image.fromarray(np.full((SIZE, SIZE), 4096, np.uint16)).save(tmp_path / "dark16.png")
    mapper = OpenRGBDatasetMapper(cfg, is_train=False)
    out = mapper({"file_name": str(tmp_path / "dark16.png"), "height": SIZE, "width": SIZE, "image_id": 1})
    assert out["image"].shape == (3, SIZE, SIZE) and int(out["image"].max()) == 16  # 4096 / 65535 * 255
    cut = tmp_path / "cut.png"
    cut.write_bytes((synthetic[0] / "train" / "train_000000.png").read_bytes()[:300])
    with pytest.raises(DatasetImageError, match=r"cut\.png.*(truncated|corrupt)"):
        mapper({"file_name": str(cut), "image_id": 2})
    with pytest.raises(DatasetImageError, match=r"semantic map .*cut\.png"):  # Panoptic FPN's stuff maps
        mapper({"file_name": str(tmp_path / "dark16.png"), "sem_seg_file_name": str(cut), "image_id": 4})
    with pytest.raises(DatasetImageError, match=r"Mismatched image shape .*white16\.png.*evaluation image"):
        mapper({"file_name": str(tmp_path / "white16.png"), "height": SIZE + 1, "width": SIZE, "image_id": 3})
    # DataLoader workers re-raise as type(exc)(text with the worker's traceback): one line survives.
    wrapped = DatasetImageError("Caught DatasetImageError in DataLoader worker process 0.\nOriginal Traceback "
                                "(most recent call last):\n  File \"x.py\", line 1, in f\n    raise\n"
                                "detection.datasets.DatasetImageError: image a.png: bad: it is: cut\n")
    assert str(wrapped) == "image a.png: bad: it is: cut"


def _corrupt_copy(synthetic, tmp_path, split):
    """The synthetic data copied, with every image of ``split`` truncated to its first 300 bytes."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(synthetic[0], root)
    for png in sorted((root / split).glob("*.png")):
        png.write_bytes(png.read_bytes()[:300])
    return root, sorted((root / split).glob("*.png"))


@pytest.fixture
def detectron2_logs(capsys):
    """detectron2's ``setup_logger`` (cached per output folder) binds a handler to the ``sys.stdout``
    of its call: in-process under capsys, a stream closed after that test, which a later run's
    logging would hit ("--- Logging error ---" and a traceback). Drop those handlers around the test."""
    from detectron2.utils import logger as d2_logger

    loggers = [logging.getLogger(name) for name in ("detectron2", "fvcore")]

    def drop(keep):
        for log in loggers:
            for handler in list(log.handlers):
                if handler not in keep or getattr(getattr(handler, "stream", None), "closed", False):
                    log.removeHandler(handler)
        d2_logger.setup_logger.cache_clear()

    drop(keep={h for log in loggers for h in log.handlers})
    before = {h for log in loggers for h in log.handlers}
    yield
    drop(keep=before)


@pytest.mark.parametrize("workers", [0, 1])
def test_truncated_training_image_is_one_error_naming_it(workers, synthetic, tmp_path, capsys, detectron2_logs):
    root, cut = _corrupt_copy(synthetic, tmp_path, "train")
    ann = root / "annotations"
    result = run_cli(capsys, "detect", "train", "--config-file", CONFIG, "--dataset-json", ann / "instances_train.json",
                     "--image-root", root / "train", "--val-json", ann / "instances_val.json", "--val-image-root",
                     root / "val", *_tiny_detector_opts(tmp_path / "run", workers=workers))
    assert result.code == 2, result.err
    assert "Traceback" not in result.err and "Traceback" not in result.out
    assert any(str(p) in result.err for p in cut), result.err
    assert "truncated" in result.err and "training image" in result.err
    errors = [line for line in result.err.splitlines() if "error:" in line]
    assert len(errors) == 1 and any(str(p) in errors[0] for p in cut), result.err  # one line, the file in it
    assert not (tmp_path / "run" / "model_final.pth").exists()


def test_truncated_validation_image_is_one_error_naming_it(synthetic, tmp_path, capsys, detectron2_logs):
    """Through the evaluator's loader (a one-iteration schedule, then evaluation)."""
    root, cut = _corrupt_copy(synthetic, tmp_path, "val")
    ann = root / "annotations"
    err = expect_clean_error(capsys, "detect", "train", "--config-file", CONFIG, "--dataset-json",
                             ann / "instances_train.json", "--image-root", root / "train", "--val-json",
                             ann / "instances_val.json", "--val-image-root", root / "val",
                             *_tiny_detector_opts(tmp_path / "run", max_iter=1), names=["truncated", "evaluation image"])
    assert any(str(p) in err for p in cut), err


def test_truncated_image_in_predict_is_refused_before_writing(synthetic, tmp_path, capsys):
    root, files = synthetic
    cut = tmp_path / "cut.png"
    cut.write_bytes((root / "val" / "val_000000.png").read_bytes()[:300])
    out = tmp_path / "drawn"
    expect_clean_error(capsys, "detect", "predict", root / "val" / "val_000000.png", cut, "--config-file", CONFIG,
                       "--output-dir", out, "--opts", *_tiny_detector_opts(tmp_path / "unused")[:-2],
                       names=[str(cut), "truncated"])
    assert not out.exists()


# -- make-synthetic does not overwrite ---------------------------------------------------------

@pytest.mark.parametrize("flag", ["--output-dir", "--out"])
def test_make_synthetic_refuses_a_folder_that_holds_files(flag, tmp_path, capsys):
    out = tmp_path / "shapes"
    make_synthetic(out, num_images=2, size=32)
    (out / "annotations" / "instances_train.json").write_text("{}")  # edited by hand since
    before = snapshot(out)
    expect_clean_error(capsys, "detect", "make-synthetic", flag, out, "--num-images", "2", "--size", "32",
                       names=[str(out), "not empty"])
    assert snapshot(out) == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine\n")
    expect_clean_error(capsys, "detect", "make-synthetic", "--output-dir", tmp_path / "other", "--num-images", "2",
                       "--size", "32", names=[str(tmp_path / "other"), "notes.txt"])
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine\n" and len(list((tmp_path / "other").iterdir())) == 1
    (tmp_path / "empty").mkdir()
    assert run_cli(capsys, "detect", "make-synthetic", "--output-dir", tmp_path / "empty", "--num-images", "2",
                   "--size", "32").code == 0


# -- the pickle refusal's conversion line ------------------------------------------------------

@pytest.mark.parametrize("name", ["/data/model_final.pth", "/data/model_final.pkl"])
def test_pickle_conversion_line_writes_beside_the_original(name):
    from detection.checkpoint import _pickle_refusal

    message = str(_pickle_refusal(name, "a test"))
    assert "torch.save(" in message and "'/data/model_final.converted.pth')" in message
    assert f", '{name}')" not in message  # never saved over its input
