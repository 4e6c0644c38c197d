"""Run Python in a subprocess as if some installed packages were not installed (for the tests of
what a model-only install, ``pip install nasnet-backbones``, can do, and of the CLI's install hints).

The child's first statements (:data:`PRELUDE`) wrap every finder on ``sys.meta_path`` in one
meta-path finder that finds nothing for the blocked top-level names: ``import ray`` then raises
the ``ModuleNotFoundError`` a missing package raises (``No module named 'ray'``) and
``importlib.util.find_spec("ray")`` returns ``None``, as libraries that probe optional packages
(torch among them) expect. Installed metadata stays visible: the entry points and extras the CLI
reads are those of the real installation.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
BASE_DISTRIBUTIONS = ("torch", "torchvision", "numpy", "pillow", "safetensors")  # `pip install nasnet-backbones`
OWN_PACKAGES = {"nasnet_backbones", "detection", "export", "search"}

PRELUDE = """
import importlib.abc, json, os, sys

class _NotInstalled(importlib.abc.MetaPathFinder):
    blocked = frozenset(json.loads(os.environ["NOT_INSTALLED"]))

    def __init__(self, finders):
        self.finders = finders

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.blocked:
            return None
        for finder in self.finders:
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                return spec
        return None

    def find_distributions(self, *args, **kwargs):
        for finder in self.finders:
            yield from getattr(finder, "find_distributions", lambda *a, **k: ())(*args, **kwargs)

    def invalidate_caches(self):
        for finder in self.finders:
            getattr(finder, "invalidate_caches", lambda: None)()

sys.meta_path[:] = [_NotInstalled(list(sys.meta_path))]
"""


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_closure(names: tuple[str, ...]) -> set[str]:
    """The installed distributions ``names`` need, with everything they need (markers evaluated)."""
    environment = default_environment()
    seen: set[str] = set()
    todo = [_normalise(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            continue
        seen.add(name)
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({**environment, "extra": ""}):
                todo.append(_normalise(requirement.name))
    return seen


def non_base_modules() -> set[str]:
    """Top-level modules of every installed distribution outside the base install (and outside the
    base's own requirements), which a model-only install would not have."""
    base = requirement_closure(BASE_DISTRIBUTIONS)
    stdlib = set(sys.stdlib_module_names)
    return {module for module, dists in packages_distributions().items()
            if module not in OWN_PACKAGES and module not in stdlib and module.isidentifier()
            and not any(_normalise(d) in base for d in dists)}


def run_python(code: str, *, blocked: set[str], args: tuple[str, ...] = (), timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -c PRELUDE + code args...`` with ``blocked`` top-level modules not installed."""
    env = {**os.environ, "NOT_INSTALLED": json.dumps(sorted(blocked)), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", PRELUDE + code, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


def run_cli(args: list[str], *, blocked: set[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """``nasnet ARGS`` (``nasnet_backbones.cli.main``) with ``blocked`` modules not installed."""
    code = "import sys\nfrom nasnet_backbones.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return run_python(code, blocked=blocked, args=tuple(args), timeout=timeout)


__all__ = ["BASE_DISTRIBUTIONS", "PRELUDE", "ROOT", "non_base_modules", "requirement_closure", "run_cli", "run_python"]
