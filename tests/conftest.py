"""Shared fixtures: small models, reference-model helpers, a tiny CIFAR-10 on disk."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np

import pytest
import torch
from torchvision import datasets

# Under pytest-xdist each worker gets one core's worth of threads: two workers with two OpenMP
# threads each on a 2-core machine spin against each other and run small models several times slower.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))

from nasnet_backbones import build_nasnet, genotypes


def randomize_batchnorm(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BN non-trivial statistics, so eval-mode comparisons exercise them."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


@pytest.fixture
def tiny_imagenet_model():
    """NASNet-A, 1 cell per stack, base width 8, ImageNet stem: fast on CPU."""
    torch.manual_seed(0)
    return build_nasnet(genotypes.NASNET_A, num_cells=3, num_filters=8, stem="imagenet", num_classes=10, img_size=96,
                        aux_head=True)


@pytest.fixture
def tiny_cifar_model():
    torch.manual_seed(0)
    return build_nasnet(genotypes.NASNET_A, num_cells=3, num_filters=8, stem="cifar", num_classes=10, img_size=32)


@pytest.fixture(scope="module")
def cadene_mobile():
    """Cadene's NASNet-A mobile (the public port of the TF weights) with random weights and BN stats."""
    import pretrainedmodels

    torch.manual_seed(0)
    ref = pretrainedmodels.nasnetamobile(num_classes=1000, pretrained=None)
    randomize_batchnorm(ref)
    return ref.eval()


# -- CIFAR-10 in its real python-pickle format ------------------------------------------------

def _write_cifar(root: Path, per_batch: int = 8) -> dict[str, str]:
    """Write cifar-10-batches-py as the official archive lays it out; return each file's md5."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    md5 = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        entry = {"batch_label": name, "labels": labels,
                 "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 "filenames": [f"{name}_{i}.png" for i in range(per_batch)]}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
            "num_cases_per_batch": per_batch, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    for path in folder.iterdir():
        md5[path.name] = hashlib.md5(path.read_bytes()).hexdigest()
    return md5


@pytest.fixture
def tiny_cifar(tmp_path, monkeypatch):
    """A tiny CIFAR-10 whose md5s torchvision's reader is told, so its integrity check runs for real."""
    md5 = _write_cifar(tmp_path / "cifar")
    monkeypatch.setattr(datasets.CIFAR10, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(datasets.CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(datasets.CIFAR10, "meta", {**datasets.CIFAR10.meta, "md5": md5["batches.meta"]})
    return tmp_path / "cifar"


class ScriptedExecutor:
    """A search executor that scores each child at once with ``score(genotype, key)`` instead of
    training it; ``crash_after`` raises after that many results, as a killed search would stop."""

    def __init__(self, score, crash_after: int | None = None) -> None:
        self.score, self.crash_after = score, crash_after
        self.queue: list = []
        self.evaluated: list[str] = []

    def submit(self, key, genotype, settings, seed):
        self.queue.append((key, genotype, seed))

    def wait(self):
        if self.crash_after is not None and len(self.evaluated) >= self.crash_after:
            raise KeyboardInterrupt("simulated crash")
        key, genotype, seed = self.queue.pop(0)
        self.evaluated.append(genotype.hash())
        return [(key, {"reward": self.score(genotype, key), "params": 1, "madds": 1, "wall_time": 0.0, "seed": seed,
                       "status": "ok"})]

    @property
    def pending(self):
        return len(self.queue)

    def shutdown(self):
        self.queue.clear()
