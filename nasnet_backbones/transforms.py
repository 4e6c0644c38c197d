"""Image preprocessing for NASNet classifiers: the evaluation preset each set of weights expects,
and the training augmentations of the paper's recipes.

NASNet weights ported from TF-slim take RGB in [-1, 1] (mean = std = 0.5). Evaluation resizes the
short side to ``resize_size`` and centre-crops ``crop_size`` (``crop_size / resize_size`` is the
"crop fraction": 0.875 for the Cadene ports, 0.911 for timm's).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

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
            img = _to_rgb(img)
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
        return cls(int(d["crop_size"]), int(d["resize_size"]), d["interpolation"], d["mean"], d["std"])

    def extra_repr(self) -> str:
        return (f"crop_size={self.crop_size}, resize_size={self.resize_size}, "
                f"interpolation={self.interpolation.value}, mean={self.mean}, std={self.std}")


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB from any PIL mode: 16/32-bit greyscale is scaled to 8 bits (PIL's own convert would
    clip it to white), transparency is composited onto white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


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
