"""Image preprocessing for NASNet classifiers: the evaluation preset each set of weights expects,
and the training augmentations of the paper's recipes.

NASNet weights ported from TF-slim take RGB in [-1, 1] (mean = std = 0.5). Evaluation resizes the
short side to ``resize_size`` and centre-crops ``crop_size`` (``crop_size / resize_size`` is the
"crop fraction": 0.875 for the Cadene ports, 0.911 for timm's).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

from .images import to_rgb

__all__ = ["ClassificationEval", "Cutout", "cifar10_train_transform", "cifar10_eval_transform",
           "imagenet_train_transform", "resize_for_crop", "CIFAR10_MEAN", "CIFAR10_STD", "INCEPTION_MEAN"]

INCEPTION_MEAN = (0.5, 0.5, 0.5)  # and std: TF-slim's [-1, 1] input range
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def resize_for_crop(crop_size: int, crop_pct: float) -> int:
    """Short-side resize that leaves ``crop_pct`` of the image in a ``crop_size`` centre crop."""
    return int(math.floor(crop_size / crop_pct))


class ClassificationEval(nn.Module):
    """Resize the short side, centre-crop, scale to [0, 1] and normalise: one image in, CHW out.

    Accepts a PIL image or a uint8/float tensor (``[..., C, H, W]``), like torchvision's weight
    presets, so it can run in a DataLoader worker or on a batch already on a device.
    """

    def __init__(
        self,
        crop_size: int,
        resize_size: int,
        interpolation: str = "bilinear",
        mean: Sequence[float] = INCEPTION_MEAN,
        std: Sequence[float] = INCEPTION_MEAN,
    ) -> None:
        super().__init__()
        self.crop_size, self.resize_size = crop_size, resize_size
        self.interpolation = InterpolationMode(interpolation)
        self.mean, self.std = list(mean), list(std)

    def forward(self, img: Image.Image | torch.Tensor) -> torch.Tensor:
        # PIL images are resized by PIL, as the publishers' evaluations did (timm, Cadene).
        if isinstance(img, Image.Image):
            img = to_rgb(img)  # 16-bit, float, CMYK, transparency: images.py's rules
        else:
            img = _three_channels(img)
        img = F.resize(img, [self.resize_size], interpolation=self.interpolation, antialias=True)
        img = F.center_crop(img, [self.crop_size])
        if isinstance(img, Image.Image):
            img = F.pil_to_tensor(img)
        img = F.convert_image_dtype(img, torch.float) if not img.is_floating_point() else img
        return F.normalize(img, mean=self.mean, std=self.std)

    def to_dict(self) -> dict:
        return {"crop_size": self.crop_size, "resize_size": self.resize_size,
                "interpolation": self.interpolation.value, "mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, d: dict) -> "ClassificationEval":
        """The preset :meth:`to_dict` wrote, checked first (it may come from a file someone else
        made): sizes in ``SIZE_RANGE`` with ``crop_size <= resize_size``, a known interpolation,
        three finite means in [0, 1] and stds in (0, 1] (the range of a [0, 1] pixel's statistics).
        A ``ValueError`` names the first offending key."""
        if not isinstance(d, dict):
            raise ValueError(f"preprocessing must be a JSON object, got {type(d).__name__}")
        missing = [k for k in ("crop_size", "resize_size", "interpolation", "mean", "std") if k not in d]
        if missing:
            raise ValueError(f"preprocessing lacks {', '.join(missing)}")
        crop, resize = _size(d, "crop_size"), _size(d, "resize_size")
        if resize < crop:
            raise ValueError(f"preprocessing resize_size {resize} is smaller than crop_size {crop}")
        if d["interpolation"] not in _INTERPOLATIONS:
            raise ValueError(f"preprocessing interpolation {d['interpolation']!r} is not one of {', '.join(_INTERPOLATIONS)}")
        mean = _channel_stats(d, "mean", lambda v: 0.0 <= v <= 1.0, "in [0, 1]")
        std = _channel_stats(d, "std", lambda v: 0.0 < v <= 1.0, "in (0, 1]")
        return cls(crop, resize, d["interpolation"], mean, std)

    def extra_repr(self) -> str:
        return (f"crop_size={self.crop_size}, resize_size={self.resize_size}, "
                f"interpolation={self.interpolation.value}, mean={self.mean}, std={self.std}")


SIZE_RANGE = (16, 4096)  # pixels: smaller leaves NASNet's reductions nothing; larger is a typo or an attack
_INTERPOLATIONS = tuple(mode.value for mode in InterpolationMode)


def _size(d: dict, key: str) -> int:
    value = d[key]
    if isinstance(value, bool) or not isinstance(value, int) or not SIZE_RANGE[0] <= value <= SIZE_RANGE[1]:
        raise ValueError(f"preprocessing {key} must be an integer in {SIZE_RANGE[0]}..{SIZE_RANGE[1]}, got {value!r}")
    return value


def _channel_stats(d: dict, key: str, ok, what: str) -> list[float]:
    values = d[key]
    if (not isinstance(values, list) or len(values) != 3
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and ok(v)
                       for v in values)):
        raise ValueError(f"preprocessing {key} must be three finite numbers {what}, got {values!r}")
    return [float(v) for v in values]


def _three_channels(img: torch.Tensor) -> torch.Tensor:
    if img.ndim < 3:
        raise ValueError(f"expected an image tensor shaped [..., C, H, W], got shape {tuple(img.shape)}")
    channels = img.shape[-3]
    if channels == 1:
        return img.expand(*img.shape[:-3], 3, *img.shape[-2:])
    if channels != 3:
        raise ValueError(f"expected 1 or 3 channels in [..., C, H, W] order, got shape {tuple(img.shape)}"
                         + (" (channels last? permute to C, H, W)" if img.shape[-1] in (1, 3) else ""))
    return img


class Cutout(nn.Module):
    """Zero one ``length x length`` square at a random centre (DeVries & Taylor, 2017), clipped at
    the border, on a normalised CHW tensor: the "+ cutout" rows of the paper's Table 1."""

    def __init__(self, length: int = 16) -> None:
        super().__init__()
        self.length = length

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if self.length <= 0:
            return img
        h, w = img.shape[-2:]
        cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
        y0, y1 = max(0, cy - self.length // 2), min(h, cy + self.length // 2)
        x0, x1 = max(0, cx - self.length // 2), min(w, cx + self.length // 2)
        img = img.clone()
        img[..., y0:y1, x0:x1] = 0
        return img


def cifar10_train_transform(cutout: int = 16) -> T.Compose:
    """The paper's CIFAR-10 augmentation: 4-pixel padded random crop, horizontal flip, cutout."""
    return T.Compose([
        T.RandomCrop(32, padding=4),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(CIFAR10_MEAN, CIFAR10_STD),
        Cutout(cutout),
    ])


def cifar10_eval_transform() -> ClassificationEval:
    """CIFAR-10 evaluation: the 32x32 image as it is (other images are resized and centre-cropped
    to 32 first), normalised with CIFAR-10's statistics."""
    return ClassificationEval(32, 32, "bilinear", CIFAR10_MEAN, CIFAR10_STD)


def imagenet_train_transform(crop_size: int, mean: Sequence[float] = INCEPTION_MEAN,
                             std: Sequence[float] = INCEPTION_MEAN, min_scale: float = 0.05,
                             color_jitter: bool = True) -> T.Compose:
    """Inception-style training augmentation (TF-slim ``inception_preprocessing``): a random
    crop covering ``min_scale``-100% of the image with aspect ratio 3/4-4/3, resized to
    ``crop_size``, a horizontal flip and (optionally) colour distortion."""
    steps: list = [T.RandomResizedCrop(crop_size, scale=(min_scale, 1.0)), T.RandomHorizontalFlip()]
    if color_jitter:
        steps.append(T.ColorJitter(brightness=32 / 255, contrast=0.5, saturation=0.5, hue=0.2))
    return T.Compose([*steps, T.ToTensor(), T.Normalize(mean, std)])
