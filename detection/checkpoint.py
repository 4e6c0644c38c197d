"""ImageNet initialisation for NASNet detectors, through detectron2's checkpointer.

``MODEL.WEIGHTS`` may name:
- a classification checkpoint in any layout :mod:`nasnet_backbones.convert` reads (this package's,
  Cadene's ``pretrainedmodels``, timm's; 1001-class TF heads): its cells are converted and copied
  into the backbone (and, for the C4 model, the ROI head's cells), and detectron2's checkpointer
  reports which detector tensors stayed at their initialisation;
- registered weights as ``nasnet://nasnet_a_mobile`` or ``nasnet://nasnet_a_large.cadene_in1k``
  (found locally or downloaded and hash-checked like ``create_model(pretrained=True)``), or a local
  classification checkpoint as ``nasnet://PATH`` (``nasnet:///absolute/path``,
  ``nasnet://relative/path``);
- a detectron2 checkpoint of the detector itself, which loads (and resumes) as usual.

``nasnet://`` is a path prefix of detectron2's ``PathManager`` (:class:`NASNetWeightsHandler`,
registered on import), so detectron2's own ``DetectionCheckpointer`` (``tools/train_net.py``,
``lazyconfig_train_net.py``, ``DefaultTrainer``) reads it too: the handler converts the weights once
(:mod:`detection.imagenet_init`) into detectron2's ImageNet-initialisation format, a plain state
dict file in torch.hub's cache, which that checkpointer places by name matching. This module's
checkpointer converts classification files the same way (strictly against the network
``MODEL.NASNET`` describes), so both fill every backbone tensor with the same values; the
backbone modules refuse a load that leaves them partly filled from classification weights.
``.pth`` and ``.safetensors`` files are read with ``torch.load(weights_only=True)`` or safetensors,
which run no code. A pickle (detectron2's model-zoo ``.pkl`` format, or a ``.pth`` that
``weights_only`` refuses) can run any code when loaded: it is refused, with the way to convert it,
unless the caller opts in (``--allow-pickle``, ``MODEL.NASNET.ALLOW_PICKLE_WEIGHTS True`` or
``allow_pickle=True``). Remote weights (``http://``, ``https://``, ``file://``, ``detectron2://``)
are downloaded only with a sha256 to check them against: a ``#sha256=HEX`` fragment (8 to 64 hex
digits) or torch.hub's file name convention ``name-<sha256 prefix>.ext``; they go into torch.hub's
cache and are checked again each time they are used.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
import urllib.error
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import Detectron2Handler, PathManager
from iopath.common.file_io import PathHandler

from nasnet_backbones.atomic import write_atomic
from nasnet_backbones.checkpoint import CheckpointError, check_tensor_values, read_state_dict
from nasnet_backbones.convert import detect_layout
from nasnet_backbones.errors import first_line
from nasnet_backbones.catalogue import get_weights, split_model_tag
from nasnet_backbones.weights import cache_dir, weights_file

from .backbone import build_nasnet_from_cfg
from .imagenet_init import AUTHOR, backbone_weights, imagenet_init_checkpoint, registered_network

__all__ = ["NASNetDetectionCheckpointer", "NASNetWeightsHandler", "PickleWeightsRefused", "build_cpu_detector",
           "check_weights", "detectron2_weights_file", "fetch_remote_weights", "read_weights"]

logger = logging.getLogger(__name__)

# torch.hub's convention: ``name-<leading hex digits of the sha256>.ext``; here at least 8 digits.
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[^/.]+$")
_HASH_FRAGMENT = re.compile(r"^sha256=([0-9a-fA-F]{8,64})$")
_DOWNLOADABLE = ("http", "https", "file")


class PickleWeightsRefused(ValueError):
    """A weights file that only unpickling could read, without the caller's opt-in."""


def _pickle_refusal(filename: str, why: str) -> PickleWeightsRefused:
    source = Path(urlsplit(filename).path).name if "://" in filename else filename  # remote: once downloaded
    # A new file beside the original, never the original itself (a .pth converted to .pth would overwrite it)
    converted = str(Path(source).with_suffix("")) + ".converted.pth"
    reader = (f"pickle.load(open('{source}', 'rb'), encoding='latin1')" if source.endswith(".pkl")  # detectron2's
              else f"torch.load('{source}', map_location='cpu', weights_only=False)")
    return PickleWeightsRefused(
        f"weights {filename}: refused to load, {why}; unpickling runs any code the file contains. Convert it "
        f"once, on a machine where you trust the file, to a plain state dict in a new file beside it: "
        f"python -c \"import pickle, torch; d = {reader}; "
        f"torch.save({{k: torch.as_tensor(v) for k, v in d.get('model', d).items()}}, '{converted}')\" "
        f"and load {converted} (read with weights_only=True), or save it as .safetensors. To load this file "
        "as it is, if you trust its source, pass --allow-pickle (or set MODEL.NASNET.ALLOW_PICKLE_WEIGHTS True)")


def read_weights(filename: str, *, allow_pickle: bool = False) -> Any:
    """The object stored in a local weights file, read without running code unless ``allow_pickle``:
    ``.safetensors`` with safetensors, ``.pkl`` (a plain pickle) only with the opt-in, anything else
    with ``torch.load(weights_only=True)``, falling back to a full unpickle only with the opt-in."""
    if filename.endswith(".safetensors"):
        return read_state_dict(filename)
    if filename.endswith(".pkl"):
        if not allow_pickle:
            raise _pickle_refusal(filename, "a .pkl file is a Python pickle (detectron2's model-zoo format)")
        logger.warning("unpickling %s (allowed by --allow-pickle / MODEL.NASNET.ALLOW_PICKLE_WEIGHTS)", filename)
        with open(filename, "rb") as f:
            return pickle.load(f, encoding="latin1")
    try:
        return torch.load(filename, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not allow_pickle:
            first = first_line(exc)
            raise _pickle_refusal(filename, f"it is a pickle that needs more than tensors and plain containers "
                                  f"(torch.load(weights_only=True) said: {first})") from None
        logger.warning("unpickling %s in full (allowed by --allow-pickle / MODEL.NASNET.ALLOW_PICKLE_WEIGHTS)",
                       filename)
        return torch.load(filename, map_location="cpu", weights_only=False)
    except (OSError, MemoryError):
        raise
    except Exception as exc:  # torch.load raises many types (KeyError, RuntimeError, ...) on garbage
        raise CheckpointError(f"weights {filename}: not a PyTorch checkpoint ({type(exc).__name__}: {exc})") from None


def _expected_sha256(url: str) -> str | None:
    """The sha256 (or its leading digits) a remote weights URL declares, if any."""
    parts = urlsplit(url)
    if parts.fragment:
        m = _HASH_FRAGMENT.match(parts.fragment)
        if not m:
            raise ValueError(f"weights {url}: the URL fragment must be #sha256=HEX (8 to 64 hex digits), "
                             f"not #{parts.fragment}")
        return m.group(1).lower()
    m = _HASH_IN_NAME.search(parts.path)
    return m.group(1) if m else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_remote_weights(url: str, *, allow_pickle: bool = False) -> str:
    """A local, hash-checked copy of remote weights (see module doc), in torch.hub's cache.

    Refused before anything is downloaded when the URL declares no sha256, when it names a
    ``.pkl`` without ``allow_pickle``, or when its scheme cannot be downloaded here."""
    check_weights(url, allow_pickle=allow_pickle, flag="weights")
    if url.startswith(Detectron2Handler.PREFIX):
        url = Detectron2Handler.S3_DETECTRON2_PREFIX + url[len(Detectron2Handler.PREFIX):]
    parts = urlsplit(url)
    expected = _expected_sha256(url)
    name = Path(parts.path).name
    target = cache_dir() / name
    if target.is_file() and _sha256(target).startswith(expected):
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    source = parts._replace(fragment="").geturl()
    logger.info("downloading %s to %s", source, target)
    try:
        # writes a temporary file beside the target and renames it only once the hash matched
        torch.hub.download_url_to_file(source, str(target), hash_prefix=expected, progress=False)
    except RuntimeError as exc:
        if "invalid hash value" not in str(exc):
            raise
        raise ValueError(f"weights {url}: the downloaded file's sha256 does not start with {expected}; it is "
                         "corrupt or not the file the URL promises (nothing was kept)") from None
    except urllib.error.URLError as exc:
        raise ValueError(f"weights {url}: could not download ({getattr(exc, 'reason', exc)})") from None
    return str(target)


def _is_remote(path: str) -> bool:
    return "://" in path and not NASNetWeightsHandler.handles(path) and not os.path.exists(path)


def check_weights(path: str, *, allow_pickle: bool = False, flag: str = "MODEL.WEIGHTS") -> None:
    """Refuse, before any model is built or anything downloaded, weights that could only be loaded
    unsafely or not at all: a ``.pkl`` without the opt-in, a remote URL without a sha256 or with an
    unsupported scheme, a local file that does not exist. Reads nothing but the name."""
    if not path:
        return
    if _is_remote(path):
        url = Detectron2Handler.S3_DETECTRON2_PREFIX + path[len(Detectron2Handler.PREFIX):] \
            if path.startswith(Detectron2Handler.PREFIX) else path
        parts = urlsplit(url)
        if parts.scheme not in _DOWNLOADABLE:
            raise ValueError(f"{flag} {path}: {parts.scheme}:// is not supported; give a local file, nasnet://MODEL, "
                             "or an http(s):// or file:// URL with its sha256")
        if _expected_sha256(url) is None:
            raise ValueError(f"{flag} {path}: remote weights are downloaded only with a hash to check them against; "
                             "append #sha256=HEX (the file's sha256, or at least its first 8 hex digits) to the URL, "
                             "or download the file yourself and give its local path")
        name = parts.path
    elif NASNetWeightsHandler.handles(path):
        NASNetWeightsHandler.resolve(path, flag=flag, find=False)  # a registered name, or an existing file
        return
    else:
        name = path.split("?", 1)[0] if not os.path.isfile(path) else path
        if not os.path.isfile(name):
            raise FileNotFoundError(f"{flag} {path} does not exist (a local file, nasnet://MODEL, or a URL with its "
                                    "sha256)")
    if name.endswith(".pkl") and not allow_pickle:
        raise _pickle_refusal(path, "a .pkl file is a Python pickle (detectron2's model-zoo format)")


def _state_dict_of(obj: Any, filename: str) -> dict[str, Any]:
    """The state dict inside a loaded checkpoint (unwrapping ``{"model": ...}`` and the like, and
    DataParallel's ``module.`` prefix)."""
    for key in ("state_dict", "model", "model_state_dict", "model_state"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"weights {filename}: expected a state dict (names -> tensors), found "
                              f"{'an empty one' if isinstance(obj, Mapping) else type(obj).__name__}")
    if all(isinstance(k, str) and k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)

# Bump when the files detectron2_weights_file writes change, so that older conversions are not reused.
_CONVERSION_VERSION = 1
_WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors", ".bin", ".ckpt", ".pkl", ".pyth")


def _source_state(path: str, *, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The state dict of a classification checkpoint file, values checked (finite, floating point)."""
    state = _state_dict_of(read_weights(path, allow_pickle=allow_pickle), path)
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"weights {path}: not a state dict of tensors")
    check_tensor_values(state, path)
    return state


def detectron2_weights_file(source: str | Path, *, network_name: str | None = None) -> Path:
    """A file detectron2's own ``DetectionCheckpointer`` loads as ImageNet initialisation: the
    classification checkpoint ``source`` converted (:func:`~detection.imagenet_init.backbone_weights`,
    strictly against the registered ``network_name`` when given), saved as a plain state dict
    (``torch.load(weights_only=True)`` reads it) in ``<torch.hub cache>/detectron2/``. The file is
    named after the source's sha256, so a changed source is converted again and an unchanged one
    reused. The source is never unpickled."""
    source = Path(source)
    digest = hashlib.sha256(f"{_sha256(source)} {network_name or ''} {_CONVERSION_VERSION}".encode()).hexdigest()
    target = cache_dir() / "detectron2" / f"{source.name.split('.')[0]}-{digest[:16]}.pth"
    if target.is_file():
        return target
    state = _source_state(str(source))
    if any(str(k).startswith(("backbone.", "proposal_generator.", "roi_heads.", "head.")) for k in state):
        raise ValueError(f"weights {source} hold a detector, not a classification network; nasnet://PATH is for "
                         "ImageNet classification checkpoints: give a detectron2 checkpoint by its plain path")
    network = registered_network(network_name) if network_name else None
    weights = backbone_weights(state, network=network, origin=str(source))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"cannot create {target.parent} for the converted weights ({exc.strerror or exc}); "
                      "set TORCH_HOME to a writable place") from None
    write_atomic(target, lambda tmp: torch.save(imagenet_init_checkpoint(weights), tmp))
    logger.info("converted %s (%d backbone tensors) for detectron2's checkpointer: %s", source, len(weights), target)
    return target


class NASNetWeightsHandler(PathHandler):
    """``nasnet://`` weights for detectron2's ``PathManager``: ``nasnet://<model>[.<tag>]``
    (registered pretrained weights, found or downloaded and hash-checked) or ``nasnet://PATH`` (a
    local classification checkpoint in any layout this package reads). Its local path is the
    converted file of :func:`detectron2_weights_file`; :meth:`resolve` gives the source itself.

    detectron2's checkpointer turns ``nasnet:///absolute/path`` into ``nasnet:/absolute/path``
    (``urlparse(...).geturl()``), so that spelling is accepted too."""

    PREFIX = "nasnet://"
    _PREFIXES = ("nasnet://", "nasnet:/")

    def _get_supported_prefixes(self) -> list[str]:
        return list(self._PREFIXES)

    @classmethod
    def handles(cls, path: str) -> bool:
        return isinstance(path, str) and path.startswith(cls._PREFIXES)

    @classmethod
    def resolve(cls, path: str, *, flag: str = "MODEL.WEIGHTS", find: bool = True) -> tuple[Path | None, str | None]:
        """``(file, registered name)`` of a ``nasnet://`` path: a local file and None, or the
        registered weights' local file (``None`` without ``find``, which only checks the name) and
        their ``model.tag``. Bad names are one error naming ``flag``."""
        rest = path.split(":", 1)[1]
        rest = rest[2:] if rest.startswith("//") else rest
        if not rest:
            raise ValueError(f"{flag} {path}: name registered weights (nasnet://nasnet_a_mobile) or a file "
                             "(nasnet:///absolute/path, nasnet://relative/path)")
        local = Path(rest).expanduser()
        if local.is_file():
            if local.suffix == ".pkl":
                raise _pickle_refusal(str(local), "a .pkl file is a Python pickle, which nasnet:// never loads")
            return local, None
        if "/" in rest or os.sep in rest or rest.endswith(_WEIGHT_SUFFIXES):
            raise FileNotFoundError(f"{flag} {path}: {local} does not exist (nasnet:// takes registered weights, "
                                    "nasnet:///absolute/path or nasnet://relative/path)")
        model, tag = split_model_tag(rest)
        try:
            weights = get_weights(model, tag)
        except ValueError as exc:
            raise ValueError(f"{flag} {path}: {exc}") from None
        return (weights_file(weights) if find else None), weights.name

    def _get_local_path(self, path: str, **kwargs: Any) -> str:
        source, name = self.resolve(path)
        return str(detectron2_weights_file(source, network_name=name))

    def _open(self, path: str, mode: str = "r", **kwargs: Any):
        return PathManager.open(self._get_local_path(path), mode, **kwargs)

    def _exists(self, path: str, **kwargs: Any) -> bool:
        try:
            self.resolve(path, find=False)
        except (ValueError, OSError):
            return False
        return True

    def _isfile(self, path: str, **kwargs: Any) -> bool:
        return self._exists(path)


if NASNetWeightsHandler.PREFIX not in PathManager._path_handlers:
    PathManager.register_handler(NASNetWeightsHandler())


class NASNetDetectionCheckpointer(DetectionCheckpointer):
    """detectron2's checkpointer, also reading ImageNet classification checkpoints given by their
    file name (converted strictly against the network ``MODEL.NASNET`` describes), and never
    unpickling or downloading unchecked files without an opt-in (see module doc).

    ``allow_pickle`` defaults to the config's ``MODEL.NASNET.ALLOW_PICKLE_WEIGHTS``."""

    def __init__(self, model, save_dir: str = "", *, cfg, allow_pickle: bool | None = None,
                 **checkpointables: Any) -> None:
        super().__init__(model, save_dir, **checkpointables)
        self.cfg = cfg
        if allow_pickle is None:
            allow_pickle = bool(cfg.MODEL.get("NASNET", {}).get("ALLOW_PICKLE_WEIGHTS", False))
        self.allow_pickle = allow_pickle
        self._preloaded: tuple[str, Any] | None = None

    def local_weights(self, path: str) -> str:
        """A local file for ``path``: itself, the classification file a ``nasnet://`` path names
        (registered weights found or downloaded), or a hash-checked download of a remote URL. A
        missing local file is a ``FileNotFoundError`` naming it."""
        if os.path.isfile(path):
            return path
        if NASNetWeightsHandler.handles(path):
            return str(NASNetWeightsHandler.resolve(path)[0])
        if _is_remote(path):
            return fetch_remote_weights(path, allow_pickle=self.allow_pickle)
        raise FileNotFoundError(f"weights {path} do not exist (MODEL.WEIGHTS / --weights: a local file, "
                                "nasnet://MODEL, or a URL with its sha256)")

    def read_state(self, path: str) -> dict[str, Any]:
        """The state dict in a local weights file, read as :meth:`load` would read it."""
        return _state_dict_of(read_weights(path, allow_pickle=self.allow_pickle), path)

    def load(self, path: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if path:
            query = ""
            if not os.path.isfile(path) and "?" in path:  # detectron2's ?matching_heuristics=True
                path, query = path.split("?", 1)
                query = "?" + query
            path = self.local_weights(path) + query
        return super().load(path, *args, **kwargs)

    def _torch_load(self, f: str) -> dict[str, Any]:
        """detectron2 reads ``.pth`` checkpoints through this: the same safe reader as everywhere."""
        if self._preloaded is not None and self._preloaded[0] == f:
            obj, self._preloaded = self._preloaded[1], None
        else:
            obj = read_weights(f, allow_pickle=self.allow_pickle)
        if not isinstance(obj, dict):
            raise CheckpointError(f"weights {f}: expected a checkpoint dict, found {type(obj).__name__}")
        return obj

    def _load_file(self, filename: str) -> dict[str, Any]:
        if filename.endswith(".pkl"):
            if not self.allow_pickle:
                raise _pickle_refusal(filename, "a .pkl file is a Python pickle (detectron2's model-zoo format)")
            logger.warning("unpickling %s (allowed by --allow-pickle / MODEL.NASNET.ALLOW_PICKLE_WEIGHTS)", filename)
            return super()._load_file(filename)  # detectron2's model-zoo and Caffe2 formats
        obj = read_weights(filename, allow_pickle=self.allow_pickle)
        if filename.endswith(".pyth") and isinstance(obj, dict) and "model_state" in obj:  # pycls, as detectron2
            state = {k: v for k, v in obj["model_state"].items() if not k.endswith("num_batches_tracked")}
            return {"model": state, "__author__": "pycls", "matching_heuristics": True}
        if isinstance(obj, dict) and obj.get("__author__") == AUTHOR and obj.get("matching_heuristics"):
            return obj  # converted already (detectron2_weights_file): placed by name matching as it is
        state = _state_dict_of(obj, filename)
        if any(str(k).startswith(("backbone.", "proposal_generator.", "roi_heads.", "head.")) for k in state):
            self._preloaded = (filename, obj)  # a detectron2 checkpoint: resume as usual, without reading it twice
            return super()._load_file(filename)
        if not all(isinstance(v, torch.Tensor) for v in state.values()) or detect_layout(state) == "unknown":
            raise ValueError(f"MODEL.WEIGHTS {filename} is neither a detectron2 checkpoint nor a NASNet classification "
                             "checkpoint (this package's, Cadene's or timm's)")
        with torch.device("meta"):  # the network's structure and shapes, no memory
            network = build_nasnet_from_cfg(self.cfg)
        weights = backbone_weights(state, network=network, origin=filename)
        logger.info("ImageNet initialisation from %s: %d backbone tensors, placed by detectron2's name matching",
                    filename, len(weights))
        return imagenet_init_checkpoint(weights)


def build_cpu_detector(cfg, weights: str | None = None, *, seed: int = 0) -> torch.nn.Module:
    """The detector ``cfg`` describes, on the CPU and in eval mode, with ``weights`` loaded by
    :class:`NASNetDetectionCheckpointer` (None or ``""``: none). The layers the weights do not
    cover start from ``torch.manual_seed(seed)``, so every call builds the same network: an export
    and a benchmark of random weights work on the same model. ``cfg`` is not changed."""
    from detectron2.modeling import build_model

    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    if weights:
        NASNetDetectionCheckpointer(model, cfg=cfg).load(weights)
    return model
