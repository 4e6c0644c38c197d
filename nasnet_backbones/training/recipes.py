"""The paper's training recipes as data: every default ``nasnet train`` uses, with its source.

CIFAR-10 (paper Appendix A.6, TF-slim ``cifar_config``): momentum SGD 0.9, learning rate 0.025
with a single-period cosine decay, batch 32, 600 epochs, weight decay 5e-4, auxiliary loss 0.4,
gradient clipping at global norm 5, ScheduledDropPath (keep 0.6), cutout.

ImageNet (paper Appendix A.7, TF-slim ``nasnet.py`` comments and ``train_image_classifier.py``):
RMSProp (decay 0.9, momentum 0.9, epsilon 1.0), learning rate 0.04 per 32 images (linear in the
global batch), decayed by 0.97 every 2.4 epochs, label smoothing 0.1, auxiliary loss 0.4, gradient
clipping at global norm 10, weight decay 4e-5 (mobile) / 5e-5 (large), and the weights' moving
average (decay 0.9999) for evaluation. The paper does not state the ImageNet epoch count; TF-slim's
250,000 steps at a global batch of 1,600 are about 312 epochs, which is the default here.

``folder`` is for fine-tuning pretrained weights on a new ImageFolder (a common transfer
setting, not from the paper): momentum SGD, cosine decay, label smoothing 0.1, 10 epochs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

__all__ = ["TrainRecipe", "RECIPES", "recipe_for"]


@dataclass(frozen=True)
class TrainRecipe:
    dataset: str
    epochs: int
    batch_size: int  # per process
    optimizer: str  # "sgd" | "rmsprop"
    lr: float | None  # absolute; None means lr_per_image x global batch
    lr_per_image: float
    schedule: str  # "cosine" | "exponential"
    weight_decay: float
    momentum: float = 0.9
    nesterov: bool = False
    rmsprop_decay: float = 0.9
    rmsprop_eps: float = 1.0
    decay_rate: float = 0.97  # exponential schedule: lr x decay_rate every decay_epochs
    decay_epochs: float = 2.4
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    aux_weight: float = 0.4
    grad_clip: float | None = 5.0
    drop_path_prob: float | None = None  # None: the model's configured rate
    cutout: int = 0
    ema_decay: float | None = None
    img_size: int | None = None  # None: the model's default input size

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting that makes no sense (the CLI refuses the
        same at its parser; this guards library callers): a run of no epochs, a zero batch, a
        negative or non-finite rate, a drop-path rate that drops everything."""
        def bad(name: str, rule: str) -> None:
            raise ValueError(f"recipe {name}={getattr(self, name)!r}: must be {rule}")

        def finite(value: float | None) -> bool:
            return value is None or math.isfinite(value)

        for name in ("epochs", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                bad(name, "a positive integer")
        if self.lr is not None and not (finite(self.lr) and self.lr > 0):
            bad("lr", "a finite number > 0")
        if not (finite(self.lr_per_image) and self.lr_per_image > 0):
            bad("lr_per_image", "a finite number > 0")
        for name in ("weight_decay", "warmup_epochs", "aux_weight", "momentum", "decay_epochs"):
            value = getattr(self, name)
            if not (finite(value) and value >= 0):
                bad(name, "a finite number >= 0")
        if self.grad_clip is not None and not (finite(self.grad_clip) and self.grad_clip >= 0):
            bad("grad_clip", "a finite number >= 0")
        for name in ("label_smoothing", "ema_decay"):
            value = getattr(self, name)
            if value is not None and not (finite(value) and 0 <= value <= 1):
                bad(name, "a number in [0, 1]")
        if self.drop_path_prob is not None and not (finite(self.drop_path_prob) and 0 <= self.drop_path_prob < 1):
            bad("drop_path_prob", "in [0, 1) (1 would drop every path)")
        if not (isinstance(self.cutout, int) and self.cutout >= 0):
            bad("cutout", "an integer >= 0")
        if self.img_size is not None and not (isinstance(self.img_size, int) and self.img_size >= 1):
            bad("img_size", "a positive integer")
        if self.optimizer not in ("sgd", "rmsprop"):
            bad("optimizer", "sgd or rmsprop")
        if self.schedule not in ("cosine", "exponential"):
            bad("schedule", "cosine or exponential")

    def learning_rate(self, global_batch: int) -> float:
        return self.lr if self.lr is not None else self.lr_per_image * global_batch

    def with_overrides(self, **overrides: Any) -> "TrainRecipe":
        """A copy with the given fields replaced; ``None`` values mean "keep"."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown recipe fields: {', '.join(unknown)}")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


RECIPES: dict[str, TrainRecipe] = {
    "cifar10": TrainRecipe(
        dataset="cifar10", epochs=600, batch_size=32, optimizer="sgd", lr=0.025, lr_per_image=0.025 / 32,
        schedule="cosine", weight_decay=5e-4, grad_clip=5.0, cutout=16,
    ),
    "imagenet": TrainRecipe(
        dataset="imagenet", epochs=312, batch_size=32, optimizer="rmsprop", lr=None, lr_per_image=0.04 / 32,
        schedule="exponential", weight_decay=4e-5, label_smoothing=0.1, grad_clip=10.0, ema_decay=0.9999,
    ),
    "folder": TrainRecipe(
        dataset="folder", epochs=10, batch_size=32, optimizer="sgd", lr=None, lr_per_image=0.01 / 32,
        schedule="cosine", weight_decay=1e-4, label_smoothing=0.1, aux_weight=0.0, grad_clip=None,
        drop_path_prob=0.0,
    ),
}

# TF-slim's large-model settings (nasnet.py large_imagenet_config and its training comment).
_LARGE_IMAGENET = dict(lr_per_image=0.015 / 16, batch_size=16, weight_decay=5e-5)
_LARGE_MODELS = {"nasnet_a_6_4032", "nasnet_a_5_1538", "nasnet_a_7_1920", "pnasnet_5_large"}


def recipe_for(dataset: str, model_name: str | None = None) -> TrainRecipe:
    """The default recipe for a dataset, with the large models' ImageNet settings where they differ."""
    if dataset not in RECIPES:
        raise ValueError(f"unknown dataset {dataset!r}; recipes: {', '.join(RECIPES)}")
    recipe = RECIPES[dataset]
    if dataset == "imagenet" and model_name in _LARGE_MODELS:
        recipe = replace(recipe, **_LARGE_IMAGENET)
    return recipe
