"""Search strategies behind one interface: the paper's PPO controller, random search, regularized
evolution, and the cells derived by weight-sharing (ENAS) search."""

from __future__ import annotations

from typing import Any

from ..space import SearchSpace
from .base import Proposal, Strategy
from .enas import ENASStrategy
from .evolution import RegularizedEvolution
from .ppo import Controller, PPOController
from .random_search import RandomSearch

__all__ = ["STRATEGIES", "Controller", "ENASStrategy", "PPOController", "Proposal", "RandomSearch", "RegularizedEvolution",
           "Strategy", "create_strategy", "register_strategy"]

STRATEGIES: dict[str, type[Strategy]] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Make ``cls`` a strategy that ``create_strategy`` and ``nasnet search --strategy`` know by its
    ``name`` (its preparation phase, :meth:`Strategy.prepare`, runs as every strategy's does).
    Register before the command line is parsed; a taken name is refused."""
    if not (isinstance(cls, type) and issubclass(cls, Strategy)) or not getattr(cls, "name", None):
        raise TypeError(f"{cls!r} is not a Strategy subclass with a name")
    if cls.name in STRATEGIES and STRATEGIES[cls.name] is not cls:
        raise ValueError(f"a search strategy named {cls.name!r} is already registered ({STRATEGIES[cls.name].__qualname__})")
    STRATEGIES[cls.name] = cls
    return cls


for _builtin in (PPOController, RandomSearch, RegularizedEvolution, ENASStrategy):
    register_strategy(_builtin)


def create_strategy(name: str, space: SearchSpace, seed: int = 0, **options: Any) -> Strategy:
    """A strategy by name (``ppo``, ``random``, ``evolution``, ``enas``) with its hyper-parameters."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown search strategy {name!r}; choose one of {', '.join(sorted(STRATEGIES))}")
    try:
        return STRATEGIES[name](space, seed=seed, **options)
    except TypeError as exc:
        raise ValueError(f"strategy {name!r}: {exc}") from None
