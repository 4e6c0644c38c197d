"""torch.hub entry points: one per model name in the catalogue of ``nasnet_backbones``.

>>> import torch
>>> torch.hub.list("OWNER/nasnet-backbones")                       # every registered name
>>> model = torch.hub.load("OWNER/nasnet-backbones", "nasnet_a_mobile", pretrained=True)
>>> model = torch.hub.load("/path/to/checkout", "nasnet_a_large", source="local", pretrained="cadene_in1k")
>>> print(torch.hub.help("OWNER/nasnet-backbones", "nasnet_a_large"))

Each entry is ``nasnet_backbones.create_model(name, pretrained=..., **kwargs)`` (timm's
``create_model`` shape): ``pretrained`` is ``False`` (random weights), ``True`` (the model's default
registered weights), a weights tag, or a local checkpoint file; registered weights are found in
``$NASNET_WEIGHTS_DIR`` or torch.hub's cache, or downloaded into it, and their sha256 is checked
either way. Other keyword arguments are create_model's (``num_classes``, ``features_only``,
``drop_path_prob``, ``img_size``, NASNetConfig fields). The entries are made from the catalogue
when torch.hub imports this file, so a model registered by the package is listed without editing
it. This file imports the model package only (floor 1: no detectron2, ONNX or Ray).
"""

dependencies = ["torch", "torchvision", "numpy", "PIL", "safetensors"]  # import names, as torch.hub checks them

from pathlib import Path as _Path  # noqa: E402  (torch.hub reads `dependencies` first by convention)
from typing import Any as _Any, Callable as _Callable  # noqa: E402

import nasnet_backbones as _nb  # noqa: E402


def _describe(name: str) -> str:
    """The docstring of ``name``'s entry: architecture, input size, classes, paper, weights, usage."""
    entry = _nb.get_model_entry(name)
    config = entry.config
    alias = "" if entry.name == name else f" (an alias of ``{entry.name}``)"
    figures = entry.paper
    reported = ", ".join(part for part in (
        f"{figures.params_m}M parameters",
        f"{figures.madds_m:g}M mult-adds" if figures.madds_m is not None else "",
        f"top-1 {figures.top1}" if figures.top1 is not None else "",
    ) if part)
    weights = [_nb.get_weights(entry.name, w.split(".", 1)[1]) for w in _nb.list_weights(entry.name)]
    if weights:
        listed = "; ".join(f"``{w.tag}``{' (default)' if i == 0 else ''}: {w.published_top1:.2f} top-1 at "
                           f"{w.input_size} px, {w.filename}" for i, w in enumerate(weights))
        pretrained = (f"``True`` for the default weights, or a tag ({listed}); the file is found or "
                      "downloaded and its sha256 checked")
    else:
        pretrained = "no registered weights: ``False``, or a local checkpoint file"
    return (
        f"{entry.description}{alias}.\n\n"
        f"Genotype {entry.genotype.name or entry.genotype.hash()[:12]}, {config.num_cells} cells, base width "
        f"{config.num_filters}, {entry.img_size}x{entry.img_size} input, {entry.num_classes} classes. "
        f"{figures.source}: {reported}.\n\n"
        f"Args:\n"
        f"    pretrained: {pretrained}.\n"
        f"    **kwargs: as nasnet_backbones.create_model (num_classes, features_only, drop_path_prob, img_size, "
        f"NASNetConfig fields).\n\n"
        f"Returns a nasnet_backbones.NASNet: torch.hub.load(repo, {name!r}, pretrained=...)."
    )


def _hub_entry(name: str) -> _Callable[..., "_nb.NASNet"]:
    def entry(pretrained: bool | str | _Path = False, **kwargs: _Any) -> _nb.NASNet:
        return _nb.create_model(name, pretrained=pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__module__ = __name__
    entry.__doc__ = _describe(name)
    return entry


for _name in _nb.list_models():
    globals()[_name] = _hub_entry(_name)
del _name
