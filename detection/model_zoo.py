"""The shipped configs, found by name like detectron2's ``model_zoo.get_config_file``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from detectron2.config import CfgNode, get_cfg

from .config import add_nasnet_config

__all__ = ["list_configs", "get_config_file", "get_config"]


def _config_dir() -> Path:
    return Path(str(resources.files(__package__).joinpath("configs")))


def list_configs() -> list[str]:
    """Names of the shipped configs (base configs, which are not complete, excluded)."""
    return sorted(p.name for p in _config_dir().glob("*.yaml") if not p.name.startswith("Base-"))


def get_config_file(name: str) -> str:
    """Path of a shipped config: ``get_config_file("faster_rcnn_nasnet_a_mobile_FPN_1x.yaml")``
    (the ``.yaml`` suffix is optional)."""
    filename = name if name.endswith(".yaml") else name + ".yaml"
    path = _config_dir() / filename
    if not path.is_file():
        raise FileNotFoundError(f"no shipped config named {name!r}; available: {', '.join(list_configs())}")
    return str(path)


def get_config(name_or_path: str) -> CfgNode:
    """A detectron2 config with the ``MODEL.NASNET`` keys, merged from a shipped name or a file."""
    cfg = add_nasnet_config(get_cfg())
    path = name_or_path if Path(name_or_path).is_file() else get_config_file(name_or_path)
    try:
        cfg.merge_from_file(path)
    except KeyError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return cfg
