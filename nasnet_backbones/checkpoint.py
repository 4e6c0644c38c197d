"""Read and write checkpoints without ever unpickling code.

``.safetensors`` files are read with safetensors; anything else with
``torch.load(..., weights_only=True)``, which refuses pickles that would import or call code.
The state dict may be wrapped (``{"state_dict": ...}``, ``{"model": ...}``) and may carry a
``module.`` prefix from DataParallel; both are undone before conversion.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from .atomic import write_atomic
from .convert import checkpoint_num_classes, convert_state_dict, detect_layout, head_fits

__all__ = ["CheckpointError", "read_state_dict", "read_metadata", "load_checkpoint", "save_checkpoint"]

logger = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint (unreadable, unsafe, or not a state dict)."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
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
    return _unwrap(obj, path)


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

        header = {"model": str(getattr(model, "model_name", "")), **(metadata or {})}
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
