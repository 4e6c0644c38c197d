"""The shipped configs, found by name like detectron2's ``model_zoo.get_config_file``, and every
YAML config file read safely.

Each YAML config has a LazyConfig twin, ``configs/<same name>.py`` (:func:`list_lazy_configs`,
:func:`get_lazy_config`), built like detectron2's ``configs/new_baselines/*.py`` from its
model-zoo ``common`` pieces (:func:`detectron2_lazy_config`), for ``tools/lazyconfig_train_net.py``.
A LazyConfig is Python that runs when it is loaded: load only files you would run.

detectron2's ``CfgNode.merge_from_file`` falls back to ``yaml.unsafe_load`` by default, so a Python
tag in a config (or in a ``_BASE_`` file it names) would run code. :func:`get_config` reads every
file of the chain with ``yaml.safe_load`` first, so a Python tag, a syntax error, a file that is not
a mapping, a missing or circular ``_BASE_`` is one error naming the file (and the line, where YAML
knows it), and only then merges with ``allow_unsafe=False``.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import yaml
from detectron2.config import CfgNode, LazyConfig, get_cfg
from detectron2.utils.file_io import PathManager
from omegaconf import DictConfig

from .config import add_nasnet_config

__all__ = ["list_configs", "get_config_file", "get_config", "check_config_chain", "list_lazy_configs",
           "get_lazy_config_file", "get_lazy_config", "detectron2_lazy_config"]

_BASE_KEY = "_BASE_"


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


def list_lazy_configs() -> list[str]:
    """Names of the shipped LazyConfigs (``.py``; the ``base_*`` files they import excluded)."""
    return sorted(p.name for p in _config_dir().glob("*.py") if not p.name.startswith(("base_", "_")))


def get_lazy_config_file(name: str) -> str:
    """Path of a shipped LazyConfig: ``get_lazy_config_file("faster_rcnn_nasnet_a_mobile_FPN_1x")``
    (the ``.py`` suffix is optional); give it to ``lazyconfig_train_net.py --config-file``."""
    filename = name if name.endswith(".py") else name + ".py"
    path = _config_dir() / filename
    if not path.is_file() or filename.startswith(("base_", "_")):
        raise FileNotFoundError(f"no shipped LazyConfig named {name!r}; available: {', '.join(list_lazy_configs())}")
    return str(path)


def get_lazy_config(name_or_path: str) -> DictConfig:
    """A shipped LazyConfig by name, or a LazyConfig file, loaded (``LazyConfig.load``): a
    namespace of ``model``, ``dataloader``, ``optimizer``, ``lr_multiplier`` and ``train`` to
    ``detectron2.config.instantiate``."""
    path = name_or_path if Path(name_or_path).is_file() else get_lazy_config_file(name_or_path)
    return LazyConfig.load(path)


def detectron2_lazy_config(relative: str) -> DictConfig:
    """One of detectron2's own model-zoo LazyConfigs, e.g. ``"common/models/mask_rcnn_fpn.py"``,
    loaded. Found beside the installed ``detectron2`` package, as its ``model_zoo.get_config``
    finds them, without importing ``detectron2.model_zoo`` (which imports the deprecated
    ``pkg_resources``)."""
    path = resources.files("detectron2").joinpath("model_zoo", "configs", relative)
    if not path.is_file():
        raise FileNotFoundError(f"detectron2's model-zoo config {relative} is not in this installation ({path})")
    return LazyConfig.load(str(path))


def _named(path: str, chain: tuple[str, ...]) -> str:
    """``FILE`` or, for a ``_BASE_`` file, ``FILE (the _BASE_ of CHILD <- ... <- TOP)``."""
    return f"{path} (the _BASE_ of {' <- '.join(reversed(chain))})" if chain else path


def _yaml_error(path: str, exc: yaml.YAMLError, chain: tuple[str, ...] = ()) -> ValueError:
    """One line for a YAML error: the file, the line and column, what is wrong."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{_named(path, chain)}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None \
        else _named(path, chain)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if isinstance(exc, yaml.constructor.ConstructorError) and "tag" in str(problem):
        return ValueError(f"config {where}: refused, {problem}. Configs are read with yaml.safe_load: Python "
                          "tags (!!python/...) could run code and are not allowed; write plain values instead")
    return ValueError(f"config {where}: not valid YAML ({problem})")


def _base_path(base: str, including: str) -> str:
    """Where a ``_BASE_`` entry points: as fvcore resolves it (relative to the including file)."""
    base = os.path.expanduser(base)
    if base.startswith(("/", "https://", "http://")):
        return base
    return os.path.join(os.path.dirname(including), base)


def check_config_chain(path: str, _chain: tuple[str, ...] = ()) -> None:
    """Read ``path`` and every ``_BASE_`` file it names with ``yaml.safe_load``; raise one
    ``ValueError`` naming the file for a Python tag, invalid YAML, a file that is not a mapping,
    a missing or circular base. Runs nothing from the files."""
    if path in _chain:
        raise ValueError(f"config {_chain[0]}: circular _BASE_ chain {' -> '.join((*_chain, path))}")
    if not PathManager.isfile(path):
        raise ValueError(f"config {_chain[-1]}: its _BASE_ file {path} does not exist (relative paths are taken "
                         f"from the including file's folder)" if _chain else f"config file {path} does not exist")
    try:
        with PathManager.open(path, "r") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise _yaml_error(path, exc, _chain) from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"config {_named(path, _chain)}: not a text file ({exc.reason} at byte {exc.start})") from None
    if not isinstance(data, dict):
        raise ValueError(f"config {_named(path, _chain)}: expected a mapping of config keys (KEY: value), found "
                         f"{'an empty file' if data is None else type(data).__name__}")
    bases = data.get(_BASE_KEY, [])
    for base in bases if isinstance(bases, list) else [bases]:
        if not isinstance(base, str):
            raise ValueError(f"config {_named(path, _chain)}: _BASE_ must be a file name or a list of them, found {base!r}")
        check_config_chain(_base_path(base, path), (*_chain, path))


def get_config(name_or_path: str) -> CfgNode:
    """A detectron2 config with the ``MODEL.NASNET`` keys, merged from a shipped name or a file,
    read safely (see module doc)."""
    cfg = add_nasnet_config(get_cfg())
    path = name_or_path if Path(name_or_path).is_file() else get_config_file(name_or_path)
    check_config_chain(path)
    try:
        cfg.merge_from_file(path, allow_unsafe=False)
    except yaml.YAMLError as exc:  # checked above; kept so that nothing unsafe can slip through
        raise _yaml_error(path, exc) from None
    except KeyError as exc:  # "Non-existent config key: ..."
        raise ValueError(f"config {path}: {exc.args[0] if exc.args else exc} (see `nasnet detect configs` and "
                         "detectron2's defaults for the known keys)") from None
    except (ValueError, AssertionError, TypeError) as exc:  # a value of the wrong type, a bad _BASE_ merge
        raise ValueError(f"config {path}: {exc}") from None
    return cfg
