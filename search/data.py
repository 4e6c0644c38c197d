"""The data a child network trains and is scored on.

``cifar10``: the paper's protocol (Appendix A.1): 5,000 images of the CIFAR-10 training set are
held out, always the same ones (a fixed split seed), and the reward is the accuracy on them; the
child trains on the rest, or on a fixed subset of the rest for a cheaper proxy (``train_size``).

``synthetic``: generated square images of 10 classes (16x16 in the ``tiny`` preset), for tests,
the demo and trying a search on a CPU without downloading anything. Class ``k`` is a sinusoidal
grating at ``18k`` degrees with a random wavelength (3 to 3 + size / 8 px), phase, contrast and
colour, under Gaussian noise. Telling orientations 18 degrees apart through noise takes more than
one 3x3 filter, so different cells score differently. Each image is a deterministic function of
the seed.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from nasnet_backbones.data import load_cifar10
from nasnet_backbones.transforms import cifar10_eval_transform, cifar10_train_transform

__all__ = ["DATASETS", "synthetic_gratings", "search_splits"]

DATASETS = ("cifar10", "synthetic")
SPLIT_SEED = 0  # the held-out images never change between children, runs or machines


def synthetic_gratings(num_images: int, seed: int, size: int = 32, num_classes: int = 10) -> TensorDataset:
    """``num_images`` normalised ``3 x size x size`` images and their labels (balanced classes)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(num_images) % num_classes
    rng.shuffle(labels)
    angle = labels * np.pi / num_classes + rng.normal(0.0, 0.03, num_images)
    wavelength = rng.uniform(3.0, 3.0 + size / 8, num_images)
    phase = rng.uniform(0.0, 2 * np.pi, num_images)
    contrast = rng.uniform(0.3, 1.0, num_images)
    colour = rng.uniform(0.2, 1.0, (num_images, 3))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    along = np.cos(angle)[:, None, None] * xx + np.sin(angle)[:, None, None] * yy
    wave = np.sin(2 * np.pi * along / wavelength[:, None, None] + phase[:, None, None]) * contrast[:, None, None]
    images = wave[:, None] * colour[:, :, None, None] + rng.normal(0.0, 0.6, (num_images, 3, size, size))
    return TensorDataset(torch.from_numpy(images.astype(np.float32)), torch.from_numpy(labels.astype(np.int64)))


def _split(num_images: int, val_size: int, train_size: int | None) -> tuple[list[int], list[int]]:
    if not 0 < val_size < num_images:
        raise ValueError(f"val_size must be between 1 and {num_images - 1} (the training set has {num_images} images), "
                         f"got {val_size}")
    order = np.random.default_rng(SPLIT_SEED).permutation(num_images)
    val, train = order[:val_size], order[val_size:]
    if train_size is not None:
        if not 0 < train_size <= len(train):
            raise ValueError(f"train_size must be between 1 and {len(train)} (images left after the {val_size} "
                             f"held out), got {train_size}")
        train = train[:train_size]
    return sorted(train.tolist()), sorted(val.tolist())


@lru_cache(maxsize=2)  # a Ray worker process evaluates many children: read CIFAR-10 once
def _cifar10(root: str, download: bool) -> tuple[Dataset, Dataset]:
    train_view = load_cifar10(root, True, cifar10_train_transform(cutout=0), download=download)
    val_view = load_cifar10(root, True, cifar10_eval_transform(), download=False)
    return train_view, val_view


def search_splits(dataset: str, data_dir: str | Path | None, val_size: int, train_size: int | None = None,
                  img_size: int = 32, download: bool = True) -> tuple[Dataset, Dataset]:
    """(training set, held-out validation set) for child networks."""
    if dataset == "cifar10":
        if data_dir is None:
            raise ValueError("--dataset cifar10 needs --data-dir (the folder that holds or will hold cifar-10-batches-py)")
        train_view, val_view = _cifar10(str(Path(data_dir).expanduser()), download)
        train, val = _split(len(train_view), val_size, train_size)
        return Subset(train_view, train), Subset(val_view, val)
    if dataset == "synthetic":
        total = val_size + (train_size if train_size is not None else 4 * val_size)
        images = synthetic_gratings(total, seed=SPLIT_SEED, size=img_size)
        train, val = _split(total, val_size, train_size)
        return Subset(images, train), Subset(images, val)
    raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
