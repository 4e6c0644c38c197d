"""Datasets for classification: CIFAR-10 (torchvision's reader), ImageNet folders with the standard
class indices, any ImageFolder; and a sampler that lets training resume at an exact step.

Every loader fails with one message that says what is missing and how to get it, and never
deletes or rewrites what the user has on disk. Image files are opened by
:func:`~nasnet_backbones.images.open_rgb` (every PIL mode converted or refused, naming the file).

For training and evaluation, :class:`GuardedDataset` with :func:`collate_readable` turns an
unreadable image into a reported :class:`Unreadable` entry instead of an exception inside a
DataLoader worker (whose traceback would bury the file's name), and :class:`BadImages` decides:
skip and count, or stop at the first one. With :class:`SeededSampler`, each sample's augmentation
is a pure function of ``(seed, epoch, index)``, whichever worker process draws it, so a run
resumed mid-epoch sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import logging
import math
import os
import random
import urllib.error
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, default_collate
from torchvision import datasets

from .imagenet import wnid_to_index
from .images import UnreadableImage, open_rgb

__all__ = ["load_cifar10", "ImageNetFolder", "load_image_folder", "ResumableSampler", "default_workers",
           "CIFAR10_CLASSES", "SeededSampler", "GuardedDataset", "Unreadable", "collate_readable", "BadImages",
           "readable_batches", "sample_seed", "open_image"]

logger = logging.getLogger(__name__)

# The one function that opens image files for the folder datasets (PIL mode rules, errors naming the file).
open_image: Callable[[str], Any] = open_rgb

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
        super().__init__(str(root), loader=open_image,
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
        return datasets.ImageFolder(str(root), transform=transform, loader=open_image)
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


# -- reproducible, fault-tolerant sample loading ------------------------------------------------

def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of sample ``index``'s augmentation in ``epoch``: a hash of the three, so that it
    does not depend on which worker process loads the sample, nor on what ran before. Any integer
    seed works (a negative one is taken modulo 2**64)."""
    state = np.random.SeedSequence((seed % 2**64, epoch, index)).generate_state(1, np.uint64)[0]
    return int(state) >> 1  # below 2**63, as torch.manual_seed wants


class SeededSampler(Sampler[tuple[int, int]]):
    """``(index, sample seed)`` pairs in a :class:`ResumableSampler`'s order, for
    :class:`GuardedDataset` to seed each sample's augmentation with (see :func:`sample_seed`)."""

    def __init__(self, sampler: ResumableSampler) -> None:
        self.sampler = sampler

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.sampler.set_epoch(epoch, start_batch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        seed, epoch = self.sampler.seed, self.sampler.epoch
        return ((index, sample_seed(seed, epoch, index)) for index in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


class Unreadable(NamedTuple):
    """A sample whose image could not be read: the file (or the sample index) and why."""

    path: str
    reason: str


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's, numpy's and Python's global RNGs for the block, then restore them, so
    per-sample seeding in the main process (``workers=0``) leaves training's RNG untouched."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class GuardedDataset(Dataset):
    """``dataset[index]`` that reports an unreadable image as an :class:`Unreadable` entry instead
    of raising (an exception in a DataLoader worker reaches the user as a worker traceback), and
    that seeds the sample's augmentation when given an ``(index, seed)`` key (:class:`SeededSampler`)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def _path(self, index: int) -> str:
        samples = getattr(self.dataset, "samples", None)
        return str(samples[index][0]) if samples is not None else f"sample {index}"

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        index, seed = key if isinstance(key, tuple) else (key, None)
        try:
            if seed is None:
                return self.dataset[index]
            with _seeded(seed):
                return self.dataset[index]
        except (UnreadableImage, OSError) as exc:
            return Unreadable(self._path(index), str(exc) or type(exc).__name__)


def collate_readable(batch: list[Any]) -> tuple[Any, Any, list[Unreadable]]:
    """``(images, targets, unreadable)``: the readable samples collated as usual (``None, None``
    when there are none) and the :class:`Unreadable` entries of the batch."""
    bad = [item for item in batch if isinstance(item, Unreadable)]
    good = [item for item in batch if not isinstance(item, Unreadable)]
    if not good:
        return None, None, bad
    images, targets = default_collate(good)
    return images, targets, bad


class BadImages:
    """What to do with unreadable images met while reading a data set: with ``skip``, log each
    file once and count every skipped load; without, raise :class:`UnreadableImage` naming the
    first. ``hint`` is appended to that error (how to skip or fix it)."""

    LISTED = 100  # at most this many file names kept for the summary

    def __init__(self, skip: bool = False, hint: str = "") -> None:
        self.skip, self.hint = skip, hint
        self.skipped = 0
        self.files: dict[str, str] = {}

    def check(self, bad: Iterable[Unreadable]) -> None:
        for item in bad:
            if not self.skip:
                raise UnreadableImage(f"{item.reason}{self.hint}")
            if item.path not in self.files:
                logger.warning("skipping an unreadable image: %s", item.reason)
                if len(self.files) < self.LISTED:
                    self.files[item.path] = item.reason
            self.skipped += 1

    def summary(self) -> dict[str, Any]:
        """``skipped_images`` (loads skipped) and ``unreadable_files`` (the first names), for results files."""
        return {"skipped_images": self.skipped, "unreadable_files": sorted(self.files)}

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped, "files": dict(self.files)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped, self.files = int(state["skipped"]), dict(state["files"])

    def log_summary(self, what: str) -> None:
        if self.skipped:
            logger.warning("%s: skipped %d unreadable image load(s) from %d file(s)%s", what, self.skipped,
                           len(self.files), f": {', '.join(sorted(self.files)[:5])}" + (" ..." if len(self.files) > 5 else ""))


def readable_batches(loader: Iterable, bad_images: BadImages) -> Iterator[tuple[Any, Any]]:
    """``(images, targets)`` from a loader of :func:`collate_readable` batches, with the
    unreadable entries handed to ``bad_images`` (which skips or raises) and empty batches dropped."""
    for images, targets, bad in loader:
        bad_images.check(bad)
        if images is not None:
            yield images, targets
