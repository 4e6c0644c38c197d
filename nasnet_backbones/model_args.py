"""Command-line arguments that pick a model, shared by ``info``, ``predict``, ``eval`` and ``train``:
a registered name (``--model``, with ``--weights`` where weights apply) or a searched cell
(``--genotype cell.json --cells N --filters F``)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from .argtypes import base_width, cells_per_stack, refuse_together
from .builder import build_model
from .catalogue import get_weights, split_model_tag
from .checkpoint import read_class_names, read_preprocessing, read_state_dict
from .genotype import Genotype
from .inference import optimize_for_inference
from .nasnet import NASNet
from .pretrained_cfg import DEFAULT_CROP_PCT, default_input_size, make_pretrained_cfg
from .transforms import CIFAR10_MEAN, CIFAR10_STD, ClassificationEval, resize_for_crop

__all__ = ["add_model_arguments", "build_model_from_args", "eval_transform_for", "stored_labels", "refuse_conflicting_weights"]

logger = logging.getLogger(__name__)


def add_model_arguments(parser: argparse.ArgumentParser, weights: bool = True, required: bool = True) -> Any:
    """Add ``--model | --genotype`` (returned as a group, so a caller may add ``--list``) and friends."""
    source = parser.add_mutually_exclusive_group(required=required)
    source.add_argument("--model", help="registered model name (see `nasnet info --list`)")
    source.add_argument("--genotype", help="genotype JSON file (Genotype.to_json), e.g. from `nasnet search`")
    parser.add_argument("--cells", type=cells_per_stack, default=4, help="with --genotype: normal cells per stack (N)")
    parser.add_argument("--filters", type=base_width, default=44, help="with --genotype: base width (F = 24 x filters)")
    parser.add_argument("--stem", choices=("imagenet", "cifar"), default=None,
                        help="with --genotype: stem type (default: the dataset's)")
    if weights:
        parser.add_argument("--weights", help="weights tag of --model (see `nasnet info --list`) or a checkpoint "
                            "file (.pth/.safetensors: this package's, Cadene's, timm's); default: the model's "
                            "default weights")
    return source


def build_model_from_args(
    args: argparse.Namespace, num_classes: int | None = None, pretrained_default: bool = True,
    default_stem: str = "imagenet", **kwargs: Any,
) -> NASNet:
    """The model the arguments describe, with weights loaded when asked for (or by default).
    ``--weights`` with a flag that asks for random weights (``--scratch``, ``--random-weights``,
    where the command has one) is refused rather than silently loading the file."""
    refuse_conflicting_weights(args)
    weights = getattr(args, "weights", None)
    if weights and num_classes is None and Path(weights).is_file():
        # Predicting or evaluating with a fine-tuned checkpoint: its classifier decides the classes.
        from .convert import checkpoint_num_classes

        rows = checkpoint_num_classes(read_state_dict(weights))
        num_classes = 1000 if rows == 1001 else rows  # TF's background class is dropped on loading
    if args.model:
        name, tag = split_model_tag(args.model)
        if weights is None and (pretrained_default or tag):
            get_weights(name, tag)  # a clear error when the model has no (such) registered weights
            weights = True
        return build_model(args.model, pretrained=weights or False, num_classes=num_classes, **kwargs)
    genotype = Genotype.from_json(args.genotype)  # a bad file is the first error
    if weights and not Path(weights).is_file():
        raise FileNotFoundError(f"--weights {weights}: no such checkpoint file (with --genotype, weights are files)")
    model = build_model(genotype, genotype_file=args.genotype, cells=args.cells, filters=args.filters,
                        stem=args.stem or default_stem, pretrained=weights or False, num_classes=num_classes, **kwargs)
    if not weights and pretrained_default:
        raise ValueError(f"--genotype {args.genotype} needs --weights: a checkpoint trained for this cell "
                         "(for example the output of `nasnet train`)")
    return model


def add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    """``--no-optimize`` and ``--compile``: how an inference command runs the model (see
    :func:`~.inference.optimize_for_inference`)."""
    group = parser.add_argument_group("inference speed")
    group.add_argument("--no-optimize", action="store_true",
                       help="run the model as built: no BatchNorm folding, no channels_last (default: both; "
                            "same outputs to float rounding, faster)")
    group.add_argument("--compile", action="store_true",
                       help="also torch.compile the model (a one-time compile of tens of seconds, then faster)")


def inference_model(model: NASNet, args: argparse.Namespace) -> Any:
    """The model an inference command runs: :func:`~.inference.optimize_for_inference` of it unless
    ``--no-optimize`` (``--compile`` with it is refused)."""
    if args.no_optimize:
        if args.compile:
            raise ValueError("--compile works on the optimized model; drop --no-optimize or --compile")
        return model.eval()
    return optimize_for_inference(model, compile=args.compile)


def eval_transform_for(model: NASNet, img_size: int | None = None, weights_file: str | Path | None = None) -> ClassificationEval:
    """How to prepare inputs for ``model``, most specific first: the preprocessing stored with a
    checkpoint by ``nasnet train``; the registered weights'; CIFAR-10's for CIFAR-stem models; the
    model's default weights'; else the Inception-style 0.875 crop at the model's input size."""
    stored = read_preprocessing(weights_file) if weights_file and Path(weights_file).is_file() else None
    if stored is not None and img_size is None:
        return stored
    cfg = model.pretrained_cfg or make_pretrained_cfg(  # a network built directly: the stem's defaults
        type(model).__name__, stem=model.config.stem, input_size=default_input_size("imagenet"))
    if img_size in (None, cfg.crop_size):
        return cfg.transforms()
    if cfg.weights is None and model.config.stem == "cifar":
        return ClassificationEval(img_size, img_size, "bilinear", CIFAR10_MEAN, CIFAR10_STD)
    return ClassificationEval(img_size, resize_for_crop(img_size, DEFAULT_CROP_PCT))


def stored_labels(weights_file: str | Path | None, num_classes: int | None = None) -> list[str] | None:
    """Class names stored with a checkpoint by ``nasnet train`` (None when there are none),
    ``num_classes`` of them when given (else a ``CheckpointError`` naming the file)."""
    if not weights_file or not Path(weights_file).is_file():
        return None
    return read_class_names(weights_file, num_classes)


def refuse_conflicting_weights(args: argparse.Namespace) -> None:
    """``--weights FILE`` together with a request for random weights is one clear error."""
    for flag in ("--scratch", "--random-weights"):
        if hasattr(args, flag[2:].replace("-", "_")) and hasattr(args, "weights"):
            refuse_together(args, flag, "--weights")
