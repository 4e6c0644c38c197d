"""The paper's controller: a one-layer LSTM that emits the 2 x 5B decisions, trained with PPO.

Zoph et al. (2018), Sec. 3 and Appendix A: a one-layer LSTM with 100 hidden units; five distinct
softmax classifiers, one per step of a block (first input, second input, first op, second op,
combine), applied in turn; the choice made at each step is embedded and fed back as the next
input. Weights start uniform in [-0.1, 0.1]. The controller is trained with Proximal Policy
Optimization at learning rate 0.00035, on minibatches of 20 architectures, against an exponential
moving average of the rewards (decay 0.95), with an entropy bonus of weight 0.00001.

PPO suits the paper's asynchronous workers: a child proposed before an update is scored under the
newer policy through the probability ratio, clipped at ``1 +- clip``. The clip (0.2) and the
number of passes over each minibatch (4) are not stated in the paper; these are PPO's usual values.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..space import SearchSpace
from .base import Proposal, Strategy

__all__ = ["Controller", "PPOController"]

_STEPS = ("input0", "input1", "op0", "op1", "combine")  # the five softmaxes of a block, in order


class Controller(nn.Module):
    """Autoregressive policy over a :class:`SearchSpace`'s decisions.

    ``forward(actions)`` scores given decision sequences (log-probabilities and entropies, summed
    over decisions); :meth:`sample` draws one sequence with a numpy generator.
    """

    def __init__(self, space: SearchSpace, hidden_size: int = 100, init_range: float = 0.1) -> None:
        super().__init__()
        decisions = space.decisions()
        sizes = {"input": 1 + space.num_blocks, "op": len(space.ops), "combine": len(space.combine_ops)}
        self.steps = [_STEPS[i % len(_STEPS)] for i in range(len(decisions))]
        self.lstm = nn.LSTMCell(hidden_size, hidden_size)
        self.start = nn.Parameter(torch.zeros(1, hidden_size))
        self.heads = nn.ModuleDict({s: nn.Linear(hidden_size, sizes[s.rstrip("01")]) for s in _STEPS})
        self.embed = nn.ModuleDict({s: nn.Embedding(sizes[s.rstrip("01")], hidden_size) for s in _STEPS})
        # An input decision of block b has 2 + b valid choices; the rest of its head is masked.
        widest = max(sizes.values())
        invalid = torch.ones(len(decisions), widest, dtype=torch.bool)
        for t, d in enumerate(decisions):
            invalid[t, : d.num_choices] = False
        self.register_buffer("invalid", invalid, persistent=False)
        for p in self.parameters():
            nn.init.uniform_(p, -init_range, init_range)

    def _logits(self, t: int, h: torch.Tensor) -> torch.Tensor:
        logits = self.heads[self.steps[t]](h)
        return logits.masked_fill(self.invalid[t, : logits.shape[1]], float("-inf"))

    def forward(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probability and entropy of each sequence in ``actions`` (batch, decisions)."""
        batch = actions.shape[0]
        x = self.start.expand(batch, -1)
        state = None
        log_prob = torch.zeros(batch)
        entropy = torch.zeros(batch)
        for t, step in enumerate(self.steps):
            state = self.lstm(x, state)
            dist = torch.distributions.Categorical(logits=self._logits(t, state[0]))
            log_prob = log_prob + dist.log_prob(actions[:, t])
            entropy = entropy + dist.entropy()
            x = self.embed[step](actions[:, t])
        return log_prob, entropy

    @torch.no_grad()
    def sample(self, rng: np.random.Generator) -> tuple[list[int], float, float]:
        """One decision sequence, its log-probability and the policy's entropy along it."""
        x, state = self.start, None
        actions, log_prob, entropy = [], 0.0, 0.0
        for t, step in enumerate(self.steps):
            state = self.lstm(x, state)
            logp = torch.log_softmax(self._logits(t, state[0])[0].double(), 0)
            probs = logp.exp().numpy()
            a = int(rng.choice(len(probs), p=probs / probs.sum()))
            actions.append(a)
            log_prob += float(logp[a])
            entropy -= float((logp.exp() * logp.nan_to_num(neginf=0.0)).sum())
            x = self.embed[step](torch.tensor([a]))
        return actions, log_prob, entropy


class PPOController(Strategy):
    """Proposals sampled from :class:`Controller`; a PPO update every ``batch_size`` rewards."""

    name = "ppo"
    settings_by_flag = {"--controller-lr": "lr", "--controller-batch": "batch_size",
                        "--entropy-weight": "entropy_weight"}

    def __init__(self, space: SearchSpace, seed: int = 0, hidden_size: int = 100, lr: float = 0.00035,
                 batch_size: int = 20, entropy_weight: float = 0.00001, baseline_decay: float = 0.95,
                 clip: float = 0.2, ppo_epochs: int = 4) -> None:
        super().__init__(space, seed)
        if batch_size < 1 or ppo_epochs < 1:
            raise ValueError(f"batch_size and ppo_epochs must be >= 1, got {batch_size}, {ppo_epochs}")
        self.hidden_size, self.lr, self.batch_size = hidden_size, lr, batch_size
        self.entropy_weight, self.baseline_decay, self.clip, self.ppo_epochs = entropy_weight, baseline_decay, clip, ppo_epochs
        torch.manual_seed(seed)
        self.controller = Controller(space, hidden_size)
        self.optimizer = torch.optim.Adam(self.controller.parameters(), lr=lr)
        self.baseline: float | None = None
        self.buffer: list[tuple[list[int], float, float]] = []  # (decisions, sampling log-prob, advantage)
        self._metrics: dict[str, float] = {}

    def settings(self) -> dict[str, Any]:
        return {"hidden_size": self.hidden_size, "lr": self.lr, "batch_size": self.batch_size,
                "entropy_weight": self.entropy_weight, "baseline_decay": self.baseline_decay, "clip": self.clip,
                "ppo_epochs": self.ppo_epochs}

    def _propose(self) -> tuple[list[int], dict[str, Any]]:
        actions, log_prob, entropy = self.controller.sample(self.rng)
        return actions, {"log_prob": log_prob, "entropy": entropy}

    def _observe(self, proposal: Proposal, reward: float) -> None:
        if self.baseline is None:
            self.baseline = reward
        advantage = reward - self.baseline
        self.baseline = self.baseline_decay * self.baseline + (1.0 - self.baseline_decay) * reward
        self.buffer.append((list(proposal.decisions), float(proposal.info["log_prob"]), advantage))
        self._metrics = {"ppo/baseline": self.baseline, "ppo/advantage": advantage,
                         "ppo/entropy": float(proposal.info.get("entropy", float("nan"))),
                         **{k: v for k, v in self._metrics.items() if k.startswith("ppo/update")}}
        if len(self.buffer) >= self.batch_size:
            self._update()

    def _update(self) -> None:
        actions = torch.tensor([d for d, _, _ in self.buffer])
        old_log_prob = torch.tensor([lp for _, lp, _ in self.buffer], dtype=torch.float32)
        advantage = torch.tensor([a for _, _, a in self.buffer], dtype=torch.float32)
        self.controller.train()
        for _ in range(self.ppo_epochs):
            log_prob, entropy = self.controller(actions)
            ratio = torch.exp(log_prob - old_log_prob)
            surrogate = torch.minimum(ratio * advantage, ratio.clamp(1 - self.clip, 1 + self.clip) * advantage)
            loss = -surrogate.mean() - self.entropy_weight * entropy.mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        clipped = ((ratio - 1).abs() > self.clip).float().mean()
        self._metrics.update({"ppo/update_loss": float(loss.detach()), "ppo/update_entropy": float(entropy.detach().mean()),
                              "ppo/update_clip_fraction": float(clipped)})
        self.buffer.clear()

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "controller": self.controller.state_dict(),
                "optimizer": self.optimizer.state_dict(), "baseline": self.baseline,
                "buffer": [[d, lp, a] for d, lp, a in self.buffer]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.controller.load_state_dict(state["controller"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.baseline = state["baseline"]
        self.buffer = [(list(d), float(lp), float(a)) for d, lp, a in state["buffer"]]
