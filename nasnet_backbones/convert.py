"""Convert reference ports' state dicts (Cadene ``pretrainedmodels``, timm) to this package's layout.

Both references name modules after TF-slim's scopes: ``cell_stem_0``, ``cell_<k>``,
``reduction_cell_<i>``, and in a cell ``conv_1x1`` (state 0), ``conv_prev_1x1`` or ``path_1/path_2/
final_path_bn`` (state 1), ``comb_iter_<b>_<left|right>`` (block ``b``'s ops). The key map is
derived from our model's structure, so it is exact for whatever model is being loaded, and the
accounting is strict: every source tensor must be used exactly once and every target tensor filled,
with matching shapes, or :class:`CheckpointMismatchError` lists what did not match.
"""

from __future__ import annotations

import re
from typing import Mapping

import torch
from torch import nn

from .ops import FactorizedReduction
from .pretrained_cfg import architecture_of

__all__ = [
    "CheckpointMismatchError", "detect_layout", "describe_checkpoint", "convert_state_dict",
    "checkpoint_num_classes", "head_fits", "LAYOUTS",
]

# "cadene_nasnet" also covers timm's nasnetalarge, which kept Cadene's module names.
LAYOUTS = ("nasnet_backbones", "cadene_nasnet", "timm_pnasnet")


class CheckpointMismatchError(ValueError):
    """A checkpoint that does not fit the model; the message says what it looks like and what differs."""


def detect_layout(state_dict: Mapping[str, torch.Tensor]) -> str:
    keys = state_dict.keys()
    if any(k.startswith("cells.") for k in keys) and "stem.conv.weight" in keys:
        return "nasnet_backbones"
    if "conv_0.conv.weight" in keys:
        return "timm_pnasnet"
    if "conv0.conv.weight" in keys:
        # Cadene's nasnetalarge and timm's share names; only the mobile port numbers cells with gaps.
        return "cadene_nasnet" if any(k.startswith("reduction_cell_0.") for k in keys) else "unknown"
    return "unknown"


def describe_checkpoint(state_dict: Mapping[str, torch.Tensor]) -> str:
    """One line on what architecture a state dict looks like, for error messages."""
    layout = detect_layout(state_dict)
    keys = list(state_dict)
    if layout == "unknown":
        sample = ", ".join(keys[:4])
        return f"an unrecognised layout ({len(keys)} tensors; first keys: {sample})"
    if layout == "nasnet_backbones":
        cells = sorted({k.split(".")[1] for k in keys if k.startswith("cells.")})
        normal = [c for c in cells if c.startswith("cell_")]
        head = state_dict.get("classifier.weight")
        width = f", {head.shape[1]} features -> {head.shape[0]} classes" if head is not None else ""
        return f"a nasnet_backbones checkpoint with {len(normal)} normal cells{width}"
    cell_ids = {m.group(1) for k in keys if (m := re.match(r"(cell_\d+|reduction_cell_\d+)\.", k))}
    head = state_dict.get("last_linear.weight")
    stem = state_dict.get("conv0.conv.weight", state_dict.get("conv_0.conv.weight"))
    family = "PNASNet-5" if layout == "timm_pnasnet" else "NASNet-A"
    shape = f", {head.shape[1]} features -> {head.shape[0]} classes" if head is not None else ""
    stem_width = f", stem width {stem.shape[0]}" if stem is not None else ""
    return f"a {family} checkpoint in the Cadene/timm layout with {len(cell_ids)} cells{stem_width}{shape}"


def _reference_cell_names(model: nn.Module, layout: str) -> dict[str, str]:
    """Our cell name -> the reference's (Cadene mobile numbers normal cells as if reductions were cells)."""
    names: dict[str, str] = {}
    n_red = 0
    for index, name in enumerate(model.cells):
        if name.startswith("stem_"):
            names[name] = f"cell_stem_{name[5:]}"
        elif layout == "timm_pnasnet":
            # PNASNet numbers all its cells (reductions included) in order after the stem.
            names[name] = f"cell_{index - model.config.num_stem_cells}"
        elif name.startswith("reduction_"):
            names[name] = f"reduction_cell_{name[10:]}"
            n_red += 1
        else:
            k = int(name[5:])
            names[name] = f"cell_{k + 2 * n_red}" if layout == "cadene_nasnet_mobile" else f"cell_{k}"
    return names


_OP_RULES = [
    (re.compile(r"^(dw|pw)(\d)\.weight$"), lambda m: f"separable_{m[2]}.{'depthwise' if m[1] == 'dw' else 'pointwise'}_conv2d.weight"),
    (re.compile(r"^bn(\d)\.(.+)$"), lambda m: f"bn_sep_{m[1]}.{m[2]}"),
    (re.compile(r"^(conv|bn)\.(.+)$"), lambda m: f"{m[1]}.{m[2]}"),
]


def _map_key(model: nn.Module, key: str, layout: str, cell_names: dict[str, str]) -> str:
    stem = "conv_0" if layout == "timm_pnasnet" else "conv0"
    if key.startswith("stem."):
        return f"{stem}.{key[5:]}"
    if key.startswith("classifier."):
        return f"last_linear.{key[11:]}"
    parts = key.split(".")
    if parts[0] != "cells":
        raise KeyError(key)
    cell, rest = parts[1], ".".join(parts[2:])
    ref = cell_names[cell]
    if rest.startswith("preprocess."):
        return f"{ref}.conv_1x1.{rest[len('preprocess.'):]}"
    if rest.startswith("preprocess_prev."):
        tail = rest[len("preprocess_prev."):]
        if isinstance(model.cells[cell].preprocess_prev, FactorizedReduction):
            inner = {"path1.weight": "path_1.conv.weight", "path2.weight": "path_2.conv.weight"}.get(tail)
            inner = inner or "final_path_bn." + tail[len("bn."):]
            return f"{ref}.conv_prev_1x1.{inner}" if layout == "timm_pnasnet" else f"{ref}.{inner}"
        return f"{ref}.conv_prev_1x1.{tail}"
    m = re.match(r"^blocks\.(\d+)\.(left|right)\.(.+)$", rest)
    if m:
        for pattern, fmt in _OP_RULES:
            if (om := pattern.match(m[3])):
                return f"{ref}.comb_iter_{m[1]}_{m[2]}.{fmt(om)}"
    raise KeyError(key)


# The class-specific layers: a checkpoint's are skipped when the model gets a new classifier.
_HEAD_KEYS = ("classifier.", "aux_head.fc.", "last_linear.")


def _is_head(key: str) -> bool:
    return key.startswith(_HEAD_KEYS)


def checkpoint_num_classes(source: Mapping[str, torch.Tensor]) -> int | None:
    """Rows of a checkpoint's classifier (1001 for TF-slim heads with background), or None."""
    for key in ("classifier.weight", "last_linear.weight"):
        if key in source and source[key].ndim == 2:
            return int(source[key].shape[0])
    return None


def head_fits(checkpoint_classes: int | None, model_classes: int) -> bool:
    """Whether a checkpoint's classifier loads into a model's (TF's 1001 rows fit 1000 classes)."""
    return checkpoint_classes == model_classes or (checkpoint_classes == 1001 and model_classes == 1000)


def convert_state_dict(
    model: nn.Module, source: Mapping[str, torch.Tensor], layout: str | None = None, skip_head: bool = False
) -> dict[str, torch.Tensor]:
    """Map a reference state dict onto ``model``'s keys, strictly.

    ``num_batches_tracked`` counters may be missing from old checkpoints; they are then set to 0.
    A 1001-class TF classifier (background first) loads into a 1000-class model without row 0.
    With ``skip_head`` the classifiers on both sides are left out of the accounting and the
    model's keep their fresh initialisation (fine-tuning on other classes, feature extraction).
    """
    layout = layout or detect_layout(source)
    if skip_head:
        source = {k: v for k, v in source.items() if not _is_head(k)}
        fresh = {k: v for k, v in model.state_dict().items() if _is_head(k)}
        return {**fresh, **convert_state_dict(_HeadlessView(model), source, layout)}
    if layout == "nasnet_backbones":
        return _strict_same_keys(model, dict(source))
    if layout not in LAYOUTS:
        raise CheckpointMismatchError(f"cannot convert {describe_checkpoint(source)}; supported layouts: {LAYOUTS}")
    if layout == "cadene_nasnet" and not any(k.startswith("cell_4.") for k in source):
        layout = "cadene_nasnet_mobile"  # mobile names its cells 0-3, 6-9, 12-15
    cell_names = _reference_cell_names(model, layout)
    target = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    missing, bad_shape = [], []
    for key, value in target.items():
        if key.startswith("aux_head."):
            continue  # training-only; no reference port carries it
        try:
            src_key = _map_key(model, key, layout, cell_names)
        except KeyError:
            missing.append(f"{key} (no rule)")
            continue
        if src_key not in source:
            if key.endswith("num_batches_tracked"):
                out[key] = torch.zeros_like(value)
                continue
            missing.append(f"{key} <- {src_key}")
            continue
        tensor = source[src_key]
        used.add(src_key)
        if key == "classifier.weight" or key == "classifier.bias":
            tensor = _drop_background_class(tensor, value.shape[0])
        if tuple(tensor.shape) != tuple(value.shape):
            bad_shape.append(f"{key}: model {tuple(value.shape)} vs checkpoint {src_key} {tuple(tensor.shape)}")
            continue
        out[key] = tensor
    unexpected = [k for k in source if k not in used]
    if missing or bad_shape or unexpected:
        raise CheckpointMismatchError(_mismatch_message(model, source, missing, unexpected, bad_shape))
    for key, value in target.items():
        if key.startswith("aux_head."):
            out[key] = value  # keep the fresh initialisation
    return out


class _HeadlessView:
    """A model seen without its classifiers, for :func:`convert_state_dict` with ``skip_head``."""

    def __init__(self, model: nn.Module) -> None:
        self._model = model

    def __getattr__(self, name: str):
        return getattr(self._model, name)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self._model.state_dict().items() if not _is_head(k)}


def _drop_background_class(tensor: torch.Tensor, classes: int) -> torch.Tensor:
    if tensor.shape[0] == classes + 1 == 1001:
        return tensor[1:]
    return tensor


def _strict_same_keys(model: nn.Module, source: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    target = model.state_dict()
    if not any(k.startswith("aux_head.") for k in target):
        # A checkpoint trained with the auxiliary head loads into a model built without it.
        source = {k: v for k, v in source.items() if not k.startswith("aux_head.")}
    missing = [k for k in target if k not in source and not k.startswith("aux_head.")]
    unexpected = [k for k in source if k not in target]
    bad_shape = [
        f"{k}: model {tuple(target[k].shape)} vs checkpoint {tuple(v.shape)}"
        for k, v in source.items()
        if k in target and tuple(v.shape) != tuple(target[k].shape)
    ]
    if missing or unexpected or bad_shape:
        raise CheckpointMismatchError(_mismatch_message(model, source, missing, unexpected, bad_shape))
    return {**{k: v for k, v in target.items() if k.startswith("aux_head.")}, **source}


def _mismatch_message(model, source, missing, unexpected, bad_shape, limit: int = 8) -> str:
    name = architecture_of(model) or type(model).__name__

    def listing(title: str, items: list[str]) -> str:
        if not items:
            return ""
        more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
        return f"\n  {title} ({len(items)}): " + "; ".join(items[:limit]) + more

    return (
        f"checkpoint does not match model {name!r}: it looks like {describe_checkpoint(source)}."
        + listing("missing from checkpoint", missing)
        + listing("unexpected in checkpoint", unexpected)
        + listing("shape mismatch", bad_shape)
    )
