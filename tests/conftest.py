"""Shared fixtures: small models, the Cadene reference model, a tiny CIFAR-10 on disk (helpers that
tests import by name live in helpers.py)."""

from __future__ import annotations

import os

import pytest
import torch
from torchvision import datasets

# Under pytest-xdist each worker gets one core's worth of threads: two workers with two OpenMP
# threads each on a 2-core machine spin against each other and run small models several times slower.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))

from helpers import randomize_batchnorm, write_cifar
from nasnet_backbones import build_nasnet, genotypes


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
def genotype_file(tmp_path_factory):
    """NASNet-A's genotype as a JSON file, as a search's best_genotype.json would be."""
    path = tmp_path_factory.mktemp("cells") / "nasnet_a.json"
    genotypes.NASNET_A.to_json(path)
    return path


@pytest.fixture(scope="module")
def cadene_mobile():
    """Cadene's NASNet-A mobile (the public port of the TF weights) with random weights and BN stats."""
    import pretrainedmodels

    torch.manual_seed(0)
    ref = pretrainedmodels.nasnetamobile(num_classes=1000, pretrained=None)
    randomize_batchnorm(ref)
    return ref.eval()


@pytest.fixture
def tiny_cifar(tmp_path, monkeypatch):
    """A tiny CIFAR-10 whose md5s torchvision's reader is told, so its integrity check runs for real."""
    md5 = write_cifar(tmp_path / "cifar")
    monkeypatch.setattr(datasets.CIFAR10, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(datasets.CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(datasets.CIFAR10, "meta", {**datasets.CIFAR10.meta, "md5": md5["batches.meta"]})
    return tmp_path / "cifar"
