"""Fuzz cases for images, weights and checkpoints, and the predict / info / draw flags: every image
mode is converted to the pixels it means or refused, weights must be finite floats, checkpoint
headers are bounded, and every refusal is one line naming the file, flag or key, with nothing
changed on disk."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from helpers import expect_clean_error, run_cli, snapshot
from nasnet_backbones import build_nasnet, genotypes
from nasnet_backbones.checkpoint import read_state_dict, save_checkpoint
from nasnet_backbones.images import UnreadableImage, open_rgb
from nasnet_backbones.transforms import cifar10_eval_transform

CLASSES = ["cat", "dog", "eel"]


# ---------------------------------------------------------------- images, mode by mode


def _pgm_16(path, value: int, maxval: int) -> None:
    """A binary PGM with a ``maxval`` that is not a whole number of bits' worth (10-bit data)."""
    path.write_bytes(f"P5 4 4 {maxval}\n".encode() + np.full((4, 4), value, ">u2").tobytes())


def _cmyk_red(path) -> None:
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(path)


def _palette_with_transparency(path) -> None:
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0, 0, 128, 255])
    img.putpixel((1, 1), 1)
    img.save(path, transparency=0)


@pytest.mark.parametrize("name, write, pixel, expected", [
    ("half.png", lambda p: Image.fromarray(np.full((4, 4), 32768, np.uint16)).save(p), (0, 0), (128,) * 3),
    ("full.png", lambda p: Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(p), (0, 0), (255,) * 3),
    ("ten_bit.pgm", lambda p: _pgm_16(p, 512, 1023), (0, 0), (128,) * 3),
    ("float.tiff", lambda p: Image.fromarray(np.full((4, 4), 0.25, np.float32)).save(p), (0, 0), (64,) * 3),
    ("cmyk.tiff", _cmyk_red, (0, 0), (255, 0, 0)),
    ("palette.png", _palette_with_transparency, (0, 0), (255, 255, 255)),  # the transparent index: white
    ("palette_opaque.png", _palette_with_transparency, (1, 1), (0, 128, 255)),
    ("rgba.png", lambda p: Image.new("RGBA", (4, 4), (255, 0, 0, 128)).save(p), (0, 0), (255, 127, 127)),
    ("la.png", lambda p: Image.new("LA", (4, 4), (0, 0)).save(p), (0, 0), (255, 255, 255)),
    ("bilevel.png", lambda p: Image.new("1", (4, 4), 1).save(p), (0, 0), (255, 255, 255)),
])
def test_every_mode_becomes_the_pixels_it_means(tmp_path, name, write, pixel, expected):
    write(tmp_path / name)
    img = open_rgb(tmp_path / name)
    assert img.mode == "RGB"
    assert img.getpixel(pixel) == expected


def test_cmyk_jpeg_is_converted_not_inverted(tmp_path):
    _cmyk_red(tmp_path / "cmyk.jpg")
    r, g, b = open_rgb(tmp_path / "cmyk.jpg").getpixel((4, 4))
    assert r > 240 and g < 15 and b < 15


def test_animated_gif_gives_its_first_frame_and_says_so(tmp_path, caplog):
    frames = [Image.new("RGB", (4, 4), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with caplog.at_level(logging.INFO, logger="nasnet_backbones.images"):
        assert open_rgb(tmp_path / "anim.gif").getpixel((0, 0)) == (255, 0, 0)
    assert "anim.gif has 2 frames" in caplog.text


def _truncated_png(path) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("name, write, says", [
    ("bright.tiff", lambda p: Image.fromarray(np.full((4, 4), 2.0, np.float32)).save(p), "[0, 1]"),
    ("nan.tiff", lambda p: Image.fromarray(np.full((4, 4), np.nan, np.float32)).save(p), "NaN"),
    ("int32.tiff", lambda p: Image.fromarray(np.full((4, 4), 70000, np.int32)).save(p), "32-bit"),
    ("cut.png", _truncated_png, "truncated"),
    ("notes.jpg", lambda p: p.write_text("not a picture"), "not an image"),
    ("missing.png", lambda p: None, "does not exist"),
])
def test_unconvertible_or_broken_images_are_refused_by_name(tmp_path, name, write, says):
    write(tmp_path / name)
    with pytest.raises(UnreadableImage) as caught:
        open_rgb(tmp_path / name)
    assert str(tmp_path / name) in str(caught.value) and says in str(caught.value)


# ---------------------------------------------------------------- a tiny trained model on disk


def _tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    return build_nasnet(genotypes.NASNET_A, num_cells=3, num_filters=8, stem="cifar", num_classes=len(CLASSES),
                        img_size=32).eval()


def _metadata(**preprocessing_changes) -> dict[str, str]:
    preprocessing = {**cifar10_eval_transform().to_dict(), **preprocessing_changes}
    return {"preprocessing": json.dumps(preprocessing), "labels": json.dumps(CLASSES)}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """genotype.json, model.safetensors (with ``nasnet train``'s header) and a photo."""
    folder = tmp_path_factory.mktemp("run")
    genotypes.NASNET_A.to_json(folder / "genotype.json")
    save_checkpoint(_tiny_model(), folder / "model.safetensors", metadata=_metadata())
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / "photo.png")
    return folder


def _predict(run_dir, weights, *images, extra=()):
    return ["predict", *map(str, images or [run_dir / "photo.png"]), "--genotype", run_dir / "genotype.json",
            "--cells", "1", "--filters", "8", "--stem", "cifar", "--weights", weights, "--device", "cpu", *extra]


def test_predict_reads_a_16_bit_png_as_its_8_bit_twin(run_dir, tmp_path, capsys):
    grey = np.random.default_rng(2).integers(0, 256, (36, 36), dtype=np.uint16)
    Image.fromarray(grey.astype(np.uint8)).save(tmp_path / "eight.png")
    Image.fromarray(grey * 257).save(tmp_path / "sixteen.png")  # the same picture at 16 bits
    result = run_cli(capsys, *_predict(run_dir, run_dir / "model.safetensors", tmp_path / "eight.png",
                                       tmp_path / "sixteen.png", extra=["--json", "--topk", "3"]))
    assert result.code == 0, result.err
    eight, sixteen = (row["predictions"] for row in json.loads(result.out))
    assert [p["index"] for p in eight] == [p["index"] for p in sixteen]
    np.testing.assert_allclose([p["probability"] for p in eight], [p["probability"] for p in sixteen], rtol=1e-5)
    assert {p["label"] for p in eight} == set(CLASSES)


def test_integer_buffers_still_load(run_dir):
    state = read_state_dict(run_dir / "model.safetensors")
    counters = [k for k, v in state.items() if k.endswith("num_batches_tracked")]
    assert counters and all(state[k].dtype == torch.int64 for k in counters)


def test_predict_on_a_broken_image_names_it(run_dir, tmp_path, capsys):
    _truncated_png(tmp_path / "cut.png")
    before = snapshot(tmp_path)
    expect_clean_error(capsys, *_predict(run_dir, run_dir / "model.safetensors", run_dir / "photo.png",
                                         tmp_path / "cut.png"), names=[str(tmp_path / "cut.png"), "truncated"])
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- weights: floating point and finite


def _state(poison: str | None = None, value: float | torch.dtype = 0.0):
    """The tiny model's state dict, with tensor ``poison`` filled with ``value`` (or cast to it)."""
    state = {k: v.clone() for k, v in _tiny_model().state_dict().items()}
    if poison is not None:
        tensor = state[poison]
        state[poison] = tensor.to(value) if isinstance(value, torch.dtype) else torch.full_like(tensor, value)
    return state


@pytest.mark.parametrize("name, make, names", [
    ("int32.safetensors", lambda: {k: (v * 100).to(torch.int32) for k, v in _state().items()},
     ["not floating point", "int32"]),
    ("nan.safetensors", lambda: _state("classifier.weight", float("nan")), ["'classifier.weight'", "NaN"]),
    ("inf.pth", lambda: _state("classifier.bias", float("inf")), ["'classifier.bias'", "infinite"]),
    ("int_weight.pth", lambda: _state("stem.conv.weight", torch.int32), ["'stem.conv.weight'", "not floating point"]),
])
def test_weights_that_are_not_finite_floats_are_refused(run_dir, tmp_path, capsys, name, make, names):
    state = make()
    if name.endswith(".safetensors"):
        save_file(state, str(tmp_path / name))
    else:
        torch.save(state, tmp_path / name)
    before = snapshot(tmp_path)
    expect_clean_error(capsys, *_predict(run_dir, tmp_path / name), names=[str(tmp_path / name), *names])
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- checkpoint headers are bounded


@pytest.mark.parametrize("metadata, names", [
    (_metadata(crop_size=30000, resize_size=30000), ["'preprocessing'", "crop_size", "16..4096"]),
    (_metadata(resize_size=20), ["'preprocessing'", "resize_size"]),
    (_metadata(std=[0.2, 0.0, 0.2]), ["'preprocessing'", "std"]),
    (_metadata(mean=[0.5, float("nan"), 0.5]), ["'preprocessing'", "mean"]),
    (_metadata(interpolation="os.system"), ["'preprocessing'", "interpolation"]),
    ({"preprocessing": "{not json", "labels": json.dumps(CLASSES)}, ["'preprocessing'", "not valid JSON"]),
    ({**_metadata(), "labels": json.dumps(CLASSES + ["fox"])}, ["'labels'", "4 classes", "has 3"]),
    ({**_metadata(), "labels": json.dumps({"0": "cat"})}, ["'labels'", "JSON list"]),
])
def test_checkpoint_header_out_of_bounds_is_refused(run_dir, tmp_path, capsys, metadata, names):
    path = tmp_path / "model.safetensors"
    save_file(_state(), str(path), metadata=metadata)
    before = snapshot(tmp_path)
    expect_clean_error(capsys, *_predict(run_dir, path), names=[str(path), *names])
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- malformed checkpoint and genotype files


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("name, write, names", [
    ("cut.safetensors", lambda p, run: p.write_bytes((run / "model.safetensors").read_bytes()[:500]),
     ["not a readable safetensors file"]),
    ("notes.pth", lambda p, run: p.write_text("these are not weights\n"), ["not a PyTorch checkpoint"]),
    ("empty.safetensors", lambda p, run: p.write_bytes(b""), ["not a readable safetensors file"]),
    ("code.pth", lambda p, run: torch.save({"x": _RunsCode(p.parent / "ran")}, p), ["refused to load"]),
])
def test_malformed_checkpoints_name_the_file(run_dir, tmp_path, capsys, name, write, names):
    write(tmp_path / name, run_dir)
    before = snapshot(tmp_path)
    expect_clean_error(capsys, *_predict(run_dir, tmp_path / name), names=[str(tmp_path / name), *names])
    assert snapshot(tmp_path) == before and not (tmp_path / "ran").exists()


@pytest.mark.parametrize("content", [b"{\"normal\": [", b"\x89PNG\r\n\x1a\n\xff\xfe", b"[1, 2]", b"[" * 100000,
                                     b"{}"])
def test_malformed_genotype_json_names_the_file(tmp_path, capsys, content):
    path = tmp_path / "cell.json"
    path.write_bytes(content)
    expect_clean_error(capsys, "info", "--genotype", path, names=[str(path)])
    expect_clean_error(capsys, "draw", path, "-o", tmp_path / "cell.png", names=[str(path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cell.json"]


# ---------------------------------------------------------------- nonsense numbers and flags


@pytest.mark.parametrize("extra, flag", [
    (["--batch-size", "-1"], "--batch-size"),
    (["--batch-size", "0"], "--batch-size"),
    (["--topk", "0"], "--topk"),
    (["--topk", "nan"], "--topk"),
    (["--cells", "0"], "--cells"),
    (["--filters", "-8"], "--filters"),
    (["--device", "gpu7"], "--device"),
])
def test_predict_refuses_nonsense_numbers_at_the_parser(run_dir, capsys, extra, flag):
    expect_clean_error(capsys, *_predict(run_dir, run_dir / "model.safetensors", extra=extra), names=[flag])


@pytest.mark.parametrize("argv, flag", [
    (["--model", "nasnet_a_mobile", "--input-size", "0"], "--input-size"),
    (["--model", "nasnet_a_mobile", "--input-size", "100000"], "--input-size"),
    (["--model", "nasnet_a_mobile", "--input-size", "-5"], "--input-size"),
    (["--model", "nasnet_a_mobile", "--input-size", "64"], "--input-size 64 is too small"),
    (["--genotype", "nasnet_a.json", "--cells", "-1"], "--cells"),
])
def test_info_refuses_nonsense_numbers_at_the_parser(capsys, argv, flag):
    expect_clean_error(capsys, "info", *argv, names=[flag])


def test_draw_into_a_directory_is_refused_and_an_existing_picture_survives(tmp_path, capsys):
    genotypes.NASNET_A.to_json(tmp_path / "cell.json")
    (tmp_path / "pictures.png").mkdir()
    (tmp_path / "old.png").write_bytes(b"old picture")
    before = snapshot(tmp_path)
    expect_clean_error(capsys, "draw", tmp_path / "cell.json", "-o", tmp_path / "pictures.png",
                       names=["-o", str(tmp_path / "pictures.png"), "directory"])
    (tmp_path / "bad.json").write_text("{")
    expect_clean_error(capsys, "draw", tmp_path / "bad.json", "-o", tmp_path / "old.png", names=["bad.json"])
    (tmp_path / "bad.json").unlink()
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("content, says", [("cat\ndog\n", "2 labels for a model with 3 classes"),
                                           (b"\xff\xfe\x00c", "not UTF-8")])
def test_labels_file_that_does_not_fit_is_named(run_dir, tmp_path, capsys, content, says):
    labels = tmp_path / "labels.txt"
    labels.write_bytes(content.encode() if isinstance(content, str) else content)
    expect_clean_error(capsys, *_predict(run_dir, run_dir / "model.safetensors", extra=["--labels", labels]),
                       names=[str(labels), says])
