"""ImageNet initialisation of NASNet detectors in detectron2's own format, for every checkpointer.

detectron2 initialises a backbone from ImageNet weights by name matching: a checkpoint dict with
``"matching_heuristics": True`` holds the classification network's tensors under their own names,
and ``DetectionCheckpointer`` (``align_and_update_state_dicts``) puts each one into the detector
tensor whose name ends with it: ``cells.cell_0.preprocess.conv.weight`` into
``backbone.bottom_up.body.cells.cell_0.preprocess.conv.weight`` (FPN), ``backbone.body...`` (C4
trunk) or ``roi_heads.res5.body...`` (the C4 box head's cells). This module makes that dict from a
classification checkpoint in any layout :mod:`nasnet_backbones.convert` reads (this package's,
Cadene's ``pretrainedmodels``, timm's): :func:`backbone_weights` and :func:`imagenet_init_checkpoint`.
The ``nasnet://`` weights of :mod:`detection.checkpoint` (detectron2's stock checkpointer) and
:class:`~detection.checkpoint.NASNetDetectionCheckpointer` both load through it, so both fill the
same tensors with the same values.

Name matching alone would skip, with a warning, what does not fit, and a classification file given
to detectron2's checkpointer by its plain path would load nothing at all (its names are not the
detector's). :func:`check_body_filled` runs after every ``load_state_dict`` of a NASNet backbone
module (a hook the modules of :mod:`detection.backbone` register) and raises when the state dict
held NASNet classification tensors but the module's own tensors were not all filled.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from nasnet_backbones import NASNet, build_model
from nasnet_backbones.catalogue import get_weights, list_weights, split_model_tag
from nasnet_backbones.convert import CheckpointMismatchError, convert_state_dict, describe_checkpoint, detect_layout

__all__ = ["AUTHOR", "backbone_weights", "check_body_filled", "imagenet_init_checkpoint", "registered_network"]

logger = logging.getLogger(__name__)

# The "__author__" of the checkpoints made here (detectron2 logs it; "Caffe2" would rename keys).
AUTHOR = "nasnet_backbones"
# Classifier and auxiliary head: no detector has them.
_HEAD_PREFIXES = ("classifier.", "aux_head.", "last_linear.")
# Top-level names of a NASNet classification state dict (this package's layout, Cadene's, timm's);
# no detectron2 detector has a top-level module of these names.
_CLASSIFICATION_KEY = re.compile(r"^(stem|cells|conv0|conv_0|cell_stem_\d+|cell_\d+|reduction_cell_\d+)\.")


def registered_network(name: str) -> NASNet:
    """The registered network ``name`` (``model`` or ``model.tag``), without classifier or
    auxiliary head, on the meta device: its structure and tensor shapes, no memory, no weights."""
    model, _ = split_model_tag(name)
    with torch.device("meta"):
        return build_model(model, num_classes=0, aux_head=False)


def _layout_networks(layout: str) -> list[str]:
    """Registered models that have weights published in ``layout``."""
    names: list[str] = []
    for full in list_weights():
        model, tag = full.split(".", 1)
        if get_weights(model, tag).layout == layout and model not in names:
            names.append(model)
    return names


def _infer_network(source: Mapping[str, torch.Tensor], layout: str, origin: str) -> NASNet:
    """The registered network a Cadene or timm checkpoint converts to (those layouts exist only for
    the published networks); tried on the meta device, so nothing is allocated."""
    candidates = _layout_networks(layout)
    for name in candidates:
        network = registered_network(name)
        try:
            convert_state_dict(network, source, layout, skip_head=True)
        except CheckpointMismatchError:
            continue
        logger.info("%s: %s layout, converted as %s", origin, layout, name)
        return network
    raise CheckpointMismatchError(
        f"{origin}: {describe_checkpoint(source)}, which converts to none of the registered networks with weights in "
        f"that layout ({', '.join(candidates) or 'none'}); save it in this package's layout first "
        "(nasnet_backbones.save_checkpoint of the model it loads into)")


def backbone_weights(source: Mapping[str, torch.Tensor], *, network: nn.Module | None = None,
                     origin: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The backbone tensors of a classification state dict, under this package's names
    (``stem.*``, ``cells.*``): no classifier, no auxiliary head. BatchNorm batch counters a
    Cadene or timm file does not have are 0, as :func:`convert_state_dict` makes them.

    With ``network`` (a :class:`NASNet`, e.g. the one ``MODEL.NASNET`` describes) the conversion is
    strict against it (:func:`~nasnet_backbones.convert.convert_state_dict`; a checkpoint of another
    architecture is a :class:`CheckpointMismatchError` saying what differs). Without, a checkpoint
    in this package's layout is taken as it is and a Cadene/timm one converted to the registered
    network it fits. ``origin`` names the file in errors."""
    layout = detect_layout(source)
    if layout == "unknown":
        raise CheckpointMismatchError(f"{origin} is not a NASNet classification checkpoint: it looks like "
                                      f"{describe_checkpoint(source)}")
    if network is None and layout != "nasnet_backbones":
        network = _infer_network(source, layout, origin)
    converted = dict(source) if network is None else convert_state_dict(network, source, layout, skip_head=True)
    # a counter convert_state_dict made from a network on the meta device is a meta tensor
    return {k: torch.zeros(v.shape, dtype=v.dtype) if v.is_meta else v for k, v in converted.items()
            if not k.startswith(_HEAD_PREFIXES)}


def imagenet_init_checkpoint(weights: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The checkpoint dict detectron2's ``DetectionCheckpointer`` loads by name matching."""
    return {"model": dict(weights), "__author__": AUTHOR, "matching_heuristics": True}


def check_body_filled(module: nn.Module, prefix: str, present: set[str], missing_keys: list[str],
                      unexpected_keys: list[str]) -> None:
    """Raise ``ValueError`` when a ``load_state_dict`` that reached ``module`` (a NASNet backbone
    module at ``prefix``; ``present``: the state dict's keys under it) left some of its tensors
    unfilled although the state dict held NASNet classification tensors: a classification
    checkpoint given by its plain path (nothing could be placed), or one of another architecture
    (some shapes did not fit). Loads that are not of classification weights, or fill the whole
    module, pass; BatchNorm batch counters do not count. (A tensor is unfilled when the state dict
    lacks it, even where FrozenBatchNorm2d would quietly make up missing statistics.)"""
    own = [prefix + k for k in module.state_dict() if not k.endswith("num_batches_tracked")]
    missing = set(missing_keys)
    unfilled = [k for k in own if k not in present or k in missing]
    leftover = [k for k in unexpected_keys if _CLASSIFICATION_KEY.match(k)]
    if not unfilled or not leftover:
        return
    where = prefix.rstrip(".") or type(module).__name__
    if len(unfilled) == len(own):
        raise ValueError(
            f"none of the {len(own)} tensors of {where} were loaded, although the weights hold NASNet classification "
            f"tensors ({', '.join(leftover[:3])}, ...). Either they are an ImageNet classification checkpoint given "
            "by its file name, which is not detectron2's format: give it as MODEL.WEIGHTS nasnet://PATH "
            "(nasnet:///absolute/path or nasnet://relative/path), which converts it for detectron2's checkpointer, "
            "or load it with detection.NASNetDetectionCheckpointer; or they are another architecture than "
            "MODEL.NASNET describes (no shape fits)")
    raise ValueError(
        f"the ImageNet weights filled {len(own) - len(unfilled)} of the {len(own)} tensors of {where} (not e.g. "
        f"{unfilled[0]}); {len(leftover)} of their tensors did not fit (e.g. {leftover[0]}): they are another "
        "architecture than MODEL.NASNET describes. Give weights of this network, or set MODEL.NASNET (ARCH, or "
        "GENOTYPE, CELLS and FILTERS) to the checkpoint's")
