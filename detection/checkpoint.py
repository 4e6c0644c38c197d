"""ImageNet initialisation for NASNet detectors, through detectron2's checkpointer.

``MODEL.WEIGHTS`` may name:
- a classification checkpoint in any layout :mod:`nasnet_backbones.convert` reads (this package's,
  Cadene's ``pretrainedmodels``, timm's; 1001-class TF heads): its cells are converted and copied
  into the backbone (and, for the C4 model, the ROI head's cells), and detectron2's checkpointer
  reports which detector tensors stayed at their initialisation;
- registered weights as ``nasnet://nasnet_a_mobile`` or ``nasnet://nasnet_a_large.cadene_in1k``
  (found locally or downloaded and hash-checked like ``create_model(pretrained=True)``);
- a detectron2 checkpoint of the detector itself, which loads (and resumes) as usual.
``.pth`` and ``.safetensors`` files are read with ``weights_only=True`` or safetensors. detectron2's
own ``.pkl`` format (its model zoo's) is a plain pickle, loaded by detectron2: use only trusted ones.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager
from iopath.common.file_io import PathHandler

from nasnet_backbones.checkpoint import read_state_dict
from nasnet_backbones.convert import convert_state_dict, detect_layout
from nasnet_backbones.registry import split_model_tag
from nasnet_backbones.weights import get_weights, weights_file

from .backbone import build_nasnet_from_cfg

__all__ = ["NASNetDetectionCheckpointer", "NASNetWeightsHandler", "classification_to_detector"]

logger = logging.getLogger(__name__)

# Where a classification network's modules live in a detector built from this package.
_BODY = re.compile(r"^(backbone\.(?:bottom_up\.)?|roi_heads\.res5\.)body\.(.+)$")


class NASNetWeightsHandler(PathHandler):
    """``nasnet://<model>[.<tag>]``: the local file of registered pretrained weights."""

    PREFIX = "nasnet://"

    def _get_supported_prefixes(self) -> list[str]:
        return [self.PREFIX]

    def _get_local_path(self, path: str, **kwargs: Any) -> str:
        model, tag = split_model_tag(path[len(self.PREFIX):])
        return str(weights_file(get_weights(model, tag)))

    def _open(self, path: str, mode: str = "r", **kwargs: Any):
        return PathManager.open(self._get_local_path(path), mode, **kwargs)


if NASNetWeightsHandler.PREFIX not in PathManager._path_handlers:
    PathManager.register_handler(NASNetWeightsHandler())


def classification_to_detector(cfg, detector_keys: list[str], source: dict) -> tuple[dict, list[str]]:
    """Classification state dict -> the detector's key names; also the source tensors left unused.

    The network ``MODEL.NASNET`` describes converts the checkpoint strictly (every cell tensor must
    be there with the right shape); the classifier is not used by a detector.
    """
    network = build_nasnet_from_cfg(cfg)
    ours = convert_state_dict(network, source, detect_layout(source), skip_head=True)
    out, used = {}, set()
    for key in detector_keys:
        m = _BODY.match(key)
        if m and m.group(2) in ours:
            out[key] = ours[m.group(2)]
            used.add(m.group(2))
    unused = [k for k in ours if k not in used and not k.endswith("num_batches_tracked") and not k.startswith("classifier.")]
    return out, unused


class NASNetDetectionCheckpointer(DetectionCheckpointer):
    """detectron2's checkpointer, also reading ImageNet classification checkpoints (see module doc)."""

    def __init__(self, model, save_dir: str = "", *, cfg, **checkpointables: Any) -> None:
        super().__init__(model, save_dir, **checkpointables)
        self.cfg = cfg

    def _load_file(self, filename: str) -> dict[str, Any]:
        if filename.endswith(".pkl"):
            return super()._load_file(filename)
        state = read_state_dict(filename)  # weights_only / safetensors; unwraps {"model": ...}
        if any(k.startswith(("backbone.", "proposal_generator.", "roi_heads.", "head.")) for k in state):
            return super()._load_file(filename)  # a detectron2 checkpoint: resume as usual
        if detect_layout(state) == "unknown":
            raise ValueError(f"MODEL.WEIGHTS {filename} is neither a detectron2 checkpoint nor a NASNet classification "
                             "checkpoint (this package's, Cadene's or timm's)")
        model = self.model.module if hasattr(self.model, "module") else self.model
        converted, unused = classification_to_detector(self.cfg, list(model.state_dict()), state)
        logger.info("ImageNet initialisation from %s: %d tensors into the detector%s", filename, len(converted),
                    f"; {len(unused)} not used by it (cells this detector does not have)" if unused else "")
        return {"model": converted, "__author__": "nasnet_backbones", "matching_heuristics": False}
