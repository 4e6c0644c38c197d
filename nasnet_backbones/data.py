"""Datasets for classification: CIFAR-10 (torchvision's reader), ImageNet folders with the standard
class indices, any ImageFolder; and a sampler that lets training resume at an exact step.

Every loader fails with one message that says what is missing and how to get it, and never
deletes or rewrites what the user has on disk.
"""

from __future__ import annotations

import logging
import math
import os
import urllib.error
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch.utils.data import Dataset, Sampler
from torchvision import datasets

from .imagenet import wnid_to_index

__all__ = ["load_cifar10", "ImageNetFolder", "load_image_folder", "ResumableSampler", "default_workers",
           "CIFAR10_CLASSES"]

logger = logging.getLogger(__name__)

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def default_workers() -> int:
    """DataLoader workers: one per core the process may use, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def load_cifar10(root: str | Path, train: bool, transform: Callable | None = None, download: bool = True) -> Dataset:
    """CIFAR-10 in its official python-pickle format under ``root/cifar-10-batches-py``.

    Read by torchvision's :class:`~torchvision.datasets.CIFAR10`, which checks every file's md5.
    Missing files are downloaded when ``download`` and the machine is online.
    """
    root = Path(root).expanduser()
    cls = datasets.CIFAR10
    folder = root / cls.base_folder
    probe = cls.__new__(cls)
    probe.root = str(root)
    if not probe._check_integrity():
        present = folder.is_dir() and any(folder.iterdir())
        if present:
            raise ValueError(
                f"{folder} exists but its files fail torchvision's md5 check: they are incomplete, corrupted or not "
                f"the official CIFAR-10 python version. Move the folder aside and run again to download a fresh copy, "
                f"or replace it with the contents of {cls.url}"
            )
        if not download:
            raise FileNotFoundError(f"CIFAR-10 is not in {root}; download {cls.url} and extract it there")
        try:
            cls(str(root), train=train, download=True)
        except (urllib.error.URLError, OSError) as exc:
            raise FileNotFoundError(
                f"CIFAR-10 is not in {root} and could not be downloaded ({getattr(exc, 'reason', exc)}). "
                f"On a connected machine fetch {cls.url} (md5 {cls.tgz_md5}) and extract it into {root}, "
                f"so that {folder}/data_batch_1 exists"
            ) from None
    return cls(str(root), train=train, transform=transform, download=False)


class ImageNetFolder(datasets.DatasetFolder):
    """ImageNet's folder layout (one folder per WordNet id) with the standard 1000-class indices.

    Unlike :class:`~torchvision.datasets.ImageFolder`, which numbers the folders it finds, the
    target of ``n01440764/x.JPEG`` is always 0, so a subset of the class folders evaluates
    correctly against a 1000-way classifier.
    """

    def __init__(self, root: str | Path, transform: Callable | None = None) -> None:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(
                f"ImageNet folder {root} does not exist. Expected the standard layout, one folder per class "
                "named by WordNet id (e.g. val/n01440764/ILSVRC2012_val_00000293.JPEG); ImageNet is downloaded "
                "from image-net.org after registration"
            )
        super().__init__(str(root), loader=datasets.folder.default_loader,
                         extensions=datasets.folder.IMG_EXTENSIONS, transform=transform, allow_empty=True)
        if not self.samples:
            raise FileNotFoundError(f"{root} has class folders but no images in them")
        # The classes that actually have images (an empty folder is not a class present).
        self.classes = sorted({Path(path).parent.name for path, _ in self.samples})

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        # Hidden folders (.ipynb_checkpoints, .DS_Store dirs) are not classes.
        wnids = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))
        if not wnids:
            raise FileNotFoundError(f"{directory} has no class folders (expected folders named like n01440764)")
        try:
            return wnids, {wnid: wnid_to_index(wnid) for wnid in wnids}
        except ValueError as exc:
            raise ValueError(f"{directory}: {exc}") from None


def load_image_folder(root: str | Path, transform: Callable | None = None) -> datasets.ImageFolder:
    """Any ``root/<class>/<image>`` tree (torchvision's ImageFolder), with a clear error when absent."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist (expected {root}/<class name>/<image files>)")
    try:
        return datasets.ImageFolder(str(root), transform=transform)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{root}: {exc}") from None


class ResumableSampler(Sampler[int]):
    """This rank's share of a seeded per-epoch shuffle, optionally starting part-way through.

    The permutation depends only on ``(seed, epoch)``, so a run restarted from a checkpoint taken
    after ``start_batch`` batches of an epoch sees exactly the samples it had not seen yet. With
    ``world_size > 1`` the permutation is padded to a multiple of it (so every process takes the
    same number of steps) and dealt out round-robin, as :class:`~torch.utils.data.DistributedSampler`
    does; ``pad=False`` (evaluation) deals each sample exactly once instead.
    """

    def __init__(self, size: int, batch_size: int, seed: int = 0, shuffle: bool = True,
                 rank: int = 0, world_size: int = 1, pad: bool = True) -> None:
        self.size, self.batch_size, self.seed, self.shuffle = size, batch_size, seed, shuffle
        self.rank, self.world_size, self.pad = rank, world_size, pad
        self.epoch, self.start_batch = 0, 0
        self.per_rank = math.ceil(size / world_size) if pad else len(range(rank, size, world_size))

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        if self.pad:
            order += order[: self.per_rank * self.world_size - self.size]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.start_batch * self.batch_size :])

    def __len__(self) -> int:
        return max(0, self.per_rank - self.start_batch * self.batch_size)
