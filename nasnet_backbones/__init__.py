"""nasnet-backbones: NASNet (Zoph et al., 2018) models built from validated genotypes.

>>> import nasnet_backbones as nb
>>> model = nb.create_model("nasnet_a_mobile")
>>> features = nb.create_model("nasnet_a_mobile", features_only=True)
>>> classifier = nb.create_model("nasnet_a_mobile", pretrained=True)  # downloads, or $NASNET_WEIGHTS_DIR
>>> preprocess = classifier.pretrained_cfg.transforms()  # the weights' own eval preprocessing
>>> searched = nb.build_model("best_genotype.json", cells=4, filters=44)  # name | Genotype | file
>>> fast = nb.optimize_for_inference(classifier)  # BatchNorm folded, channels_last: same outputs, faster
"""

from .checkpoint import CheckpointError, load_checkpoint, read_state_dict, save_checkpoint
from .convert import CheckpointMismatchError, convert_state_dict
from .genotype import Block, CellSpec, Genotype, GenotypeError
from .nasnet import NASNet, NASNetConfig, NASNetOutputs, build_nasnet
from .ops import NASNET_SEARCH_OPS, OPS
from .catalogue import (ModelEntry, PaperFigures, get_model_entry, get_weights, list_models, list_weights,
                        register_model, register_weights)
from .builder import build_model, create_model
from .inference import optimize_for_inference
from .pretrained_cfg import PretrainedCfg
from . import zoo  # registers the package's models and weights
from .weights import Weights, WeightsNotFoundError
from . import genotypes

__version__ = "0.1.0"

__all__ = [
    "Block",
    "CellSpec",
    "CheckpointError",
    "CheckpointMismatchError",
    "Genotype",
    "GenotypeError",
    "ModelEntry",
    "NASNET_SEARCH_OPS",
    "NASNet",
    "NASNetConfig",
    "NASNetOutputs",
    "OPS",
    "PaperFigures",
    "PretrainedCfg",
    "Weights",
    "WeightsNotFoundError",
    "build_model",
    "build_nasnet",
    "convert_state_dict",
    "create_model",
    "genotypes",
    "get_model_entry",
    "get_weights",
    "list_models",
    "list_weights",
    "load_checkpoint",
    "optimize_for_inference",
    "read_state_dict",
    "register_model",
    "register_weights",
    "save_checkpoint",
]
