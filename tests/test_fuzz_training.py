"""Bad input and faults for ``nasnet train`` / ``nasnet eval``: exact resume after an interrupt
mid-epoch, ``--seed`` covering the initialisation, one writer per output directory, unreadable
images (named, or skipped and counted), nonsense numbers and conflicting flags refused before
anything is written."""

import json
import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import expect_clean_error, run_cli, snapshot
from nasnet_backbones import build_nasnet, genotypes
from nasnet_backbones.checkpoint import read_state_dict, save_checkpoint
from nasnet_backbones.cli import build_parser
from nasnet_backbones.data import GuardedDataset, SeededSampler, ResumableSampler, load_image_folder
from nasnet_backbones.runlock import run_lock
from nasnet_backbones.training import command as train_command
from nasnet_backbones.training import recipe_for
from nasnet_backbones.training.trainer import Trainer
from nasnet_backbones.training.distributed import DistContext
from nasnet_backbones.transforms import imagenet_train_transform

CPU = DistContext(0, 1, 0, torch.device("cpu"))
CLASSES = 4


def _write_png(path, rng, base):
    arr = np.clip(base + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """4 classes x 5 training PNGs (5 steps of 4 per epoch) and 1 validation PNG per class."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for c in range(CLASSES):
        base = rng.integers(0, 255, 3)
        for split, n in [("train", 5), ("val", 1)]:
            (root / split / f"c{c}").mkdir(parents=True)
            for i in range(n):
                _write_png(root / split / f"c{c}" / f"{i}.png", rng, base)
    genotypes.NASNET_A.to_json(root / "cell.json")
    return root


def _train_args(root, out, *extra, data=None):
    return ["train", "folder", "--genotype", str(root / "cell.json"), "--cells", "1", "--filters", "8", "--stem",
            "cifar", "--scratch", "--data-dir", str(data or root), "--output-dir", str(out), "--epochs", "2",
            "--batch-size", "4", "--workers", "0", "--drop-path-prob", "0.3", "--aux-weight", "0.4", *extra]


def _assert_all_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    differ = [name for name in a if not torch.equal(a[name], b[name])]
    assert not differ, f"{len(differ)} of {len(a)} tensors differ, e.g. {differ[:3]}"


# -- 1. exact resume -------------------------------------------------------------------------

def test_cli_resume_mid_epoch_is_bit_identical(folder, tmp_path, capsys):
    """Stopped at step 7 of 10 (epoch 2, batch 2 of 5) with 2 workers, resumed with none: every
    tensor of the final weights equals an uninterrupted run's (augmentation, drop-path, dropout
    and the data order are functions of the seed and the position, not of the process's history)."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run_cli(capsys, *_train_args(folder, straight)).code == 0
    assert run_cli(capsys, *_train_args(folder, split, "--max-steps", "7", "--workers", "2")).code == 0
    saved = torch.load(split / "last.pth", weights_only=True)
    assert (saved["step"], saved["epoch"], saved["batch_in_epoch"]) == (7, 1, 2)
    assert run_cli(capsys, *_train_args(folder, split, "--resume")).code == 0
    assert json.loads((split / "results.json").read_text())["finished"]
    _assert_all_equal(read_state_dict(straight / "model.safetensors"), read_state_dict(split / "model.safetensors"))
    a = torch.load(straight / "last.pth", weights_only=True)
    b = torch.load(split / "last.pth", weights_only=True)
    _assert_all_equal(a["model"], b["model"])
    _assert_all_equal({f"{k}.{n}": v for k, s in a["optimizer"]["state"].items() for n, v in s.items()},
                      {f"{k}.{n}": v for k, s in b["optimizer"]["state"].items() for n, v in s.items()})


def _tiny_trainer(out, data, seed=0):
    torch.manual_seed(seed)
    model = build_nasnet(genotypes.NASNET_A, num_cells=3, num_filters=8, stem="cifar", num_classes=CLASSES,
                         img_size=32, aux_head=True, drop_path_prob=0.3)
    recipe = recipe_for("folder").with_overrides(epochs=2, batch_size=4, drop_path_prob=0.3, aux_weight=0.4)
    return Trainer(model, recipe, data, None, out, CPU, workers=0, seed=seed, progress=False)


def test_ctrl_c_mid_epoch_resumes_bit_identical(folder, tmp_path, monkeypatch):
    """The Ctrl-C path of the library trainer, interrupted at step 3 (mid-epoch 1)."""
    data = load_image_folder(folder / "train", imagenet_train_transform(32, min_scale=0.08, color_jitter=False))
    straight = _tiny_trainer(tmp_path / "a", data)
    straight.fit()
    interrupted = _tiny_trainer(tmp_path / "b", data)
    step = interrupted._train_step

    def step_then_ctrl_c(images, target):
        loss = step(images, target)
        if interrupted.state.step == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return loss

    monkeypatch.setattr(interrupted, "_train_step", step_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    torch.randn(1000)  # whatever else the process draws before resuming must not matter
    resumed = _tiny_trainer(tmp_path / "b", data)
    resumed.resume()
    assert resumed.state.batch_in_epoch == 3
    resumed.fit()
    _assert_all_equal(straight.model.state_dict(), resumed.model.state_dict())


def test_augmentation_depends_only_on_seed_epoch_and_index(folder):
    data = GuardedDataset(load_image_folder(folder / "train", imagenet_train_transform(32, min_scale=0.08,
                                                                                       color_jitter=False)))
    sampler = SeededSampler(ResumableSampler(len(data), 4, seed=5))
    sampler.set_epoch(1)
    keys = list(sampler)
    first = [data[k][0] for k in keys[:3]]
    torch.manual_seed(123)  # the global RNG's state makes no difference, and is left as it was
    before = torch.get_rng_state()
    again = [data[k][0] for k in reversed(keys[:3])][::-1]
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    sampler.set_epoch(2)
    other = {k[0]: data[k][0] for k in sampler}
    assert not all(torch.equal(other[k[0]], x) for k, x in zip(keys[:3], first))  # a new epoch, new crops


# -- 2. --seed covers the initialisation -------------------------------------------------------

def test_seed_decides_initial_and_final_weights(folder, tmp_path, capsys):
    parser = build_parser()

    def initial(seed):
        args = parser.parse_args(_train_args(folder, tmp_path / "unused", "--seed", str(seed)))
        recipe = train_command._recipe_from_args(args)
        return train_command.build_model(args, recipe, num_classes=CLASSES, img_size=32).state_dict()

    torch.manual_seed(999)
    one = initial(1)
    torch.randn(10)  # the RNG's state before building does not matter
    _assert_all_equal(one, initial(1))
    assert any(not torch.equal(a, b) for a, b in zip(one.values(), initial(2).values()))
    assert not (tmp_path / "unused").exists()

    finals = []
    for name, seed in [("a", "1"), ("b", "1"), ("c", "2")]:
        assert run_cli(capsys, *_train_args(folder, tmp_path / name, "--seed", seed, "--max-steps", "2")).code == 0
        finals.append(read_state_dict(tmp_path / name / "model.safetensors"))
    _assert_all_equal(finals[0], finals[1])
    assert any(not torch.equal(finals[0][k], finals[2][k]) for k in finals[0])
    # Resuming with another seed would change the data order from there on: refused.
    expect_clean_error(capsys, *_train_args(folder, tmp_path / "a", "--seed", "3", "--resume"),
                       names=["seed 1 -> 3"])


# -- 3. one writer per output directory -------------------------------------------------------

def test_second_writer_is_refused_with_the_holder_named(folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(capsys, *_train_args(folder, out, "--max-steps", "1")).code == 0
    with run_lock(out):  # (which rewrites .lock with this process's PID)
        before = snapshot(out)
        expect_clean_error(capsys, *_train_args(folder, out, "--resume"), names=[str(out), f"PID {os.getpid()}"])
        assert snapshot(out) == before
    assert run_cli(capsys, *_train_args(folder, out, "--resume", "--max-steps", "2")).code == 0  # free again


# -- 4. unreadable images ---------------------------------------------------------------------

@pytest.fixture
def folder_with_bad_image(folder, tmp_path):
    """The folder data set plus one truncated JPEG in the training split."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(folder, root)
    good = root / "train" / "c0" / "0.png"
    buf = root / "train" / "c1" / "broken.jpg"
    Image.open(good).convert("RGB").save(buf, quality=90)
    buf.write_bytes(buf.read_bytes()[:200])  # cut off inside the entropy-coded data
    return root, buf


def test_bad_image_stops_training_naming_it_and_resume_works_after_removing_it(folder_with_bad_image, tmp_path,
                                                                                 capsys):
    root, bad = folder_with_bad_image
    out = tmp_path / "run"
    err = expect_clean_error(capsys, *_train_args(root, out, data=root), names=[str(bad), "--skip-bad-images",
                                                                                 "--resume", "last.pth"])
    assert not (out / "results.json").exists()
    saved = torch.load(out / "last.pth", weights_only=True)  # the state at the last completed step
    assert f"after step {saved['step']}" in err
    bad.unlink()
    assert run_cli(capsys, *_train_args(root, out, "--resume", data=root)).code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["finished"] and results["skipped_images"] == 0


def test_skip_bad_images_counts_them(folder_with_bad_image, tmp_path, capsys):
    root, bad = folder_with_bad_image
    out = tmp_path / "run"
    result = run_cli(capsys, *_train_args(root, out, "--skip-bad-images", "--epochs", "3", data=root))
    assert result.code == 0, result.err
    results = json.loads((out / "results.json").read_text())
    # 21 images, batches of 4: 20 used per epoch; the broken one is met in at least one of 3 epochs.
    assert results["finished"] and results["skipped_images"] >= 1
    assert results["unreadable_files"] == [str(bad)]


@pytest.fixture
def imagenet_eval_setup(tmp_path):
    """Two wnid folders with a PNG each plus a garbage .JPEG, and a 1000-class checkpoint."""
    rng = np.random.default_rng(1)
    for wnid in ("n01440764", "n01443537"):
        (tmp_path / "val" / wnid).mkdir(parents=True)
        _write_png(tmp_path / "val" / wnid / "a.png", rng, rng.integers(0, 255, 3))
    bad = tmp_path / "val" / "n01443537" / "garbage.JPEG"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 3)
    genotypes.NASNET_A.to_json(tmp_path / "cell.json")
    torch.manual_seed(0)
    model = build_nasnet(genotypes.NASNET_A, num_cells=3, num_filters=4, stem="imagenet", num_classes=1000,
                         img_size=64)
    save_checkpoint(model, tmp_path / "w.safetensors")
    args = ["eval", "imagenet", "--genotype", str(tmp_path / "cell.json"), "--cells", "1", "--filters", "4",
            "--weights", str(tmp_path / "w.safetensors"), "--data", str(tmp_path / "val"), "--input-size", "64",
            "--batch-size", "2", "--workers", "0", "--device", "cpu"]
    return args, bad


def test_eval_names_a_bad_image_or_skips_it(imagenet_eval_setup, capsys):
    args, bad = imagenet_eval_setup
    expect_clean_error(capsys, *args, names=[str(bad), "--skip-bad-images"])
    result = run_cli(capsys, *args, "--skip-bad-images", "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["images"] == 2 and summary["skipped_images"] == 1 and summary["unreadable_files"] == [str(bad)]


# -- 5. nonsense numbers and conflicting flags ------------------------------------------------

@pytest.mark.parametrize("flag,value", [
    ("--epochs", "-1"), ("--epochs", "0"), ("--max-steps", "0"), ("--batch-size", "0"), ("--batch-size", "-1"),
    ("--lr", "nan"), ("--lr", "-1"), ("--lr", "0"), ("--input-size", "0"), ("--workers", "-1"),
    ("--weight-decay", "-0.1"), ("--drop-path-prob", "1.5"), ("--drop-path-prob", "1"), ("--drop-path-prob", "-0.1"),
    ("--label-smoothing", "2"), ("--ema-decay", "inf"), ("--grad-clip", "-1"), ("--cutout", "-4"),
    ("--warmup-epochs", "nan"), ("--seed", "-1"), ("--optimizer", "adam"), ("--schedule", "linear"),
])
def test_train_refuses_nonsense_numbers_before_writing(folder, tmp_path, capsys, flag, value):
    out = tmp_path / "run"
    expect_clean_error(capsys, *_train_args(folder, out), flag, value, names=[flag, value])
    assert not out.exists()


def test_train_refuses_conflicting_flags_before_writing(folder, tmp_path, capsys):
    out = tmp_path / "run"
    expect_clean_error(capsys, *_train_args(folder, out, "--weights", str(folder / "w.safetensors")),
                       names=["--scratch", "--weights"])
    expect_clean_error(capsys, *_train_args(folder, out, "--resume"), names=["--resume", "last.pth"])
    assert not out.exists()
    inside = folder / "train" / "run"  # its tensorboard/ would become a class folder of the next run
    before = snapshot(folder)
    expect_clean_error(capsys, *_train_args(folder, inside), names=["--output-dir", "inside --data-dir"])
    assert snapshot(folder) == before and not inside.exists()


def test_library_recipe_checks():
    with pytest.raises(ValueError, match="epochs=-1"):
        recipe_for("cifar10").with_overrides(epochs=-1).validate()
    with pytest.raises(ValueError, match="drop_path_prob=1.0"):
        recipe_for("cifar10").with_overrides(drop_path_prob=1.0).validate()
    with pytest.raises(ValueError, match="lr=nan"):
        recipe_for("cifar10").with_overrides(lr=float("nan")).validate()


@pytest.mark.parametrize("flag,value", [("--batch-size", "0"), ("--batch-size", "-1"), ("--workers", "-1"),
                                        ("--input-size", "0")])
def test_eval_refuses_nonsense_numbers(imagenet_eval_setup, capsys, flag, value):
    args, _ = imagenet_eval_setup
    expect_clean_error(capsys, *args, flag, value, names=[flag, value])


def test_bad_validation_image_stops_after_saving(folder, tmp_path, capsys):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(folder, root)
    bad = root / "val" / "c2" / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    out = tmp_path / "run"
    expect_clean_error(capsys, *_train_args(root, out, data=root), names=[str(bad), "--skip-bad-images"])
    assert torch.load(out / "last.pth", weights_only=True)["step"] == 5  # epoch 1 trained and kept
    result = run_cli(capsys, *_train_args(root, out, "--resume", "--skip-bad-images", data=root))
    assert result.code == 0, result.err
    assert json.loads((out / "results.json").read_text())["skipped_images"] == 1  # epoch 2's validation


class _HalfUnreadable(torch.utils.data.Dataset):
    """Samples 0..7; the odd ones raise as an unreadable file does."""

    samples = [(f"img{i}.png", 0) for i in range(8)]

    def __len__(self):
        return 8

    def __getitem__(self, index):
        from nasnet_backbones.images import UnreadableImage

        if index % 2:
            raise UnreadableImage(f"img{index}.png is corrupt")
        return torch.full((3, 32, 32), float(index) / 8), index % CLASSES


def test_batches_left_with_under_two_images_keep_the_schedule(tmp_path):
    torch.manual_seed(0)
    model = build_nasnet(genotypes.NASNET_A, num_cells=3, num_filters=8, stem="cifar", num_classes=CLASSES,
                         img_size=32)
    recipe = recipe_for("folder").with_overrides(epochs=2, batch_size=2)
    trainer = Trainer(model, recipe, _HalfUnreadable(), None, tmp_path, CPU, workers=0, progress=False,
                      skip_bad_images=True)
    summary = trainer.fit()
    assert summary["finished"] and summary["steps"] == summary["total_steps"] == 8
    assert summary["skipped_images"] == 8 and len(summary["unreadable_files"]) == 4
