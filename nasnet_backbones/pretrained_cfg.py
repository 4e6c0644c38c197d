"""Where a network came from, in one record: :attr:`NASNet.pretrained_cfg <.nasnet.NASNet.pretrained_cfg>`.

The builder (:mod:`.builder`) fills it in when it constructs a model: the architecture's name (a
registered name, or the genotype's with its ``N @ F`` shape), the registered weights it was loaded
with (or None), a local checkpoint it was loaded from, its default input size and the evaluation
preprocessing it expects (the idea of timm's ``pretrained_cfg``). Networks built directly with
:class:`~.nasnet.NASNet` or :func:`~.nasnet.build_nasnet` carry None.
"""

from __future__ import annotations

from dataclasses import dataclass

from .transforms import CIFAR10_MEAN, CIFAR10_STD, INCEPTION_MEAN, ClassificationEval, resize_for_crop
from .weights import Weights

__all__ = ["PretrainedCfg", "DEFAULT_CROP_PCT", "architecture_of", "default_input_size", "make_pretrained_cfg"]

DEFAULT_CROP_PCT = 0.875  # Inception-style evaluation crop for networks without weights of their own


@dataclass(frozen=True)
class PretrainedCfg:
    """A model's origin and the inputs it expects (frozen; compare with ``==``)."""

    architecture: str  # registered model name, or "<genotype> N@W" for a network built from a cell
    input_size: int  # default input size (the auxiliary head's, the exports')
    crop_size: int  # evaluation: resize the short side to resize_size, centre-crop crop_size
    resize_size: int
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = INCEPTION_MEAN
    std: tuple[float, float, float] = INCEPTION_MEAN
    weights: Weights | None = None  # registered weights loaded at construction
    checkpoint: str | None = None  # a local file loaded at construction instead
    genotype_file: str | None = None  # the JSON file the cells were read from

    @property
    def tag(self) -> str | None:
        """The registered weights' tag (``cadene_in1k``), None without registered weights."""
        return self.weights.tag if self.weights is not None else None

    @property
    def name(self) -> str:
        """``architecture.tag`` with registered weights, else the architecture."""
        return f"{self.architecture}.{self.tag}" if self.tag else self.architecture

    def transforms(self) -> ClassificationEval:
        """The evaluation preprocessing: the weights' own, else the stem's default."""
        return ClassificationEval(self.crop_size, self.resize_size, self.interpolation, self.mean, self.std)


def default_input_size(stem: str) -> int:
    """The input size a network of ``stem`` is built for by default: 32 (CIFAR) or 224 (ImageNet)."""
    return 32 if stem == "cifar" else 224


def make_pretrained_cfg(
    architecture: str,
    *,
    stem: str,
    input_size: int,
    weights: Weights | None = None,
    default_weights: Weights | None = None,
    checkpoint: str | None = None,
    genotype_file: str | None = None,
) -> PretrainedCfg:
    """A record whose preprocessing is, most specific first: ``weights``' own; CIFAR-10's for the
    CIFAR stem; ``default_weights``' (a registered model built without its weights); else the
    Inception-style 0.875 crop at ``input_size``."""
    source = weights if weights is not None else (None if stem == "cifar" else default_weights)
    if source is not None:
        prep = dict(crop_size=source.input_size, resize_size=source.resize_size, interpolation=source.interpolation,
                    mean=tuple(source.mean), std=tuple(source.std))
    elif stem == "cifar":
        prep = dict(crop_size=32, resize_size=32, interpolation="bilinear", mean=CIFAR10_MEAN, std=CIFAR10_STD)
    else:
        prep = dict(crop_size=input_size, resize_size=resize_for_crop(input_size, DEFAULT_CROP_PCT))
    return PretrainedCfg(architecture=architecture, input_size=input_size, weights=weights, checkpoint=checkpoint,
                         genotype_file=genotype_file, **prep)


def architecture_of(model: object) -> str:
    """The architecture name ``model`` records: this package's :class:`PretrainedCfg`, or the
    plain dict timm puts in ``pretrained_cfg`` when it builds the model; ``""`` when neither."""
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, PretrainedCfg):
        return cfg.architecture
    if isinstance(cfg, dict):
        return str(cfg.get("architecture") or "")
    return ""
