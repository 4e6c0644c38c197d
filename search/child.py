"""Child evaluation: build a small NASNet from a candidate genotype, train it, score it.

The paper's children (Appendix A.1): a CIFAR-stem network with N = 2 cells per stack, trained for
20 epochs with momentum SGD and a cosine schedule on CIFAR-10 minus 5,000 held-out images; the
reward is the accuracy on those 5,000. The classification :class:`~nasnet_backbones.training.Trainer`
does the training, so children train exactly as ``nasnet train cifar10`` would.

Presets: ``gpu`` is the paper's setting (the base width is not stated in the paper; 32 here, the
base width of its CIFAR 6 @ 768 model), ``cpu`` a scaled-down proxy for CIFAR-10 on a few cores,
``tiny`` sized for the synthetic dataset (one child well under a minute on 2 CPU cores). Every
field can be overridden.
"""

from __future__ import annotations

import logging
import math
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch

from nasnet_backbones.complexity import count_madds, count_params
from nasnet_backbones.genotype import Genotype
from nasnet_backbones.builder import build_model
from nasnet_backbones.training.distributed import DistContext
from nasnet_backbones.training.recipes import recipe_for
from nasnet_backbones.training.trainer import Trainer

from .data import DATASETS, search_splits

__all__ = ["ChildSettings", "CHILD_PRESETS", "default_preset", "evaluate_child", "NUM_CLASSES"]

logger = logging.getLogger(__name__)

NUM_CLASSES = 10


@dataclass(frozen=True)
class ChildSettings:
    """How every child of one search is built, trained and scored."""

    dataset: str = "cifar10"
    data_dir: str | None = None
    cells: int = 2  # N: normal cells per stack (3 stacks)
    filters: int = 32  # base width (num_filters): the first stack's; the paper's "N @ F" has F = 24 x this
    epochs: int = 20
    batch_size: int = 32
    lr: float = 0.025
    weight_decay: float = 5e-4
    img_size: int = 32  # CIFAR-10 is 32x32; synthetic images are drawn at this size
    val_size: int = 5000  # held out of the training set; the reward is the accuracy on them
    train_size: int | None = None  # None: every remaining training image
    drop_path_prob: float = 0.0
    device: str = "auto"  # "auto": the GPU the worker was given, else the CPU

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASETS)}")
        for name in ("cells", "filters", "epochs", "batch_size", "val_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"child {name} must be >= 1, got {getattr(self, name)}")
        if self.dataset == "cifar10" and self.img_size != 32:
            raise ValueError(f"CIFAR-10 images are 32x32; child img_size {self.img_size} is for the synthetic dataset")

    def with_overrides(self, **overrides: Any) -> "ChildSettings":
        """A copy with the given fields replaced; ``None`` values mean "keep"."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ChildSettings":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def reward_defining(self) -> dict[str, Any]:
        """The fields that change what a reward means (not where the data lives or which device)."""
        return {k: v for k, v in self.to_dict().items() if k not in ("data_dir", "device")}


CHILD_PRESETS: dict[str, ChildSettings] = {
    "gpu": ChildSettings(),
    "cpu": ChildSettings(cells=1, filters=8, epochs=2, batch_size=64, lr=0.05, train_size=5000, val_size=2000),
    "tiny": ChildSettings(dataset="synthetic", cells=1, filters=8, epochs=2, batch_size=50, lr=0.05, img_size=16,
                          val_size=400, train_size=1600),
}


def default_preset(dataset: str) -> str:
    if dataset == "synthetic":
        return "tiny"
    return "gpu" if torch.cuda.is_available() else "cpu"


def _device(setting: str) -> torch.device:
    if setting != "auto":
        return torch.device(setting)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def evaluate_child(genotype: Genotype, settings: ChildSettings, seed: int) -> dict[str, Any]:
    """Train one child and return its reward (held-out accuracy in [0, 1]) and its costs.

    A child whose loss diverges is scored 0 (``status: "diverged"``), as a bad architecture
    should be; any other error propagates.
    """
    start = time.perf_counter()
    device = _device(settings.device)
    train_set, val_set = search_splits(settings.dataset, settings.data_dir, settings.val_size, settings.train_size,
                                       img_size=settings.img_size, download=False)
    torch.manual_seed(seed)  # the child's initialisation is a function of its seed, as its training is
    model = build_model(genotype, cells=settings.cells, filters=settings.filters, stem="cifar",
                        num_classes=NUM_CLASSES, img_size=settings.img_size, drop_path_prob=settings.drop_path_prob)
    result: dict[str, Any] = {"params": count_params(model), "madds": count_madds(model, settings.img_size), "seed": seed,
                              "device": str(device), "host": platform.node()}
    recipe = recipe_for("cifar10").with_overrides(
        epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr, weight_decay=settings.weight_decay,
        cutout=0, aux_weight=0.0, drop_path_prob=settings.drop_path_prob)
    with tempfile.TemporaryDirectory(prefix="nasnet-child-") as workdir:
        trainer = Trainer(model, recipe, train_set, val_set, workdir, DistContext(0, 1, 0, device), workers=0,
                          seed=seed, progress=False)
        try:
            summary = trainer.fit(log_every=10**9)
        except FloatingPointError as exc:
            logger.warning("child %s diverged: %s", genotype.hash(), exc)
            return {**result, "status": "diverged", "error": str(exc), "reward": 0.0,
                    "wall_time": time.perf_counter() - start}
    top1 = summary["top1"]
    reward = top1 / 100.0 if top1 is not None and math.isfinite(top1) else 0.0
    return {**result, "status": "ok", "reward": reward, "train_loss": summary["train_loss"],
            "wall_time": time.perf_counter() - start}
