"""Training: recipes, the CIFAR-10 reader on files in the official format, exact-step resume,
loss going down, checkpoints and the final JSON, and a two-process torchrun (Gloo) run."""

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset
from torchvision import datasets

from nasnet_backbones import build_nasnet, genotypes
from nasnet_backbones.checkpoint import read_state_dict
from nasnet_backbones.cli import main
from nasnet_backbones.data import ResumableSampler, load_cifar10
from nasnet_backbones.training import Trainer, recipe_for
from nasnet_backbones.training.distributed import DistContext

CPU = DistContext(0, 1, 0, torch.device("cpu"))


def test_cifar10_loader_reads_the_official_format(tiny_cifar):
    train = load_cifar10(tiny_cifar, train=True, download=False)
    test = load_cifar10(tiny_cifar, train=False, download=False)
    assert len(train) == 40 and len(test) == 8
    image, label = train[0]
    assert image.size == (32, 32) and 0 <= label < 10
    entry = pickle.loads((tiny_cifar / "cifar-10-batches-py" / "data_batch_1").read_bytes())
    expected = entry["data"][0].reshape(3, 32, 32).transpose(1, 2, 0)
    np.testing.assert_array_equal(np.asarray(image), expected)
    assert train.classes[0] == "airplane"


def test_cifar10_corrupted_files_are_reported_not_deleted(tiny_cifar, monkeypatch):
    monkeypatch.setattr(datasets.CIFAR10, "test_list", [["test_batch", "0" * 32]])
    with pytest.raises(ValueError, match="fail torchvision's md5 check"):
        load_cifar10(tiny_cifar, train=False)
    assert (tiny_cifar / "cifar-10-batches-py" / "test_batch").is_file()


def test_cifar10_missing_and_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.CIFAR10, "url", (tmp_path / "offline" / "cifar-10-python.tar.gz").as_uri())
    with pytest.raises(FileNotFoundError, match="could not be downloaded.*cifar-10-python.tar.gz"):
        load_cifar10(tmp_path / "data", train=True)
    with pytest.raises(FileNotFoundError, match="CIFAR-10 is not in"):
        load_cifar10(tmp_path / "data", train=True, download=False)


def test_train_cifar10_command(tiny_cifar, tmp_path, capsys):
    cell = tmp_path / "cell.json"
    genotypes.NASNET_A.to_json(cell)
    out = tmp_path / "run"
    code = main(["train", "cifar10", "--genotype", str(cell), "--cells", "1", "--filters", "8", "--data-dir",
                 str(tiny_cifar), "--output-dir", str(out), "--epochs", "1", "--batch-size", "8", "--workers", "0",
                 "--no-download"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["finished"] and results["steps"] == 5 and results["top1"] is not None
    recipe = results["recipe"]
    assert (recipe["optimizer"], recipe["schedule"], recipe["aux_weight"], recipe["grad_clip"], recipe["cutout"]) == \
        ("sgd", "cosine", 0.4, 5.0, 16)
    assert (out / "labels.txt").read_text().split()[:2] == ["airplane", "automobile"]
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert "aux_head.fc.weight" in read_state_dict(out / "model.safetensors")


def test_recipes_follow_the_paper():
    cifar, imagenet = recipe_for("cifar10"), recipe_for("imagenet", "nasnet_a_4_1056")
    assert (cifar.epochs, cifar.batch_size, cifar.lr, cifar.weight_decay) == (600, 32, 0.025, 5e-4)
    assert (imagenet.optimizer, imagenet.schedule, imagenet.label_smoothing, imagenet.ema_decay) == \
        ("rmsprop", "exponential", 0.1, 0.9999)
    assert imagenet.learning_rate(50 * 32) == pytest.approx(0.04 * 50)  # TF-slim: 0.04 x 50 replicas of 32
    large = recipe_for("imagenet", "nasnet_a_6_4032")
    assert large.learning_rate(100 * 16) == pytest.approx(0.015 * 100) and large.weight_decay == 5e-5
    with pytest.raises(ValueError, match="unknown dataset"):
        recipe_for("mnist")


# -- the loop ---------------------------------------------------------------------------------

def _separable_data(n=64, seed=0):
    """10 classes, each a different mean colour plus noise: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    means = torch.linspace(-1.5, 1.5, 10)
    images = means[labels].view(n, 1, 1, 1) + 0.3 * torch.randn(n, 3, 32, 32, generator=g)
    images[:, 1] *= -1
    return TensorDataset(images, labels)


def _tiny_model():
    torch.manual_seed(0)
    return build_nasnet(genotypes.NASNET_A, num_cells=3, num_filters=8, stem="cifar", num_classes=10, img_size=32,
                        aux_head=True, drop_path_prob=0.0)


def _trainer(out, **overrides):
    recipe = recipe_for("cifar10").with_overrides(**{"epochs": 3, "batch_size": 16, "lr": 0.05, **overrides})
    data = _separable_data()
    return Trainer(_tiny_model(), recipe, data, data, out, CPU, workers=0, seed=0)


def test_loss_goes_down_and_checkpoints_are_written(tmp_path):
    summary = _trainer(tmp_path).fit()
    losses = [h["train_loss"] for h in summary["history"]]
    assert len(losses) == 3 and losses[-1] < 0.8 * losses[0]
    assert summary["steps"] == summary["total_steps"] == 12 and summary["finished"]
    ckpt = torch.load(tmp_path / "last.pth", weights_only=True)  # plain tensors and containers only
    assert ckpt["step"] == 12 and ckpt["epoch"] == 3
    assert (tmp_path / "best.safetensors").is_file() and (tmp_path / "model.safetensors").is_file()


def test_resume_continues_from_the_same_step(tmp_path):
    """Interrupt mid-epoch, resume in a fresh trainer: the same weights as an uninterrupted run."""
    straight = _trainer(tmp_path / "a")
    straight.fit()
    first = _trainer(tmp_path / "b")
    first.fit(max_steps=6)  # epoch 2 of 3, batch 2 of 4
    saved = torch.load(tmp_path / "b" / "last.pth", weights_only=True)
    assert (saved["step"], saved["epoch"], saved["batch_in_epoch"]) == (6, 1, 2)
    resumed = _trainer(tmp_path / "b")
    resumed.resume()
    assert resumed.state.step == 6
    assert resumed.scheduler.get_last_lr() == first.scheduler.get_last_lr()
    resumed.fit()
    assert resumed.state.step == 12
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name, atol=1e-5, rtol=1e-4)


def test_ema_weights_are_exported(tmp_path):
    trainer = _trainer(tmp_path, ema_decay=0.5)
    trainer.fit()
    exported = read_state_dict(tmp_path / "model.safetensors")
    torch.testing.assert_close(exported["classifier.weight"], trainer.ema.module.classifier.weight.detach())
    assert not torch.equal(exported["classifier.weight"], trainer.model.classifier.weight.detach())


@pytest.mark.parametrize("world_size", [1, 2])
def test_resumable_sampler_resumes_the_same_order(world_size):
    for rank in range(world_size):
        full = ResumableSampler(37, batch_size=4, seed=3, rank=rank, world_size=world_size)
        full.set_epoch(2)
        order = list(full)
        part = ResumableSampler(37, batch_size=4, seed=3, rank=rank, world_size=world_size)
        part.set_epoch(2, start_batch=3)
        assert list(part) == order[12:] and len(part) == len(order) - 12
    shards = []
    for rank in range(world_size):
        s = ResumableSampler(37, batch_size=4, seed=3, rank=rank, world_size=world_size)
        s.set_epoch(5)
        shards += list(s)
    assert set(shards) == set(range(37))
    evaluation = [list(ResumableSampler(37, 4, shuffle=False, rank=r, world_size=world_size, pad=False))
                  for r in range(world_size)]
    assert sorted(sum(evaluation, [])) == list(range(37))  # every sample exactly once


# -- the command: folders, fine-tuning, refusing to overwrite, torchrun -----------------------

@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for split, n in [("train", 4), ("val", 1)]:
        for c in range(10):
            d = root / split / f"class_{c}"
            d.mkdir(parents=True)
            base = rng.integers(0, 255, 3)
            for i in range(n):
                arr = np.clip(base + rng.normal(0, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")
    genotypes.NASNET_A.to_json(root / "cell.json")
    return root


def _folder_args(root, out, *extra):
    return ["train", "folder", "--genotype", str(root / "cell.json"), "--cells", "1", "--filters", "8", "--stem",
            "cifar", "--scratch", "--data-dir", str(root), "--output-dir", str(out), "--epochs", "2",
            "--batch-size", "8", "--workers", "0", *extra]


def test_train_folder_then_predict_with_its_labels(image_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_folder_args(image_folder, out, "--max-steps", "3")) == 0
    assert json.loads((out / "results.json").read_text())["steps"] == 3
    assert main(_folder_args(image_folder, out)) == 2  # would overwrite the run
    assert "pass --resume" in capsys.readouterr().err
    assert main(_folder_args(image_folder, out, "--resume")) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == 10 and results["finished"] and results["num_classes"] == 10
    capsys.readouterr()
    assert main(["predict", str(image_folder / "val" / "class_3" / "0.png"), "--genotype",
                 str(image_folder / "cell.json"), "--cells", "1", "--filters", "8", "--stem", "cifar", "--weights",
                 str(out / "model.safetensors"), "--json", "--topk", "10"]) == 0
    labels = {p["label"] for p in json.loads(capsys.readouterr().out)[0]["predictions"]}
    assert labels == {f"class_{c}" for c in range(10)}
    # The weights carry their class names and eval preprocessing (training's val transform).
    from nasnet_backbones.checkpoint import read_metadata

    meta = read_metadata(out / "model.safetensors")
    assert json.loads(meta["labels"])[3] == "class_3"
    assert json.loads(meta["preprocessing"])["crop_size"] == 32


def test_fine_tuning_needs_weights_or_scratch(image_folder, tmp_path, capsys):
    args = _folder_args(image_folder, tmp_path / "run")
    args.remove("--scratch")
    assert main(args) == 2
    assert "--genotype" in capsys.readouterr().err  # a searched cell has no registered weights


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_torchrun_two_processes_on_cpu(image_folder, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "nasnet_backbones.cli", *_folder_args(image_folder, out, "--device", "cpu")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    # 40 images over 2 processes, batch 8: 2 full batches per epoch on each (the rest is dropped).
    assert results["world_size"] == 2 and results["steps"] == 4 and results["finished"]


def test_train_imagenet_recipe_on_wnid_folders(tmp_path):
    """The ImageNet recipe end to end on a few wnid folders: RMSProp, exponential decay, EMA,
    label smoothing, and a 1000-way head whatever subset of classes is present."""
    rng = np.random.default_rng(0)
    wnids = ["n01440764", "n01443537", "n15075141"]  # indices 0, 1, 999
    for split, n in [("train", 3), ("val", 1)]:
        for wnid in wnids:
            (tmp_path / "in1k" / split / wnid).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(
                    tmp_path / "in1k" / split / wnid / f"{i}.JPEG")
    genotypes.NASNET_A.to_json(tmp_path / "cell.json")
    out = tmp_path / "run"
    assert main(["train", "imagenet", "--genotype", str(tmp_path / "cell.json"), "--cells", "1", "--filters", "4",
                 "--data-dir", str(tmp_path / "in1k"), "--output-dir", str(out), "--input-size", "96", "--epochs", "2",
                 "--batch-size", "4", "--workers", "0"]) == 0
    results = json.loads((out / "results.json").read_text())
    # 9 images in batches of 4: 2 steps per epoch (an incomplete last batch is dropped).
    assert results["num_classes"] == 1000 and results["steps"] == 4 and results["top1"] is not None
    recipe = results["recipe"]
    assert (recipe["optimizer"], recipe["schedule"], recipe["label_smoothing"], recipe["ema_decay"]) == \
        ("rmsprop", "exponential", 0.1, 0.9999)
    assert (out / "labels.txt").read_text().split()[999] == "n15075141"
    ckpt = torch.load(out / "last.pth", weights_only=True)
    assert ckpt["ema"] is not None and int(ckpt["ema"]["n_averaged"]) == 4


def test_resume_refuses_changed_settings(tmp_path):
    _trainer(tmp_path).fit(max_steps=2)
    with pytest.raises(ValueError, match="epochs 3 -> 5"):
        _trainer(tmp_path, epochs=5).resume()
    with pytest.raises(ValueError, match="batch_size 16 -> 8.*Resume with the same settings"):
        _trainer(tmp_path, batch_size=8).resume()


def test_ema_warms_up_like_tensorflow():
    from nasnet_backbones.training.trainer import _tf_ema

    averaged, current = [torch.zeros(2)], [torch.ones(2)]
    _tf_ema(0.9999)(averaged, current, torch.tensor(0))  # decay min(0.9999, 1/10)
    torch.testing.assert_close(averaged[0], torch.full((2,), 0.9))
    averaged = [torch.zeros(2)]
    _tf_ema(0.5)(averaged, current, torch.tensor(10**6))  # late: the configured decay
    torch.testing.assert_close(averaged[0], torch.full((2,), 0.5))


def test_ctrl_c_saves_at_a_step_boundary_and_resumes_exactly(tmp_path, monkeypatch):
    import signal

    straight = _trainer(tmp_path / "a")
    straight.fit()
    interrupted = _trainer(tmp_path / "b")
    step = interrupted._train_step

    def step_then_ctrl_c(images, target):
        loss = step(images, target)
        if interrupted.state.step == 5:
            os.kill(os.getpid(), signal.SIGINT)  # arrives mid-run; the step still completes
        return loss

    monkeypatch.setattr(interrupted, "_train_step", step_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    assert torch.load(tmp_path / "b" / "last.pth", weights_only=True)["step"] == 5
    resumed = _trainer(tmp_path / "b")
    resumed.resume()
    resumed.fit()
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name, atol=1e-5, rtol=1e-4)
