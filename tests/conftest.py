"""Shared fixtures: small models and reference-model helpers."""

from __future__ import annotations

import os

import pytest
import torch

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
