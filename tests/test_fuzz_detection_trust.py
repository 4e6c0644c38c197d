"""Bad input for the detectron2 side: configs that would run code, pickled or unchecked remote
weights, a second writer on one OUTPUT_DIR, nonsense numbers and conflicting flags. Each is one
clear error (exit 2, no traceback, the file or flag named), runs nothing from the data, and
leaves what exists as it was."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("detectron2")

from detectron2.modeling import build_model  # noqa: E402

import detection  # noqa: E402
from helpers import expect_clean_error, run_cli, snapshot  # noqa: E402
from detection.checkpoint import NASNetDetectionCheckpointer, PickleWeightsRefused  # noqa: E402
from detection.synthetic import make_synthetic  # noqa: E402
from nasnet_backbones.runlock import run_lock  # noqa: E402

CONFIG = "faster_rcnn_nasnet_a_mobile_FPN_1x"


class _Touch:
    """Unpickling this creates ``path``: the stand-in for code a hostile file would run."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return root, make_synthetic(root, num_images=4, size=64)


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "img.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(path)
    return path


def _tiny(genotype_file: Path) -> list[str]:
    """KEY VALUE overrides for a detector that builds and runs in a fraction of a second."""
    return ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.NASNET.GENOTYPE", str(genotype_file),
            "MODEL.NASNET.CELLS", "1", "MODEL.NASNET.FILTERS", "8", "MODEL.NASNET.NORM", "BN",
            "MODEL.FPN.OUT_CHANNELS", "16", "MODEL.ROI_BOX_HEAD.FC_DIM", "32", "MODEL.RPN.POST_NMS_TOPK_TEST", "20",
            "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64", "DATALOADER.NUM_WORKERS", "0"]


def _tiny_cfg(genotype_file: Path):
    cfg = detection.get_config(CONFIG)
    opts = _tiny(genotype_file)
    cfg.merge_from_list(opts)
    return cfg


def _train_args(synthetic, out: Path, genotype_file: Path, *extra: str) -> list[str]:
    root, files = synthetic
    return ["detect", "train", "--config-file", CONFIG, "--dataset-json", str(files["train"]),
            "--image-root", str(root / "train"), *_tiny(genotype_file), "SOLVER.MAX_ITER", "2",
            "SOLVER.IMS_PER_BATCH", "2", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64",
            "OUTPUT_DIR", str(out), *extra]


# -- 1. configs are read safely -----------------------------------------------------------------

def _evil_yaml(marker: Path) -> str:
    return f'MODEL:\n  DEVICE: !!python/object/apply:os.system ["touch {marker}"]\n'


@pytest.mark.parametrize("through_base", [False, True], ids=["in-file", "in-_BASE_"])
@pytest.mark.parametrize("command", ["predict", "train"])
def test_python_tag_in_config_runs_nothing(command, through_base, tmp_path, image, capsys):
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.yaml"
    evil.write_text(_evil_yaml(marker))
    config = evil
    if through_base:
        config = tmp_path / "child.yaml"
        config.write_text("_BASE_: evil.yaml\nSOLVER:\n  MAX_ITER: 3\n")
    out = tmp_path / "out"
    argv = (["detect", "predict", str(image), "--config-file", str(config), "--output-dir", str(out)] if command == "predict"
            else ["detect", "train", "--config-file", str(config), "OUTPUT_DIR", str(out)])
    err = expect_clean_error(capsys, *argv, names=[str(evil), "line 2", "!!python"])
    if through_base:
        assert str(config) in err  # the file the user gave, as well as the base that holds the tag
    assert not marker.exists(), "the config ran code"
    assert not out.exists()


@pytest.mark.parametrize("text, names", [
    ("MODEL: [\n", ["line 2", "not valid YAML"]),
    ("MODEL:\n  NOT_A_KEY: 1\n", ["MODEL.NOT_A_KEY"]),
    ("", ["empty file"]),
    ("- a\n- b\n", ["expected a mapping"]),
    ("_BASE_: missing.yaml\n", ["missing.yaml", "does not exist"]),
    ("_BASE_: bad.yaml\n", ["circular"]),
    ("SOLVER:\n  MAX_ITER: many\n", ["SOLVER.MAX_ITER"]),
], ids=["syntax", "unknown-key", "empty", "list", "missing-base", "circular-base", "wrong-type"])
def test_bad_config_file_is_one_clear_error(text, names, tmp_path, image, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    out = tmp_path / "out"
    expect_clean_error(capsys, "detect", "predict", str(image), "--config-file", str(bad), "--output-dir", str(out),
                       names=[str(bad), *names])
    assert not out.exists()


def test_shipped_configs_still_load_safely():
    for name in detection.list_configs():
        assert detection.get_config(name).MODEL.NASNET.ALLOW_PICKLE_WEIGHTS is False


# -- 2. weights: no pickles without the opt-in, no unchecked downloads ---------------------------

def _evil_pkl(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"model": {"x": _Touch(marker)}, "__author__": "x"}))
    return path, marker


def test_pkl_weights_refused_by_every_command(tmp_path, image, synthetic, genotype_file, capsys):
    evil, marker = _evil_pkl(tmp_path)
    out = tmp_path / "out"
    expect_clean_error(capsys, "detect", "predict", str(image), "--config-file", CONFIG, "--weights", str(evil),
                       "--output-dir", str(out), names=[str(evil), "--allow-pickle", "MODEL.NASNET.ALLOW_PICKLE_WEIGHTS",
                                              "weights_only"])
    expect_clean_error(capsys, *_train_args(synthetic, out, genotype_file, "MODEL.WEIGHTS", str(evil)),
                       names=[str(evil), "--allow-pickle"])
    expect_clean_error(capsys, "export", "detector", "--config-file", CONFIG, "--weights", str(evil),
                       "-o", str(out / "d.onnx"), names=[str(evil), "--allow-pickle"])
    assert not marker.exists(), "the weights ran code"
    assert not out.exists()


def test_pickle_inside_a_pth_is_refused_by_weights_only(tmp_path, image, genotype_file, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"model": {"backbone.x": torch.zeros(1), "payload": _Touch(marker)}}, evil)
    out = tmp_path / "out"
    expect_clean_error(capsys, "detect", "predict", str(image), "--config-file", CONFIG, "--weights", str(evil),
                       "--output-dir", str(out), "--opts", *_tiny(genotype_file), names=[str(evil), "--allow-pickle"])
    assert not marker.exists(), "the weights ran code"
    assert not out.exists()


def _pkl_of(model: torch.nn.Module, path: Path) -> dict[str, np.ndarray]:
    """``model``'s weights as detectron2's model-zoo .pkl stores them: numpy arrays in a plain dict."""
    arrays = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    path.write_bytes(pickle.dumps({"model": arrays, "__author__": "test"}))
    return arrays


def test_pkl_weights_load_with_the_opt_in(tmp_path, image, genotype_file, capsys):
    cfg = _tiny_cfg(genotype_file)
    torch.manual_seed(1)
    source = build_model(cfg)
    arrays = _pkl_of(source, tmp_path / "zoo.pkl")
    torch.manual_seed(2)
    target = build_model(cfg)
    with pytest.raises(PickleWeightsRefused):
        NASNetDetectionCheckpointer(target, cfg=cfg).load(str(tmp_path / "zoo.pkl"))
    NASNetDetectionCheckpointer(target, cfg=cfg, allow_pickle=True).load(str(tmp_path / "zoo.pkl"))
    for key, value in target.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), arrays[key], err_msg=key)
    # the command line: --allow-pickle, and the config key for detectron2-config users
    for flags, opts in ((["--allow-pickle"], []), ([], ["MODEL.NASNET.ALLOW_PICKLE_WEIGHTS", "True"])):
        out = tmp_path / f"out{len(flags)}"
        result = run_cli(capsys, "detect", "predict", str(image), "--config-file", CONFIG, "--weights",
                         str(tmp_path / "zoo.pkl"), "--output-dir", str(out), *flags, "--opts", *_tiny(genotype_file), *opts)
        assert result.code == 0, result.err
        assert (out / "detections.json").is_file()


def test_remote_weights_need_a_hash(tmp_path, image, capsys):
    out = tmp_path / "out"
    for url in ("http://127.0.0.1:9/model_final.pth", "https://example.invalid/weights/model.pth"):
        expect_clean_error(capsys, "detect", "predict", str(image), "--config-file", CONFIG, "--weights", url,
                           "-o", str(out), names=[url, "sha256"])
    expect_clean_error(capsys, "detect", "predict", str(image), "--config-file", CONFIG, "--weights",
                       "http://127.0.0.1:9/m.pth#md5=abc", "-o", str(out), names=["#sha256=HEX"])
    # a hash does not make a remote pickle acceptable; refused before any download
    expect_clean_error(capsys, "detect", "predict", str(image), "--config-file", CONFIG, "--weights",
                       "http://127.0.0.1:9/model-0123abcd.pkl", "-o", str(out), names=["--allow-pickle"])
    assert not out.exists()


def test_file_url_weights_are_hash_checked(tmp_path, genotype_file, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    cfg = _tiny_cfg(genotype_file)
    torch.manual_seed(1)
    source = build_model(cfg)
    served = tmp_path / "served" / "detector.pth"
    served.parent.mkdir()
    torch.save({"model": source.state_dict()}, served)
    digest = hashlib.sha256(served.read_bytes()).hexdigest()
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"

    torch.manual_seed(2)
    target = build_model(cfg)
    with pytest.raises(ValueError, match="does not start with 00000000"):
        NASNetDetectionCheckpointer(target, cfg=cfg).load(served.as_uri() + "#sha256=00000000")
    assert not (cache / "detector.pth").exists() and not any(p.is_file() for p in cache.rglob("*"))
    with pytest.raises(ValueError, match="sha256"):
        NASNetDetectionCheckpointer(target, cfg=cfg).load(served.as_uri())  # no hash at all

    NASNetDetectionCheckpointer(target, cfg=cfg).load(served.as_uri() + f"#sha256={digest[:12]}")
    assert (cache / "detector.pth").is_file()
    for key, value in target.state_dict().items():
        torch.testing.assert_close(value, source.state_dict()[key], atol=0, rtol=0, msg=key)
    # torch.hub's convention: the hash prefix in the file name
    named = served.with_name(f"detector-{digest[:8]}.pth")
    named.write_bytes(served.read_bytes())
    NASNetDetectionCheckpointer(target, cfg=cfg).load(named.as_uri())


# -- 3. one writer per OUTPUT_DIR ---------------------------------------------------------------

def test_second_train_on_a_held_output_dir_is_refused(tmp_path, synthetic, genotype_file, capsys):
    out = tmp_path / "run"
    with run_lock(out):
        before = snapshot(out)
        expect_clean_error(capsys, *_train_args(synthetic, out, genotype_file), names=[str(out), "PID"])
        assert snapshot(out) == before  # no config.yaml, no log, nothing touched


# -- 4. numbers and flag conflicts ----------------------------------------------------------------

@pytest.mark.parametrize("argv, names", [
    (["detect", "predict", "IMG", "--config-file", CONFIG, "-o", "OUT", "--score-threshold", "2"],
     ["--score-threshold"]),
    (["detect", "predict", "IMG", "--config-file", CONFIG, "-o", "OUT", "--score-threshold", "nan"],
     ["--score-threshold"]),
    (["detect", "predict", "IMG", "--config-file", CONFIG, "-o", "OUT", "--opts",
      "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "1.5"], ["MODEL.ROI_HEADS.SCORE_THRESH_TEST"]),
    (["detect", "predict", "IMG", "--config-file", CONFIG, "-o", "OUT", "--opts", "INPUT.MAX_SIZE_TEST", "0"],
     ["INPUT.MAX_SIZE_TEST"]),
    (["detect", "make-synthetic", "--output-dir", "OUT", "--num-images", "-1"], ["--num-images"]),
    (["detect", "make-synthetic", "--output-dir", "OUT", "--size", "0"], ["--size"]),
    (["detect", "make-synthetic", "--output-dir", "OUT", "--seed", "-3"], ["--seed"]),
    (["detect", "train", "--config-file", CONFIG, "--num-gpus", "0"], ["--num-gpus"]),
    (["detect", "train", "--config-file", CONFIG, "--num-machines", "-2"], ["--num-machines"]),
    (["detect", "train", "--config-file", CONFIG, "--machine-rank", "1"], ["--machine-rank", "--num-machines"]),
    (["detect", "train", "--config-file", CONFIG, "--image-root", "IMG"], ["--image-root", "--dataset-json"]),
    (["detect", "train", "--config-file", CONFIG, "--val-json", "IMG"], ["--val-json", "--dataset-json"]),
    (["detect", "train", "--config-file", CONFIG, "--dataset-json", "IMG", "--val-image-root", "OUT"],
     ["--val-image-root", "--val-json"]),
    (["detect", "train", "--config-file", CONFIG, "SOLVER.MAX_ITER", "-1", "OUTPUT_DIR", "OUT"], ["SOLVER.MAX_ITER"]),
    (["detect", "train", "--config-file", CONFIG, "SOLVER.IMS_PER_BATCH", "0", "OUTPUT_DIR", "OUT"],
     ["SOLVER.IMS_PER_BATCH"]),
    (["detect", "train", "--config-file", CONFIG, "SOLVER.BASE_LR", "nan", "OUTPUT_DIR", "OUT"], ["SOLVER.BASE_LR"]),
    (["detect", "train", "--config-file", CONFIG, "INPUT.MIN_SIZE_TRAIN", "(0,)", "OUTPUT_DIR", "OUT"],
     ["INPUT.MIN_SIZE_TRAIN"]),
    (["detect", "train", "--config-file", CONFIG, "MODEL.NASNET.DROP_PATH_PROB", "1.5", "OUTPUT_DIR", "OUT"],
     ["MODEL.NASNET.DROP_PATH_PROB"]),
])
def test_nonsense_numbers_and_conflicts_are_refused(argv, names, tmp_path, image, capsys):
    out = tmp_path / "out"
    argv = [str(image) if a == "IMG" else str(out) if a == "OUT" else a for a in argv]
    expect_clean_error(capsys, *argv, names=names)
    assert not out.exists()
