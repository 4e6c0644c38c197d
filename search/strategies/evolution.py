"""Regularized (aging) evolution (Real et al., 2019, Algorithm 1; AmoebaNet).

The first ``population_size`` proposals are uniformly random. After that, each proposal samples
``sample_size`` members of the population uniformly with replacement, takes the best as the
parent and mutates it: with probability ``identity_prob`` not at all, otherwise one decision
changes (a hidden-state or an op mutation, uniform over the decisions that have a choice). Every
finished child joins the population and the oldest member dies, whatever its accuracy: the aging
that regularizes the search. The paper's CIFAR-10 settings: P = 100, S = 25, identity 0.05.

With asynchronous workers, proposals made while the first random children are still training use
tournaments on whatever has finished (random ones while nothing has).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from ..space import SearchSpace
from .base import Proposal, Strategy

__all__ = ["RegularizedEvolution"]


class RegularizedEvolution(Strategy):
    name = "evolution"
    settings_by_flag = {"--population-size": "population_size", "--sample-size": "sample_size"}

    def __init__(self, space: SearchSpace, seed: int = 0, population_size: int = 100, sample_size: int = 25,
                 identity_prob: float = 0.05) -> None:
        super().__init__(space, seed)
        if population_size < 1 or not 1 <= sample_size:
            raise ValueError(f"population_size and sample_size must be >= 1, got {population_size}, {sample_size}")
        if not 0.0 <= identity_prob < 1.0:
            raise ValueError(f"identity_prob must be in [0, 1), got {identity_prob}")
        self.population_size, self.sample_size, self.identity_prob = population_size, sample_size, identity_prob
        self.population: deque[tuple[list[int], float]] = deque()

    def settings(self) -> dict[str, Any]:
        return {"population_size": self.population_size, "sample_size": self.sample_size,
                "identity_prob": self.identity_prob}

    def _propose(self) -> tuple[list[int], dict[str, Any]]:
        if self.num_proposed < self.population_size or not self.population:
            return self.space.sample(self.rng), {"origin": "random"}
        picks = self.rng.integers(len(self.population), size=self.sample_size)  # with replacement
        parent, parent_reward = max((self.population[i] for i in picks), key=lambda member: member[1])
        if self.rng.random() < self.identity_prob:
            return list(parent), {"origin": "identity", "parent_reward": parent_reward}
        return self.space.mutate(parent, self.rng), {"origin": "mutation", "parent_reward": parent_reward}

    def _observe(self, proposal: Proposal, reward: float) -> None:
        self.population.append((list(proposal.decisions), reward))
        while len(self.population) > self.population_size:
            self.population.popleft()  # the oldest dies

    def metrics(self) -> dict[str, float]:
        if not self.population:
            return {}
        rewards = [r for _, r in self.population]
        return {"evolution/population_mean": sum(rewards) / len(rewards), "evolution/population_best": max(rewards)}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "population": [[list(d), r] for d, r in self.population]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.population = deque((list(d), float(r)) for d, r in state["population"])
