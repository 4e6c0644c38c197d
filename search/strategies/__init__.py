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
           "Strategy", "create_strategy"]

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (PPOController, RandomSearch, RegularizedEvolution, ENASStrategy)}


def create_strategy(name: str, space: SearchSpace, seed: int = 0, **options: Any) -> Strategy:
    """A strategy by name (``ppo``, ``random``, ``evolution``, ``enas``) with its hyper-parameters."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown search strategy {name!r}; choose one of {', '.join(sorted(STRATEGIES))}")
    try:
        return STRATEGIES[name](space, seed=seed, **options)
    except TypeError as exc:
        raise ValueError(f"strategy {name!r}: {exc}") from None
