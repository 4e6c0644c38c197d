"""The catalogue's mechanism: model and weights entries, their registration and lookup.

A :class:`ModelEntry` pairs a genotype with a :class:`NASNetConfig`, its default input size and the
figures its paper reports; a :class:`~.weights.Weights` entry is one set of pretrained weights for a
registered model. This module holds no entries: the package's own (every NASNet-A row of the
paper's tables, PNASNet-5, AmoebaNet-A, DARTS-V2 and their weights) are in :mod:`.zoo`, which
registers them when ``nasnet_backbones`` is imported; anyone may register more. Building a network
from an entry is :mod:`.builder`'s job.
"""

from __future__ import annotations

import difflib
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .genotype import Genotype
from .nasnet import NASNetConfig
from .weights import Weights

__all__ = [
    "ModelEntry", "PaperFigures", "TRAINING_FIELDS", "register_model", "list_models", "get_model_entry",
    "split_model_tag", "register_weights", "list_weights", "get_weights", "resolve_pretrained", "scratch_catalogue",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PaperFigures:
    """What a model's paper reports, which the tests check our counts against."""

    params_m: float  # millions, without the auxiliary head
    madds_m: float | None  # millions of multiply-adds at img_size (None where the paper gives none)
    top1: float | None
    top5: float | None
    source: str


@dataclass(frozen=True)
class ModelEntry:
    """A registered architecture: cells, macro configuration, default input size and classes."""

    name: str
    genotype: Genotype
    config: NASNetConfig
    img_size: int
    num_classes: int
    paper: PaperFigures
    description: str


_REGISTRY: dict[str, ModelEntry] = {}
_ALIASES: dict[str, str] = {}
_WEIGHTS: dict[str, dict[str, Weights]] = {}
_DEFAULT_TAG: dict[str, str] = {}


def register_model(entry: ModelEntry, aliases: tuple[str, ...] = ()) -> ModelEntry:
    """Add a model under its name (and ``aliases``); names are unique."""
    if entry.name in _REGISTRY or entry.name in _ALIASES:
        raise ValueError(f"model {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry
    for alias in aliases:
        _ALIASES[alias] = entry.name
    return entry


def list_models(include_aliases: bool = True) -> list[str]:
    """Every registered model name (and alias), sorted."""
    names = set(_REGISTRY) | (set(_ALIASES) if include_aliases else set())
    return sorted(names)


def get_model_entry(name: str) -> ModelEntry:
    """The entry of a registered name or alias; an unknown name is a ValueError with suggestions."""
    key = _ALIASES.get(name, name)
    if key not in _REGISTRY:
        close = difflib.get_close_matches(name, list_models(), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}.{hint} Registered models: {', '.join(list_models())}")
    return _REGISTRY[key]


# Config fields a checkpoint does not fix: they may differ from the weights' training setup.
TRAINING_FIELDS = frozenset(
    {"drop_path_prob", "drop_path_scale_by_depth", "dropout", "bn_momentum", "aux_head", "aux_position", "aux_channels"}
)


def split_model_tag(name: str) -> tuple[str, str | None]:
    """``"nasnet_a_large.cadene_in1k"`` -> ``("nasnet_a_large", "cadene_in1k")``; plain names -> ``(name, None)``."""
    if name not in _REGISTRY and name not in _ALIASES and "." in name:
        base, tag = name.split(".", 1)
        return base, tag
    return name, None


def resolve_pretrained(
    name: str, tag: str | None, pretrained: bool | str | Path | Weights | None,
) -> Weights | Path | None:
    """``pretrained`` (and a ``model.tag`` name) -> registered weights, a local file, or nothing."""
    if isinstance(pretrained, Weights):
        if pretrained.model != name or (tag and tag != pretrained.tag):
            raise ValueError(f"weights {pretrained.name} do not match the model asked for, {name}{'.' + tag if tag else ''}")
        return pretrained
    if pretrained is False or pretrained is None:
        if tag:
            raise ValueError(f"{name}.{tag} names pretrained weights; pass pretrained=True to load them")
        return None
    if pretrained is True:
        return get_weights(name, tag)
    text = str(pretrained)
    if isinstance(pretrained, str) and text in {w.split(".", 1)[1] for w in list_weights(name)}:
        if tag and tag != text:
            raise ValueError(f"conflicting weights: the name asks for {tag!r}, pretrained for {text!r}")
        return get_weights(name, text)
    path = Path(text).expanduser()
    if path.is_file():
        if tag:
            raise ValueError(f"conflicting weights: the name asks for {tag!r} and pretrained gives the file {path}")
        return path
    tags = ", ".join(t.split(".", 1)[1] for t in list_weights(name)) or "none registered"
    raise FileNotFoundError(f"weights {text!r} are neither a weights tag of {name} (tags: {tags}) nor an existing file")


def register_weights(weights: Weights, default: bool = False) -> Weights:
    """Add weights (your own trained files too); the first registered for a model is its default."""
    tags = _WEIGHTS.setdefault(weights.model, {})
    if weights.tag in tags:
        raise ValueError(f"weights {weights.name!r} are already registered")
    tags[weights.tag] = weights
    if default or weights.model not in _DEFAULT_TAG:
        _DEFAULT_TAG[weights.model] = weights.tag
    return weights


def _canonical(model: str) -> str:
    return get_model_entry(model).name


def list_weights(model: str | None = None) -> list[str]:
    """``model.tag`` names of the registered weights (of one model, if given), default first."""
    models = [_canonical(model)] if model else sorted(_WEIGHTS)
    out = []
    for m in models:
        tags = sorted(_WEIGHTS.get(m, {}), key=lambda t: (t != _DEFAULT_TAG.get(m), t))
        out += [f"{m}.{t}" for t in tags]
    return out


def get_weights(model: str, tag: str | None = None) -> Weights:
    """The weights ``tag`` (default: the model's default) of a registered model name or alias."""
    model = _canonical(model)
    tags = _WEIGHTS.get(model, {})
    if not tags:
        with_weights = ", ".join(sorted(_WEIGHTS)) or "none"
        raise ValueError(
            f"no pretrained weights are registered for {model!r} (models with weights: {with_weights}); "
            "use a checkpoint file instead (pretrained='file.pth' in Python, --weights FILE on the command line)"
        )
    tag = tag or _DEFAULT_TAG[model]
    if tag not in tags:
        raise ValueError(f"unknown weights tag {tag!r} for {model!r}; available: {', '.join(list_weights(model))}")
    return tags[tag]


@contextmanager
def scratch_catalogue() -> Iterator[None]:
    """Registrations made inside the block are forgotten when it ends (for tests and experiments)."""
    saved = dict(_REGISTRY), dict(_ALIASES), {m: dict(t) for m, t in _WEIGHTS.items()}, dict(_DEFAULT_TAG)
    try:
        yield
    finally:
        for table, copy in zip((_REGISTRY, _ALIASES, _WEIGHTS, _DEFAULT_TAG), saved):
            table.clear()
            table.update(copy)
