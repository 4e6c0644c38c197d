"""The catalogue in timm: ``import nasnet_backbones.timm`` registers every model and weights tag.

timm has no plug-in entry point: a model joins its registry through the public
``timm.models.register_model`` when the module that defines it is imported. Importing this module
registers each name of :func:`~.catalogue.list_models` (aliases too: ``nasnet_a_mobile`` and
``nasnet_a_4_1056`` are both timm models) with one timm ``pretrained_cfg`` per registered weights
tag (``nasnet_a_mobile.cadene_in1k``), so that ``timm.create_model``, timm's ``train.py``,
``validate.py`` and ``benchmark.py`` build them. ``import nasnet_backbones`` itself never imports timm.

The pretrained configs come from the catalogue's :class:`~.weights.Weights` (url, input size,
crop, interpolation, mean/std, licence); a model without weights gets its stem's defaults.
Building goes through timm's own ``build_model_with_cfg``: weights are read by timm and converted
by :func:`checkpoint_filter_fn` with this package's converters, so a file in any layout the
package reads (its own, Cadene's ``pretrainedmodels``, timm's) loads; registered weights are
found or downloaded, hash-checked, by :func:`~.weights.weights_file` (``$NASNET_WEIGHTS_DIR``
first). ``features_only=True`` gives timm's ``FeatureGetterNet`` over
:meth:`NASNet.forward_intermediates <.nasnet.NASNet.forward_intermediates>`.

timm's argument names map onto the network's: ``drop_rate`` is the dense dropout before the
classifier (:attr:`NASNetConfig.dropout <.nasnet.NASNetConfig.dropout>`), ``drop_path_rate`` the
ScheduledDropPath rate (``drop_path_prob``; it ramps with depth, and with training progress only
where :meth:`~.nasnet.NASNet.set_drop_path_progress` is called), both 0 by default as in timm;
``global_pool`` is ``'avg'`` (default), ``'fast'``, ``'max'``, ``'avgmax'`` or ``''`` (with
``num_classes=0``); ``bn_momentum`` and ``bn_eps`` set BatchNorm's. The auxiliary head is off;
with ``aux_head=True`` ``forward`` still returns the logits alone and
:meth:`~.nasnet.NASNet.forward_with_aux` returns both.
"""

from __future__ import annotations

import logging
from dataclasses import fields, replace
from functools import partial
from typing import Any, Callable, Mapping

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, is_model, model_entrypoint, register_model
from timm.models import resolve_pretrained_cfg

from .catalogue import ModelEntry, get_model_entry, get_weights, list_models, list_weights
from .checkpoint import check_tensor_values
from .convert import checkpoint_num_classes, convert_state_dict, head_fits
from .nasnet import NASNet, NASNetConfig, cell_links, stage_sizes
from .pretrained_cfg import DEFAULT_CROP_PCT, make_pretrained_cfg
from .weights import Weights, weights_file

__all__ = ["register_timm_models", "checkpoint_filter_fn", "timm_pretrained_cfgs", "FIRST_CONV", "CLASSIFIER"]

logger = logging.getLogger(__name__)

FIRST_CONV = "stem.conv"  # the module timm adapts when in_chans differs from the weights'
CLASSIFIER = "classifier"  # the module timm drops when num_classes differs from the weights'

#: timm's registry reads each architecture's DefaultCfg from the defining module's ``default_cfgs``.
default_cfgs: dict[str, Any] = {}

# timm argument -> NASNetConfig field
_TIMM_TO_CONFIG = {"drop_rate": "dropout", "drop_path_rate": "drop_path_prob", "bn_momentum": "bn_momentum",
                   "bn_eps": "bn_eps"}


# -- pretrained configs ------------------------------------------------------------------------

def _feature_levels(config: NASNetConfig) -> int:
    """How many feature maps (one per stride) the network's ``feature_info`` lists."""
    return 1 + sum(link.reduction for link in cell_links(config))


def _timm_cfg(entry: ModelEntry, weights: Weights | None) -> dict[str, Any]:
    """timm's pretrained_cfg fields for ``entry`` with ``weights`` (or the stem's defaults)."""
    cifar = entry.config.stem == "cifar"
    ours = make_pretrained_cfg(entry.name, stem=entry.config.stem, input_size=entry.img_size, weights=weights)
    size = weights.input_size if weights is not None else entry.img_size
    crop_pct = weights.crop_pct if weights is not None else (1.0 if cifar else DEFAULT_CROP_PCT)
    pool = stage_sizes(entry.config, size)[-1]
    cfg: dict[str, Any] = dict(
        input_size=(3, size, size), pool_size=(pool, pool), crop_pct=crop_pct, crop_mode="center",
        interpolation=ours.interpolation, mean=tuple(ours.mean), std=tuple(ours.std),
        num_classes=weights.num_classes if weights is not None else entry.num_classes,
        first_conv=FIRST_CONV, classifier=CLASSIFIER, description=entry.description, paper_name=entry.paper.source,
    )
    if weights is not None:
        # A 1001-class TF head loses its background row in checkpoint_filter_fn, so no label_offset.
        cfg.update(url=weights.url, license=weights.license, tag=weights.tag,
                   notes=(weights.origin, f"top-1 {weights.published_top1} / top-5 {weights.published_top5} "
                                          f"({weights.metrics_source})"))
    return cfg


def timm_pretrained_cfgs(name: str) -> dict[str, dict[str, Any]]:
    """``{"name.tag": timm pretrained_cfg fields}`` for a registered model (default tag first), or
    ``{"name": ...}`` with its stem's defaults when it has no weights."""
    entry = get_model_entry(name)
    tagged = list_weights(name)
    if not tagged:
        return {name: _timm_cfg(entry, None)}
    return {f"{name}.{w.split('.', 1)[1]}": _timm_cfg(entry, get_weights(name, w.split(".", 1)[1])) for w in tagged}


def _registered_weights(cfg: Any) -> Weights | None:
    """The catalogue's weights a resolved timm cfg still points at (None: another source, or none)."""
    if cfg.file or cfg.state_dict or cfg.hf_hub_id or not cfg.url or not cfg.architecture or not cfg.tag:
        return None
    try:
        weights = get_weights(cfg.architecture, cfg.tag)
    except ValueError:
        return None
    return weights if weights.url == cfg.url else None


# -- loading checkpoints ---------------------------------------------------------------------

class _ConversionTarget:
    """``model`` as :func:`~.convert.convert_state_dict` sees it: its keys and shapes, except the
    first conv at the checkpoint's input channels (timm adapts it to ``in_chans`` after the filter)
    and the package's record of the architecture, for error messages."""

    def __init__(self, model: NASNet, checkpoint_chans: int, architecture: str) -> None:
        self._model = model
        self._chans = checkpoint_chans
        self.pretrained_cfg = make_pretrained_cfg(architecture, stem=model.config.stem, input_size=model.img_size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = self._model.state_dict()
        weight = state[f"{FIRST_CONV}.weight"]
        if weight.shape[1] != self._chans:
            state[f"{FIRST_CONV}.weight"] = weight.new_empty((weight.shape[0], self._chans, *weight.shape[2:]))
        return state


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor], model: NASNet) -> dict[str, torch.Tensor]:
    """timm's ``pretrained_filter_fn``: a state dict timm read (this package's layout, Cadene's
    ``pretrainedmodels``, timm's ``nasnetalarge``/``pnasnet5large``; a 1001-class TF head) ->
    ``model``'s keys, strictly (:class:`~.convert.CheckpointMismatchError` says what does not
    match). A classifier of another class count keeps the model's fresh one (fine-tuning)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    source = cfg.get("file") or cfg.get("url") or "the pretrained state dict"
    state = dict(state_dict)
    check_tensor_values(state, source)
    checkpoint_classes = checkpoint_num_classes(state)
    skip_head = not head_fits(checkpoint_classes, model.num_classes)
    if skip_head and model.num_classes:
        logger.warning("%s: the checkpoint's classifier has %s classes and the model %d; the classifier keeps its "
                       "fresh initialisation (fine-tuning)", source, checkpoint_classes or "no", model.num_classes)
    chans = (cfg.get("input_size") or (3,))[0]
    target = _ConversionTarget(model, chans, cfg.get("architecture") or "nasnet")
    return convert_state_dict(target, state, skip_head=skip_head)


# -- building ----------------------------------------------------------------------------------

_CONFIG_FIELDS = frozenset(f.name for f in fields(NASNetConfig))


def _nasnet_from_timm_args(
    variant: str,
    entry: ModelEntry,
    *,
    num_classes: int | None = None,
    in_chans: int = 3,
    global_pool: str = "avg",
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    img_size: int | tuple[int, int] | None = None,
    aux_head: bool = False,
    **other: Any,
) -> NASNet:
    """The network for timm's keyword arguments (``model_cls`` of ``build_model_with_cfg``)."""
    for key, rate in (("drop_rate", drop_rate), ("drop_path_rate", drop_path_rate)):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"{variant}: {key} must be in [0, 1), got {rate}")
    overrides: dict[str, Any] = {"dropout": drop_rate, "drop_path_prob": drop_path_rate, "aux_head": aux_head}
    for key, value in other.items():
        field = _TIMM_TO_CONFIG.get(key, key)
        if field not in _CONFIG_FIELDS or field in ("dropout", "drop_path_prob", "aux_head"):
            supported = sorted({"num_classes", "in_chans", "global_pool", "drop_rate", "drop_path_rate", "img_size",
                                "aux_head", "bn_momentum", "bn_eps"} | (_CONFIG_FIELDS - {"dropout", "drop_path_prob"}))
            raise TypeError(f"{variant} (nasnet_backbones) does not take {key}={value!r}; "
                            f"it takes timm's {', '.join(supported)}")
        overrides[field] = value
    if isinstance(img_size, (tuple, list)):
        if len(img_size) != 2 or img_size[0] != img_size[1]:
            raise ValueError(f"img_size must be one size (the auxiliary head's square input), got {img_size}")
        img_size = int(img_size[0])
    try:
        config = replace(entry.config, **overrides)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{variant}: {exc}") from None
    return NASNet(entry.genotype, config, num_classes=entry.num_classes if num_classes is None else num_classes,
                  in_chans=in_chans, img_size=img_size or entry.img_size, global_pool=global_pool, aux_in_forward=False)


def _create(
    variant: str,
    entry: ModelEntry,
    pretrained: bool = False,
    pretrained_cfg: Any = None,
    pretrained_cfg_overlay: dict[str, Any] | None = None,
    **kwargs: Any,
) -> torch.nn.Module:
    if isinstance(pretrained_cfg, str) and pretrained_cfg:
        known = [w.split(".", 1)[1] for w in list_weights(entry.name)]
        if pretrained_cfg not in known:
            raise ValueError(f"unknown weights tag {pretrained_cfg!r} for {variant}; "
                             f"tags: {', '.join(known) or 'none registered'}")
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg=pretrained_cfg, pretrained_cfg_overlay=pretrained_cfg_overlay)
    weights = _registered_weights(cfg) if pretrained else None
    if weights is not None:
        # $NASNET_WEIGHTS_DIR, torch.hub's cache, or a hash-checked download (a clear error offline).
        cfg = replace(cfg, file=str(weights_file(weights)))
    levels = _feature_levels(entry.config)
    return build_model_with_cfg(
        partial(_nasnet_from_timm_args, variant, entry), variant, pretrained, pretrained_cfg=cfg,
        feature_cfg=dict(feature_cls="getter", out_indices=tuple(range(levels))),
        pretrained_filter_fn=checkpoint_filter_fn, **kwargs,
    )


def _entrypoint(name: str, entry: ModelEntry) -> Callable[..., torch.nn.Module]:
    def create(pretrained: bool = False, **kwargs: Any) -> torch.nn.Module:
        return _create(name, entry, pretrained=pretrained, **kwargs)

    create.__name__ = create.__qualname__ = name
    create.__module__ = __name__
    create.__doc__ = f"{entry.description} (nasnet_backbones model {entry.name!r})."
    return create


def _is_ours(name: str) -> bool:
    return getattr(model_entrypoint(name), "__module__", None) == __name__


def register_timm_models(names: list[str] | None = None) -> list[str]:
    """Register catalogue models (default: all of :func:`~.catalogue.list_models`, aliases
    included) with timm; returns the names newly registered. Names already registered from here
    are skipped, so calling it again (or re-importing) is harmless; call it after registering
    your own models with :func:`~.catalogue.register_model`. A name timm already has from
    elsewhere is left to timm, with a warning."""
    added = []
    for name in names if names is not None else list_models():
        if is_model(name):
            if _is_ours(name):
                globals()[name] = model_entrypoint(name)  # a re-imported module keeps its entry points
            else:
                logger.warning("timm already has a model named %r (from %s); the nasnet_backbones model of that "
                               "name is not registered with timm", name, model_entrypoint(name).__module__)
            continue
        default_cfgs.update(generate_default_cfgs(timm_pretrained_cfgs(name)))
        # As in timm's model modules: the entry point is also this module's attribute of that name.
        globals()[name] = register_model(_entrypoint(name, get_model_entry(name)))
        added.append(name)
    return added


register_timm_models()
