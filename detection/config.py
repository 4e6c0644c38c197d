"""``MODEL.NASNET.*``: the config keys the NASNet backbones read, added as detectron2 projects do."""

from __future__ import annotations

from detectron2.config import CfgNode as CN

__all__ = ["add_nasnet_config"]


def add_nasnet_config(cfg: CN) -> CN:
    """Add the ``MODEL.NASNET`` keys (with their defaults) to a detectron2 config, in place."""
    cfg.MODEL.NASNET = CN()
    # A registered model (nasnet_backbones.list_models(): nasnet_a_mobile, nasnet_a_large,
    # pnasnet_5_large, ...). Ignored when GENOTYPE is set.
    cfg.MODEL.NASNET.ARCH = "nasnet_a_mobile"
    # A genotype JSON file (nasnet_backbones.Genotype.to_json, e.g. from `nasnet search`); the
    # network is then built from CELLS and FILTERS with an ImageNet stem.
    cfg.MODEL.NASNET.GENOTYPE = ""
    # With GENOTYPE: normal cells per stack (the paper's N).
    cfg.MODEL.NASNET.CELLS = 4
    # With GENOTYPE: width of the first stack (the paper's F is 24 x FILTERS).
    cfg.MODEL.NASNET.FILTERS = 44
    # Feature maps the backbone returns: ReLU'd outputs of the deepest cell at each stride.
    cfg.MODEL.NASNET.OUT_FEATURES = ["stride4", "stride8", "stride16", "stride32"]
    # Normalisation of the backbone's BatchNorm layers: "FrozenBN" (statistics and affine
    # fixed, the usual choice when fine-tuning from ImageNet with small batches), "BN", or
    # "SyncBN" (statistics across all GPUs).
    cfg.MODEL.NASNET.NORM = "FrozenBN"
    # BatchNorm momentum (PyTorch convention) when NORM is BN or SyncBN. The classification
    # configs use TF's 0.9997 decay (0.0003), far too slow for the running statistics to follow
    # a detection schedule.
    cfg.MODEL.NASNET.BN_MOMENTUM = 0.1
    # ScheduledDropPath rate in the backbone's cells (0 disables; the paper trains detection
    # with it off). The schedule ramps it up over SOLVER.MAX_ITER.
    cfg.MODEL.NASNET.DROP_PATH_PROB = 0.0
    # Allow MODEL.WEIGHTS (or --weights) to be a pickle: detectron2's model-zoo ``.pkl`` files, or a
    # ``.pth`` that torch.load(weights_only=True) refuses. RISK: unpickling runs any code the file
    # contains, with your user's rights; set it True only for files from a source you trust
    # (``--allow-pickle`` on the command line does the same). Better: convert such a file once to
    # a plain state dict (.pth) or .safetensors, which load without unpickling code.
    cfg.MODEL.NASNET.ALLOW_PICKLE_WEIGHTS = False
    return cfg
