"""`nasnet predict` and `nasnet eval imagenet` on a generated ImageFolder with wnid-named folders:
printed labels and accuracies agree with a direct computation, with the official class indices."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import nasnet_backbones as nb
from nasnet_backbones.cli import main
from nasnet_backbones.imagenet import imagenet_classes, wnid_to_index


@pytest.fixture(scope="module")
def mobile_checkpoint(cadene_mobile, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "nasnetamobile-random.pth"
    torch.save(cadene_mobile.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def scored_images(mobile_checkpoint, tmp_path_factory):
    """Random PNG photos and the model's logits on each, computed directly (no CLI)."""
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(12):
        h, w = rng.integers(200, 320, size=2)
        path = folder / f"photo_{i}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    model = nb.create_model("nasnet_a_mobile", pretrained=mobile_checkpoint).eval()
    transform = nb.get_weights("nasnet_a_mobile").transforms()
    with torch.no_grad():
        logits = model(torch.stack([transform(Image.open(p).convert("RGB")) for p in paths]))
    return paths, logits


def test_predict_json_matches_direct_topk(scored_images, mobile_checkpoint, capsys):
    paths, logits = scored_images
    assert main(["predict", *map(str, paths[:3]), "--model", "nasnet_a_mobile", "--weights", str(mobile_checkpoint),
                 "--topk", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    probs = logits[:3].softmax(1)
    for row, p in zip(out, probs):
        expected = p.topk(3)
        assert [r["index"] for r in row["predictions"]] == expected.indices.tolist()
        np.testing.assert_allclose([r["probability"] for r in row["predictions"]], expected.values, rtol=1e-4)
        first = row["predictions"][0]
        cls = imagenet_classes()[first["index"]]
        assert (first["wnid"], first["label"]) == (cls.wnid, cls.name)


def test_predict_optimized_and_as_built_agree(scored_images, mobile_checkpoint, capsys):
    """The default (BatchNorm folded, channels_last) and --no-optimize give the same predictions."""
    paths, _ = scored_images
    common = [*map(str, paths[:2]), "--model", "nasnet_a_mobile", "--weights", str(mobile_checkpoint), "--json"]
    assert main(["predict", *common]) == 0
    fast = json.loads(capsys.readouterr().out)
    assert main(["predict", *common, "--no-optimize"]) == 0
    plain = json.loads(capsys.readouterr().out)
    for a, b in zip(fast, plain):
        assert [r["index"] for r in a["predictions"]] == [r["index"] for r in b["predictions"]]
        np.testing.assert_allclose([r["probability"] for r in a["predictions"]],
                                   [r["probability"] for r in b["predictions"]], rtol=1e-5)
    assert main(["predict", *common, "--no-optimize", "--compile"]) == 2
    assert "drop --no-optimize or --compile" in capsys.readouterr().err


def test_predict_text_output(scored_images, mobile_checkpoint, capsys):
    paths, logits = scored_images
    assert main(["predict", str(paths[0]), "--model", "nasnet_a_mobile", "--weights", str(mobile_checkpoint)]) == 0
    text = capsys.readouterr().out
    best = int(logits[0].argmax())
    assert f"{imagenet_classes()[best].name} ({imagenet_classes()[best].wnid})  [{best}]" in text.splitlines()[1]


def test_eval_imagenet_subset_uses_official_indices(scored_images, mobile_checkpoint, tmp_path, capsys):
    paths, logits = scored_images
    order = logits.argsort(dim=1, descending=True)
    # Put 6 images under their top-1 class, 3 under their 3rd class (top-5 hit), 3 under their
    # least likely class: a few of the 1000 folders, so ImageFolder's own numbering would be wrong.
    rank = [0] * 6 + [2] * 3 + [999] * 3
    val = tmp_path / "val"
    for path, row, r in zip(paths, order, rank):
        wnid = imagenet_classes()[int(row[r])].wnid
        (val / wnid).mkdir(parents=True, exist_ok=True)
        (val / wnid / path.name).write_bytes(path.read_bytes())
    assert main(["eval", "imagenet", "--model", "nasnet_a_mobile", "--weights", str(mobile_checkpoint),
                 "--data", str(val), "--batch-size", "5", "--workers", "0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 12
    assert result["top1"] == pytest.approx(100 * 6 / 12)
    assert result["top5"] == pytest.approx(100 * 9 / 12)
    assert result["classes_present"] == len(list(val.iterdir())) < 1000
    assert result["images_per_s"] > 0 and 0 <= result["data_wait_fraction"] <= 1


def test_eval_imagenet_rejects_folders_that_are_not_wnids(tmp_path, mobile_checkpoint, capsys):
    (tmp_path / "val" / "cats").mkdir(parents=True)
    code = main(["eval", "imagenet", "--model", "nasnet_a_mobile", "--weights", str(mobile_checkpoint),
                 "--data", str(tmp_path / "val"), "--workers", "0"])
    assert code == 2
    assert "'cats' is not an ImageNet-1k WordNet id" in capsys.readouterr().err


def test_eval_imagenet_missing_folder(tmp_path, mobile_checkpoint, capsys):
    code = main(["eval", "imagenet", "--model", "nasnet_a_mobile", "--weights", str(mobile_checkpoint),
                 "--data", str(tmp_path / "nope")])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def test_predict_bad_image_and_no_weights(tmp_path, capsys):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    assert main(["predict", str(bad), "--model", "nasnet_a_mobile"]) == 2
    assert "not an image PIL can read" in capsys.readouterr().err
    good = tmp_path / "x.png"
    Image.new("RGB", (40, 40)).save(good)
    assert main(["predict", str(good), "--model", "darts_v2_cifar"]) == 2
    assert "no pretrained weights are registered for 'darts_v2_cifar'" in capsys.readouterr().err


def test_imagenet_metadata_is_consistent():
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    classes = imagenet_classes()
    assert [c.name for c in classes] == list(_IMAGENET_CATEGORIES)
    wnids = [c.wnid for c in classes]
    assert wnids == sorted(wnids) and len(set(wnids)) == 1000
    assert wnid_to_index("n01440764") == 0 and classes[0].lemmas.startswith("tench")
    with pytest.raises(ValueError, match="not an ImageNet-1k WordNet id"):
        wnid_to_index("n99999999")


def test_imagenet_folder_skips_empty_and_hidden_folders(tmp_path):
    from nasnet_backbones.data import ImageNetFolder

    (tmp_path / "n01440764").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "n01440764" / "a.png")
    (tmp_path / "n01443537").mkdir()  # empty: not a class present
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / "n01440764" / "notes.txt").write_text("not an image")
    dataset = ImageNetFolder(tmp_path)
    assert len(dataset) == 1 and dataset.classes == ["n01440764"] and dataset.targets == [0]


def test_info_accepts_a_weights_tag_in_the_name(capsys):
    assert main(["info", "--model", "nasnet_a_large.cadene_in1k", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model"] == "nasnet_a_large"
    assert [w["name"] for w in info["weights"]] == ["nasnet_a_6_4032.tf_in1k", "nasnet_a_6_4032.cadene_in1k"]
