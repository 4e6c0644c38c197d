"""The interface every search strategy implements: propose candidates, observe rewards, save state.

Workers finish in any order, so a strategy must accept several outstanding proposals and rewards
that arrive out of order (the paper's controller is updated asynchronously from a work queue,
Sec. 4). A strategy never trains a network: the search loop evaluates its proposals and reports
back. Its state holds only tensors and plain containers, so it saves with ``torch.save`` and
loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..space import SearchSpace

__all__ = ["Proposal", "Strategy"]


@dataclass
class Proposal:
    """A candidate: its decision sequence and what the strategy needs back with its reward."""

    id: int
    decisions: list[int]
    info: dict[str, Any] = field(default_factory=dict)  # e.g. the sampling log-probability, the parent

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Proposal":
        return cls(int(data["id"]), [int(v) for v in data["decisions"]], dict(data.get("info", {})))


class Strategy(ABC):
    """Base class: a seeded generator, a proposal counter and state save/restore."""

    name: ClassVar[str]

    def __init__(self, space: SearchSpace, seed: int = 0) -> None:
        self.space = space
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.num_proposed = 0
        self.num_observed = 0

    def propose(self) -> Proposal:
        proposal = Proposal(self.num_proposed, *self._propose())
        self.num_proposed += 1
        return proposal

    @abstractmethod
    def _propose(self) -> tuple[list[int], dict[str, Any]]:
        """(decisions, info) of the next candidate."""

    def observe(self, proposal: Proposal, reward: float) -> None:
        """The reward of a finished proposal, in whatever order proposals finish."""
        self.num_observed += 1
        self._observe(proposal, float(reward))

    def _observe(self, proposal: Proposal, reward: float) -> None:  # noqa: B027 - optional hook
        pass

    def metrics(self) -> dict[str, float]:
        """Scalars worth plotting after the latest observation (TensorBoard)."""
        return {}

    def settings(self) -> dict[str, Any]:
        """Hyper-parameters; a resumed search must use the same ones."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "num_proposed": self.num_proposed,
                "num_observed": self.num_observed, "settings": self.settings()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.num_proposed = int(state["num_proposed"])
        self.num_observed = int(state["num_observed"])
