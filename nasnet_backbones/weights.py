"""Pretrained ImageNet weights: where each set comes from, how to preprocess for it, what it scores.

Every entry names the public file (a port of Google's TF-slim checkpoints), the sha256 prefix that
torch.hub's file names carry and :func:`weights_file` checks, the layout it is converted from
(:mod:`.convert`), its eval preprocessing (:meth:`Weights.transforms`) and the accuracy its
publisher measured with that preprocessing. ``create_model(name, pretrained=True | tag | path)``
is the usual way in; this module is the lookup and the download.

Files are found, in order, in ``$NASNET_WEIGHTS_DIR`` (for offline machines: copy the files
there under their published names), in torch.hub's cache (``$TORCH_HOME/hub/checkpoints``), or
downloaded into that cache with the hash checked.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .transforms import INCEPTION_MEAN, ClassificationEval, resize_for_crop

__all__ = [
    "Weights", "WeightsNotFoundError", "WEIGHTS_DIR_ENV", "register_weights", "get_weights", "list_weights",
    "weights_file",
]

logger = logging.getLogger(__name__)

WEIGHTS_DIR_ENV = "NASNET_WEIGHTS_DIR"


class WeightsNotFoundError(FileNotFoundError):
    """Registered weights that are neither on this machine nor downloadable right now."""


@dataclass(frozen=True)
class Weights:
    """One set of pretrained weights for a registered model (torchvision's ``WeightsEnum`` idea)."""

    model: str  # registered model name
    tag: str
    url: str
    hash_prefix: str | None  # leading hex digits of the file's sha256 (torch.hub convention)
    layout: str  # source layout, see convert.LAYOUTS
    checkpoint_classes: int  # 1001 for TF-slim files that keep the background class
    input_size: int
    crop_pct: float
    interpolation: str
    published_top1: float
    published_top5: float
    metrics_source: str
    params: int  # of the converted classifier, without the auxiliary head
    mult_adds: int  # at input_size, fvcore conv + linear
    origin: str  # who converted it from what
    mean: tuple[float, float, float] = INCEPTION_MEAN
    std: tuple[float, float, float] = INCEPTION_MEAN
    num_classes: int = 1000
    mirrors: tuple[str, ...] = ()
    license: str = "Apache-2.0 (TF-slim checkpoints)"
    notes: str = field(default="", compare=False)

    @property
    def name(self) -> str:
        return f"{self.model}.{self.tag}"

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def resize_size(self) -> int:
        return resize_for_crop(self.input_size, self.crop_pct)

    def transforms(self) -> ClassificationEval:
        """The exact evaluation preprocessing the published accuracy was measured with."""
        return ClassificationEval(self.input_size, self.resize_size, self.interpolation, self.mean, self.std)


_WEIGHTS: dict[str, dict[str, Weights]] = {}
_DEFAULT_TAG: dict[str, str] = {}


def register_weights(weights: Weights, default: bool = False) -> Weights:
    """Add weights (your own trained files too); the first registered for a model is its default."""
    tags = _WEIGHTS.setdefault(weights.model, {})
    if weights.tag in tags:
        raise ValueError(f"weights {weights.name!r} are already registered")
    tags[weights.tag] = weights
    if default or weights.model not in _DEFAULT_TAG:
        _DEFAULT_TAG[weights.model] = weights.tag
    return weights


def _canonical(model: str) -> str:
    from .registry import get_model_entry  # the registry imports this module

    return get_model_entry(model).name


def list_weights(model: str | None = None) -> list[str]:
    """``model.tag`` names of the registered weights (of one model, if given), default first."""
    models = [_canonical(model)] if model else sorted(_WEIGHTS)
    out = []
    for m in models:
        tags = sorted(_WEIGHTS.get(m, {}), key=lambda t: (t != _DEFAULT_TAG.get(m), t))
        out += [f"{m}.{t}" for t in tags]
    return out


def get_weights(model: str, tag: str | None = None) -> Weights:
    """The weights ``tag`` (default: the model's default) of a registered model name or alias."""
    model = _canonical(model)
    tags = _WEIGHTS.get(model, {})
    if not tags:
        with_weights = ", ".join(sorted(_WEIGHTS)) or "none"
        raise ValueError(
            f"no pretrained weights are registered for {model!r} (models with weights: {with_weights}); "
            "use a checkpoint file instead (pretrained='file.pth' in Python, --weights FILE on the command line)"
        )
    tag = tag or _DEFAULT_TAG[model]
    if tag not in tags:
        raise ValueError(f"unknown weights tag {tag!r} for {model!r}; available: {', '.join(list_weights(model))}")
    return tags[tag]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_hash(path: Path, weights: Weights) -> None:
    if weights.hash_prefix and not _sha256(path).startswith(weights.hash_prefix):
        raise ValueError(
            f"{path} is not the published {weights.filename}: its sha256 does not start with "
            f"{weights.hash_prefix}. The file is corrupt or a different checkpoint; delete it, or pass it as "
            "pretrained='path' to load it without the hash check."
        )


def cache_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def weights_file(weights: Weights, download: bool = True, progress: bool = True) -> Path:
    """A verified local copy of ``weights``: from ``$NASNET_WEIGHTS_DIR``, the torch.hub cache, or
    downloaded into the cache. Offline without the file: :class:`WeightsNotFoundError` saying
    what to fetch and where to put it."""
    env_dir = os.environ.get(WEIGHTS_DIR_ENV)
    cached = cache_dir() / weights.filename
    for candidate in ([Path(env_dir) / weights.filename] if env_dir else []) + [cached]:
        if candidate.is_file():
            _check_hash(candidate, weights)
            return candidate
    reasons = []
    if download:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            reasons.append(f"cannot create torch.hub's cache {cached.parent} ({exc}); set TORCH_HOME to a writable place")
            download = False
    if download:
        for url in (weights.url, *weights.mirrors):
            logger.info("downloading %s to %s", url, cached)
            try:
                # Writes to a temporary file and renames it only once the hash matched.
                torch.hub.download_url_to_file(url, str(cached), hash_prefix=weights.hash_prefix, progress=progress)
                return cached
            except RuntimeError as exc:
                if "invalid hash value" not in str(exc):
                    raise
                reasons.append(f"{url}: the download's sha256 does not start with {weights.hash_prefix}")
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
                reasons.append(f"{url}: {getattr(exc, 'reason', exc)}")
    where = f"{cached}" + (f" or {Path(env_dir) / weights.filename}" if env_dir else f" (or a directory named by ${WEIGHTS_DIR_ENV})")
    tried = f" Not downloaded: {'; '.join(reasons)}." if reasons else ""
    raise WeightsNotFoundError(
        f"pretrained weights {weights.name} are not on this machine.{tried} Fetch {weights.url} "
        f"(sha256 starts with {weights.hash_prefix or 'unpublished'}) on a connected machine and put it at {where}."
    )


_CADENE = "http://data.lip6.fr/cadene/pretrainedmodels/"
_TIMM_RELEASES = "https://github.com/rwightman/pytorch-image-models/releases/download/"
_CADENE_README = "Cadene/pretrained-models.pytorch README (eval: resize 1/0.875, centre crop, bilinear)"
_TIMM_RESULTS = "timm results/results-imagenet.csv (eval: crop_pct 0.911, bicubic)"

register_weights(Weights(
    model="nasnet_a_4_1056", tag="cadene_in1k", url=_CADENE + "nasnetamobile-7e03cead.pth", hash_prefix="7e03cead",
    layout="cadene_nasnet", checkpoint_classes=1000, input_size=224, crop_pct=0.875, interpolation="bilinear",
    published_top1=74.080, published_top5=91.740, metrics_source=_CADENE_README,
    params=5_289_978, mult_adds=563_599_744,
    origin="Cadene pretrainedmodels port of TF-slim NASNet-A_Mobile_224 (TF: 74.0 / 91.6)",
))
register_weights(Weights(
    model="nasnet_a_6_4032", tag="tf_in1k", url=_TIMM_RELEASES + "v0.1-weights/nasnetalarge-dc4a7b8b.pth",
    hash_prefix="dc4a7b8b", layout="cadene_nasnet", checkpoint_classes=1000, input_size=331, crop_pct=0.911,
    interpolation="bicubic", published_top1=82.626, published_top5=96.042, metrics_source=_TIMM_RESULTS,
    params=88_753_150, mult_adds=23_767_353_186,
    origin="timm nasnetalarge.tf_in1k (Cadene's port of TF-slim NASNet-A_Large_331, background class dropped; "
           "TF: 82.7 / 96.2)",
))
register_weights(Weights(
    model="nasnet_a_6_4032", tag="cadene_in1k", url=_CADENE + "nasnetalarge-a1897284.pth", hash_prefix="a1897284",
    layout="cadene_nasnet", checkpoint_classes=1001, input_size=331, crop_pct=0.875, interpolation="bilinear",
    published_top1=82.566, published_top5=96.086, metrics_source=_CADENE_README,
    params=88_753_150, mult_adds=23_767_353_186,
    origin="Cadene pretrainedmodels port of TF-slim NASNet-A_Large_331 (1001 classes, background first)",
))
register_weights(Weights(
    model="pnasnet_5_large", tag="tf_in1k", url=_TIMM_RELEASES + "v0.1-cadene/pnasnet5large-bf079911.pth",
    hash_prefix="bf079911", layout="timm_pnasnet", checkpoint_classes=1001, input_size=331, crop_pct=0.911,
    interpolation="bicubic", published_top1=82.782, published_top5=96.040, metrics_source=_TIMM_RESULTS,
    params=86_057_668, mult_adds=24_914_524_632, mirrors=(_CADENE + "pnasnet5large-bf079911.pth",),
    origin="Cadene's port of TF-slim PNASNet-5_Large_331 (1001 classes), as served by timm "
           "(TF: 82.9 / 96.2; Cadene's eval at crop 0.875 bilinear: 82.736 / 95.992)",
))
