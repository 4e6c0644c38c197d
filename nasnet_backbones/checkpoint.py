"""Read and write checkpoints without ever unpickling code.

``.safetensors`` files are read with safetensors; anything else with
``torch.load(..., weights_only=True)``, which refuses pickles that would import or call code.
The state dict may be wrapped (``{"state_dict": ...}``, ``{"model": ...}``) and may carry a
``module.`` prefix from DataParallel; both are undone before conversion.
"""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from .atomic import write_atomic
from .convert import checkpoint_num_classes, convert_state_dict, detect_layout, head_fits
from .pretrained_cfg import architecture_of
from .transforms import ClassificationEval

__all__ = ["CheckpointError", "read_state_dict", "read_metadata", "load_checkpoint", "save_checkpoint",
           "check_tensor_values", "read_preprocessing", "read_class_names", "MAX_CLASS_NAME_LENGTH"]

logger = logging.getLogger(__name__)

# Buffers that are integers by design; every other tensor of a checkpoint must be floating point.
_INTEGER_BUFFERS = ("num_batches_tracked",)


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint (unreadable, unsafe, or not a state dict)."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (``.safetensors`` or a ``weights_only`` torch file), unwrapped,
    with every tensor checked by :func:`check_tensor_values`. Raises :class:`CheckpointError`
    naming the file for anything else: a truncated file, a text file, a pickle with code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
        if not state:
            raise CheckpointError(f"{path}: the safetensors file holds no tensors")
        check_tensor_values(state, path)
        return state
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused to load. The file is a pickle that needs more than tensors and plain "
            f"containers to load (weights_only=True rejected it: {str(exc).splitlines()[0]}). "
            "It may run code when unpickled; re-save it as a plain state dict or as .safetensors "
            "from a trusted environment."
        ) from None
    except Exception as exc:  # torch.load raises many types (KeyError, RuntimeError, ...) on garbage
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({type(exc).__name__}: {exc})") from None
    state = _unwrap(obj, path)
    check_tensor_values(state, path)
    return state


def check_tensor_values(state: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Refuse weights that would load but compute nonsense: a tensor that is not floating point
    (an int32 weight is silently truncated by ``load_state_dict``), or one holding NaN or
    infinity. Integer counters that are integers by design (BatchNorm's ``num_batches_tracked``)
    pass. The :class:`CheckpointError` names the file and the first offending tensor."""
    for key, tensor in state.items():
        if not tensor.is_floating_point():
            if key.endswith(_INTEGER_BUFFERS) and not tensor.is_complex() and tensor.dtype != torch.bool:
                continue
            raise CheckpointError(
                f"{path}: tensor {key!r} is {str(tensor.dtype).replace('torch.', '')}, not floating point; weights "
                "must be float16/bfloat16/float32/float64 (was the file written with integer or quantized tensors?)")
        if tensor.numel() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(f"{path}: tensor {key!r} holds {bad} NaN or infinite value(s) of {tensor.numel()}; "
                                  "the weights are corrupt or come from a diverged training run")


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict (names -> tensors), found {type(obj).__name__}")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def load_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load a checkpoint in any supported layout into ``model`` (strict; see :mod:`.convert`).

    When the model's classifier does not match the checkpoint's (another class count, or a
    feature extractor without one), every other tensor is loaded strictly and the classifier
    keeps its fresh initialisation, with a warning: the fine-tuning case.
    """
    source = read_state_dict(path)
    layout = detect_layout(source)
    ckpt_classes = checkpoint_num_classes(source)
    model_classes = 0 if getattr(model, "features_only", False) else getattr(model, "num_classes", None)
    skip_head = not head_fits(ckpt_classes, model_classes or 0)
    if skip_head and model_classes:
        logger.warning(
            "%s: the checkpoint's classifier has %s classes and the model %d; loaded everything else "
            "and re-initialised the classifier (fine-tuning)", path, ckpt_classes or "no", model_classes,
        )
    converted = convert_state_dict(model, source, layout, skip_head=skip_head)
    model.load_state_dict(converted, strict=True)
    logger.info("loaded %d tensors from %s (%s layout)", len(source), path, layout)


def save_checkpoint(model: nn.Module, path: str | Path, metadata: Mapping[str, str] | None = None) -> None:
    """Save ``model``'s state dict (``.safetensors`` or torch format), atomically. ``metadata``
    (strings, e.g. the eval preprocessing) goes into the safetensors header."""
    path = Path(path)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        header = {"model": architecture_of(model), **(metadata or {})}
        write_atomic(path, lambda tmp: save_file(state, str(tmp), metadata=header))
    else:
        write_atomic(path, lambda tmp: torch.save(state, tmp))


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a ``.safetensors`` file ({} for other formats)."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


MAX_CLASS_NAME_LENGTH = 1000  # characters; a class name is a word or a short phrase


def _header_json(path: Path, key: str) -> object | None:
    """The JSON value stored under ``key`` in a safetensors header (None when absent)."""
    text = read_metadata(path).get(key)
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: header key {key!r} is not valid JSON ({exc})") from None


def read_preprocessing(path: str | Path) -> ClassificationEval | None:
    """The evaluation preprocessing ``nasnet train`` stored in a ``.safetensors`` header, checked
    against :meth:`ClassificationEval.from_dict`'s bounds (a crop of 30000 would exhaust memory
    on the first image); None when the file has none."""
    path = Path(path)
    stored = _header_json(path, "preprocessing")
    if stored is None:
        return None
    try:
        return ClassificationEval.from_dict(stored)
    except ValueError as exc:
        raise CheckpointError(f"{path}: header key 'preprocessing': {exc}") from None


def read_class_names(path: str | Path, num_classes: int | None = None) -> list[str] | None:
    """The class names ``nasnet train`` stored in a ``.safetensors`` header: a JSON list of
    non-empty strings, ``num_classes`` of them when given; None when the file has none."""
    path = Path(path)
    names = _header_json(path, "labels")
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) and 0 < len(n) <= MAX_CLASS_NAME_LENGTH
                                              for n in names):
        raise CheckpointError(f"{path}: header key 'labels' must be a JSON list of class names (non-empty strings "
                              f"of at most {MAX_CLASS_NAME_LENGTH} characters)")
    if num_classes is not None and len(names) != num_classes:
        raise CheckpointError(f"{path}: header key 'labels' names {len(names)} classes but the classifier has "
                              f"{num_classes}")
    return names
