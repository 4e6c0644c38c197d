"""Pretrained weights: what an entry records, and finding or downloading its file.

A :class:`Weights` entry names the public file (a port of Google's TF-slim checkpoints), the sha256
prefix that torch.hub's file names carry and :func:`weights_file` checks, the layout it is converted
from (:mod:`.convert`), its eval preprocessing (:meth:`Weights.transforms`) and the accuracy its
publisher measured with that preprocessing. The entries themselves are in :mod:`.zoo`, their lookup
(``get_weights``, ``list_weights``, ``register_weights``) in :mod:`.catalogue`;
``create_model(name, pretrained=True | tag | path)`` is the usual way in.

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

__all__ = ["Weights", "WeightsNotFoundError", "WEIGHTS_DIR_ENV", "cache_dir", "weights_file"]

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
    mult_adds: int  # at input_size, fvcore conv + linear (a factorized reduction's pad row included)
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
    """torch.hub's checkpoint cache (``$TORCH_HOME/hub/checkpoints``), where downloads go."""
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
