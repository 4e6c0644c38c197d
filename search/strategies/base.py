"""The interface every search strategy implements: propose candidates, observe rewards, save state.

Workers finish in any order, so a strategy must accept several outstanding proposals and rewards
that arrive out of order (the paper's controller is updated asynchronously from a work queue,
Sec. 4). A strategy never trains a child: the search loop evaluates its proposals and reports
back. Work a strategy must do before its first proposal (weight sharing trains its supernet and
derives its cells) is its preparation phase, :meth:`Strategy.prepare`, which the search runs for
every strategy (the default does nothing), so no caller needs to know which strategy it drives.
Its state holds only tensors and plain containers, so it saves with ``torch.save`` and loads with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np

from ..space import SearchSpace

if TYPE_CHECKING:  # the search run holds its strategy; a strategy only receives the run
    import torch

    from nasnet_backbones.genotype import Genotype

    from ..run import SearchRun

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
    #: True for a strategy that scores many cells without training each (weight sharing): a
    #: latency-aware search then predicts latencies from an op table (``--latency-table auto``
    #: builds it) instead of measuring every cell it scores.
    wants_latency_table: ClassVar[bool] = False
    #: The ``nasnet search`` flags that set this strategy's settings: flag -> constructor keyword
    #: (a flag no strategy of the search declares is refused, naming the strategies that have it).
    settings_by_flag: ClassVar[dict[str, str]] = {}

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

    def prepare(self, search: SearchRun, *, device: str | torch.device = "cpu",
                reward_fn: Callable[[Genotype, float], float] | None = None) -> None:  # noqa: B027 - optional hook
        """The preparation phase, run by :meth:`SearchRun.prepare` before the first child is
        evaluated, again on every resume (a finished phase returns at once). ``search`` is the run
        (its directory, child settings, seed); ``device`` is where the search process trains;
        ``reward_fn(genotype, accuracy)`` weighs an accuracy as the children's rewards are (by
        latency, in a latency-aware search; default: the accuracy). The default does nothing."""

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
