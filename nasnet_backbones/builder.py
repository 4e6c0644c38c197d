"""The one builder: a registered name, a :class:`Genotype` or a genotype JSON file -> a :class:`NASNet`.

:func:`build_model` is what the command line's model arguments, detectron2's and torchvision's
backbones, the demo and search's children call; :func:`create_model` is its registered-name half
(timm's ``create_model``). Both record where the network came from in
:attr:`NASNet.pretrained_cfg <.nasnet.NASNet.pretrained_cfg>`, at construction. A genotype is laid
out as an ``N @ F`` network by :func:`~.nasnet.stack_config` (three stacks of ``cells``).
"""

from __future__ import annotations

import logging
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from .catalogue import TRAINING_FIELDS, get_model_entry, get_weights, list_weights, resolve_pretrained, split_model_tag
from .checkpoint import load_checkpoint
from .genotype import Genotype
from .nasnet import NASNet, NASNetConfig, split_model_kwargs, stack_config
from .pretrained_cfg import default_input_size, make_pretrained_cfg
from .weights import Weights, weights_file

__all__ = ["build_model", "create_model", "genotype_label"]

logger = logging.getLogger(__name__)


def create_model(
    name: str,
    pretrained: bool | str | Path | Weights = False,
    num_classes: int | None = None,
    drop_path_prob: float | None = None,
    features_only: bool = False,
    img_size: int | None = None,
    **kwargs: Any,
) -> NASNet:
    """Build a registered model, optionally with pretrained weights.

    Args:
        name: a name from :func:`~.catalogue.list_models`; ``name.tag`` picks registered weights
            (``nasnet_a_large.cadene_in1k``) for use with ``pretrained=True``.
        pretrained: ``False``; ``True`` for the model's default weights (see
            :mod:`nasnet_backbones.weights`: found locally or downloaded, hash-checked); a weights
            tag; or a local checkpoint in any supported format (this package's, Cadene's
            ``pretrainedmodels``, timm's, 1001-class TF ports; ``.pth`` or ``.safetensors``).
        num_classes: classifier outputs (default: the dataset's, 1000 or 10). With pretrained
            weights of another class count, the backbone is loaded and the classifier
            re-initialised, with a warning (fine-tuning).
        drop_path_prob: ScheduledDropPath rate (``1 - drop_path_keep_prob``), default per config.
        features_only: return a multi-scale feature extractor instead of a classifier.
        img_size: input size the auxiliary head is sized for (default: the model's).
        kwargs: other :class:`NASNetConfig` fields (``aux_head``, ``dropout``, ...) or
            ``in_chans`` / ``out_strides``. With registered weights, fields that change the
            architecture the weights were trained for are refused.
    """
    name, tag = split_model_tag(name)
    entry = get_model_entry(name)
    weights = resolve_pretrained(entry.name, tag, pretrained)
    model_kwargs, overrides = split_model_kwargs(kwargs)
    unknown = sorted(set(overrides) - {f.name for f in fields(NASNetConfig)})
    if unknown:
        raise TypeError(f"create_model({name!r}): unknown argument(s) {', '.join(unknown)}; "
                        f"NASNetConfig fields are {', '.join(f.name for f in fields(NASNetConfig))}")
    if isinstance(weights, Weights):
        conflicts = sorted(k for k in overrides if k not in TRAINING_FIELDS)
        if model_kwargs.get("in_chans", 3) != 3:
            conflicts.append(f"in_chans={model_kwargs['in_chans']}")
        if conflicts:
            raise ValueError(
                f"{', '.join(conflicts)} would change the architecture that the pretrained weights "
                f"{weights.name} were trained for; drop the argument(s) or build without pretrained weights"
            )
    # Find (or fetch) the file before the possibly slow build, so a missing one fails fast.
    checkpoint = weights_file(weights) if isinstance(weights, Weights) else weights
    if drop_path_prob is not None:
        overrides["drop_path_prob"] = drop_path_prob
    try:
        config = replace(entry.config, **overrides)
    except TypeError as exc:
        raise TypeError(f"create_model({name!r}): {exc}") from None
    default = get_weights(entry.name) if list_weights(entry.name) else None
    cfg = make_pretrained_cfg(
        entry.name, stem=config.stem, input_size=entry.img_size, default_weights=default,
        weights=weights if isinstance(weights, Weights) else None,
        checkpoint=str(checkpoint) if checkpoint is not None else None,
    )
    model = NASNet(
        entry.genotype,
        config,
        num_classes=entry.num_classes if num_classes is None else num_classes,
        img_size=img_size or entry.img_size,
        features_only=features_only,
        pretrained_cfg=cfg,
        **model_kwargs,
    )
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model


def genotype_label(genotype: Genotype, cells: int, filters: int, path: str | Path | None = None) -> str:
    """``"<name> N@W"``: the genotype's name (else its file's stem, else its hash), ``cells`` per
    stack and the penultimate width ``24 x filters`` the paper names networks by."""
    name = genotype.name or (Path(path).stem if path is not None else genotype.hash()[:12])
    return f"{name} {cells}@{24 * filters}"


def build_model(
    source: str | Path | Genotype,
    *,
    cells: int = 4,
    filters: int = 44,
    stem: str | None = None,
    pretrained: bool | str | Path | Weights | None = False,
    num_classes: int | None = None,
    genotype_file: str | Path | None = None,
    **kwargs: Any,
) -> NASNet:
    """The network ``source`` names, with its origin in ``pretrained_cfg``.

    Args:
        source: a registered model name (``nasnet_a_mobile``, ``name.tag``: see :func:`create_model`),
            a :class:`Genotype`, or a genotype JSON file (a :class:`~pathlib.Path`, or a string
            ending in ``.json``).
        cells, filters, stem: for a genotype: ``cells`` (N) normal cells per stack, base width
            ``filters`` (F), ``"imagenet"`` (default) or ``"cifar"`` stem. A registered name has its own.
        pretrained: for a name, as :func:`create_model`; for a genotype, False or a checkpoint file.
        num_classes: classifier outputs; default the model's (a genotype: 1000, or 10 with the CIFAR stem).
        genotype_file: the file a :class:`Genotype` source was read from (recorded, and the network's
            name when the genotype has none).
        kwargs: :class:`NASNetConfig` fields and :class:`NASNet` arguments (``img_size``,
            ``features_only``, ``out_strides``, ...).
    """
    if not isinstance(source, (Genotype, Path)) and not str(source).endswith(".json"):
        return create_model(str(source), pretrained=pretrained or False, num_classes=num_classes, **kwargs)
    if isinstance(source, Genotype):
        genotype, path = source, (Path(genotype_file) if genotype_file else None)
    else:
        path = Path(source)
        genotype = Genotype.from_json(path)
    checkpoint = None
    if pretrained is True or isinstance(pretrained, Weights):
        raise ValueError("pretrained weights exist for registered models only; a genotype starts from random "
                         "weights (or load them into the returned module)")
    if pretrained:
        checkpoint = Path(str(pretrained)).expanduser()
        if not checkpoint.is_file():
            raise FileNotFoundError(f"{pretrained}: no such checkpoint file (a genotype's weights are files)")
    stem = stem or "imagenet"
    model_kwargs, config_kwargs = split_model_kwargs(kwargs)
    cfg = make_pretrained_cfg(genotype_label(genotype, cells, filters, path), stem=stem,
                              input_size=default_input_size(stem), genotype_file=str(path) if path else None,
                              checkpoint=str(checkpoint) if checkpoint else None)
    model = NASNet(genotype, stack_config(cells, filters, stem, **config_kwargs),
                   num_classes=num_classes if num_classes is not None else (1000 if stem == "imagenet" else 10),
                   pretrained_cfg=cfg, **model_kwargs)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model
