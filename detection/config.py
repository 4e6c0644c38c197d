"""``MODEL.NASNET.*``: the config keys the NASNet backbones read, added as detectron2 projects do
(:func:`add_nasnet_config`) and, on ``import detection``, to detectron2's own defaults
(:func:`register_nasnet_defaults`), so that its stock ``get_cfg()`` knows them too."""

from __future__ import annotations

import argparse
from typing import Callable

from detectron2.config import CfgNode as CN

from nasnet_backbones.argtypes import (fraction, nonnegative_float, nonnegative_int, positive_float, positive_int,
                                       probability)

__all__ = ["add_nasnet_config", "check_config_numbers", "register_nasnet_defaults"]

# Config numbers with a meaningful range, checked before anything is built or written. The last
# field says whether the key matters only for training. detectron2 itself accepts a MAX_ITER of -1
# (no training, "finished"), a negative batch or a NaN learning rate and fails late or silently.
_NUMBERS: list[tuple[str, Callable[[str], object], bool]] = [
    ("SOLVER.MAX_ITER", positive_int, True),
    ("SOLVER.IMS_PER_BATCH", positive_int, True),
    ("SOLVER.BASE_LR", positive_float, True),
    ("SOLVER.MOMENTUM", probability, True),
    ("SOLVER.WEIGHT_DECAY", nonnegative_float, True),
    ("SOLVER.GAMMA", positive_float, True),
    ("SOLVER.WARMUP_ITERS", nonnegative_int, True),
    ("SOLVER.WARMUP_FACTOR", probability, True),
    ("SOLVER.CHECKPOINT_PERIOD", positive_int, True),
    ("SOLVER.STEPS", positive_int, True),
    ("TEST.EVAL_PERIOD", nonnegative_int, True),
    ("INPUT.MIN_SIZE_TRAIN", positive_int, True),
    ("INPUT.MAX_SIZE_TRAIN", positive_int, True),
    ("MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", positive_int, True),
    ("MODEL.ROI_HEADS.POSITIVE_FRACTION", fraction, True),
    ("MODEL.RPN.BATCH_SIZE_PER_IMAGE", positive_int, True),
    ("MODEL.RPN.POSITIVE_FRACTION", fraction, True),
    ("MODEL.RPN.PRE_NMS_TOPK_TRAIN", positive_int, True),
    ("MODEL.RPN.POST_NMS_TOPK_TRAIN", positive_int, True),
    ("DATALOADER.NUM_WORKERS", nonnegative_int, False),
    ("INPUT.MIN_SIZE_TEST", nonnegative_int, False),  # 0 turns test-time resizing off (detectron2)
    ("INPUT.MAX_SIZE_TEST", positive_int, False),
    ("TEST.DETECTIONS_PER_IMAGE", positive_int, False),
    ("MODEL.ROI_HEADS.NUM_CLASSES", positive_int, False),
    ("MODEL.ROI_HEADS.SCORE_THRESH_TEST", probability, False),
    ("MODEL.ROI_HEADS.NMS_THRESH_TEST", probability, False),
    ("MODEL.RETINANET.NUM_CLASSES", positive_int, False),
    ("MODEL.RETINANET.SCORE_THRESH_TEST", probability, False),
    ("MODEL.RETINANET.NMS_THRESH_TEST", probability, False),
    ("MODEL.RETINANET.TOPK_CANDIDATES_TEST", positive_int, False),
    ("MODEL.RPN.PRE_NMS_TOPK_TEST", positive_int, False),
    ("MODEL.RPN.POST_NMS_TOPK_TEST", positive_int, False),
    ("MODEL.RPN.NMS_THRESH", probability, False),
    ("MODEL.NASNET.CELLS", positive_int, False),
    ("MODEL.NASNET.FILTERS", positive_int, False),
    ("MODEL.NASNET.BN_MOMENTUM", probability, False),
    ("MODEL.NASNET.DROP_PATH_PROB", probability, False),
]


def _lookup(cfg: CN, key: str):
    node = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def check_config_numbers(cfg: CN, *, training: bool) -> None:
    """Refuse config numbers outside their range (a batch of 0, a NaN learning rate, a threshold
    of 2, ...) with one ``ValueError`` naming the key, before anything is built or written.
    ``training`` also checks the keys only training reads."""
    for key, check, train_only in _NUMBERS:
        value = _lookup(cfg, key)
        if value is None or (train_only and not training):
            continue
        for item in value if isinstance(value, (list, tuple)) else [value]:
            try:
                if isinstance(item, bool) or not isinstance(item, (int, float)):
                    raise argparse.ArgumentTypeError(f"must be a number, got {item!r}")
                check(repr(item))
            except argparse.ArgumentTypeError as exc:
                raise ValueError(f"config {key}: {exc} (set it in the config file or as KEY VALUE on the "
                                 "command line)") from None


def _nasnet_defaults() -> CN:
    """The ``MODEL.NASNET`` node with its defaults, one comment per key."""
    node = CN()
    # A registered model (nasnet_backbones.list_models(): nasnet_a_mobile, nasnet_a_large,
    # pnasnet_5_large, ...). Ignored when GENOTYPE is set.
    node.ARCH = "nasnet_a_mobile"
    # A genotype JSON file (nasnet_backbones.Genotype.to_json, e.g. from `nasnet search`); the
    # network is then built from CELLS and FILTERS with an ImageNet stem.
    node.GENOTYPE = ""
    # With GENOTYPE: normal cells per stack (the paper's N).
    node.CELLS = 4
    # With GENOTYPE: width of the first stack (the paper's F is 24 x FILTERS).
    node.FILTERS = 44
    # Feature maps the backbone returns: ReLU'd outputs of the deepest cell at each stride.
    node.OUT_FEATURES = ["stride4", "stride8", "stride16", "stride32"]
    # Normalisation of the backbone's BatchNorm layers: "FrozenBN" (statistics and affine
    # fixed, the usual choice when fine-tuning from ImageNet with small batches), "BN", or
    # "SyncBN" (statistics across all GPUs).
    node.NORM = "FrozenBN"
    # BatchNorm momentum (PyTorch convention) when NORM is BN or SyncBN. The classification
    # configs use TF's 0.9997 decay (0.0003), far too slow for the running statistics to follow
    # a detection schedule.
    node.BN_MOMENTUM = 0.1
    # ScheduledDropPath rate in the backbone's cells (0 disables; the paper trains detection
    # with it off). The schedule ramps it up over SOLVER.MAX_ITER.
    node.DROP_PATH_PROB = 0.0
    # Gradient checkpointing of the cell stack (NASNet.set_grad_checkpointing): each cell's
    # activations are recomputed in the backward pass instead of being kept, so training needs
    # less memory (what limits NASNet-A large at 800-1200 pixels) for about one more forward pass
    # of the backbone per step. Gradients and BatchNorm statistics are exactly those without it.
    node.GRAD_CHECKPOINTING = False
    # The fast eager path: in eval mode, without gradients, the backbone (and the C4 box head)
    # run a copy of the network with every frozen / eval-mode BatchNorm folded into its
    # convolution (nasnet_backbones.optimize_for_inference), built on the first such call and
    # rebuilt when the weights change; detections equal the plain path's within float rounding.
    # Training, gradients, tracing and exports always run the real modules; the copy is in no
    # state dict or checkpoint. False: always the real modules (no copy, no extra memory).
    node.OPTIMIZE_FOR_INFERENCE = True
    # Allow MODEL.WEIGHTS (or --weights) to be a pickle: detectron2's model-zoo ``.pkl`` files, or a
    # ``.pth`` that torch.load(weights_only=True) refuses. RISK: unpickling runs any code the file
    # contains, with your user's rights; set it True only for files from a source you trust
    # (``--allow-pickle`` on the command line does the same). Better: convert such a file once to
    # a plain state dict (.pth) or .safetensors, which load without unpickling code. (detectron2's
    # own checkpointer does not read this key: through it ``nasnet://`` weights are never unpickled.)
    node.ALLOW_PICKLE_WEIGHTS = False
    return node


def add_nasnet_config(cfg: CN) -> CN:
    """Add the ``MODEL.NASNET`` keys (with their defaults) to a detectron2 config, in place. Keys
    the config already has keep their values, so calling it again, or on a config from
    detectron2's ``get_cfg()`` after :func:`register_nasnet_defaults`, changes nothing."""
    defaults = _nasnet_defaults()
    if "NASNET" not in cfg.MODEL:
        cfg.MODEL.NASNET = defaults
        return cfg
    for key, value in defaults.items():
        if key not in cfg.MODEL.NASNET:
            setattr(cfg.MODEL.NASNET, key, value)
    return cfg


def register_nasnet_defaults() -> None:
    """Add the ``MODEL.NASNET`` keys to detectron2's own defaults, so that its ``get_cfg()`` and
    with it the stock tools (``tools/train_net.py``, ``analyze_model.py``, ``benchmark.py``) read
    the shipped configs. ``import detection`` calls it; calling it again changes nothing."""
    from detectron2.config import defaults

    add_nasnet_config(defaults._C)
