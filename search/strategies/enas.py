"""ENAS-style weight-sharing search (Pham et al., 2018) as a strategy: its proposals are the cells
the controller derives after training against shared-weight rewards.

The search itself has two phases. Phase 1 is the strategy's preparation phase
(:meth:`ENASStrategy.prepare`, which runs :class:`search.weight_sharing.SupernetTrainer`): each
epoch it alternates between training the supernet's shared weights (one controller-sampled cell per
batch) and training the controller on the accuracy of sampled cells with the shared weights on
held-out batches; then it derives cells: ``derive_samples`` draws from the controller, ranked by their
shared-weight accuracy on the whole held-out split. Phase 2 is the ordinary search loop: this
strategy proposes the derived cells, best first, and each is trained from scratch as a child, so
the results log holds their stand-alone accuracy. Proposals beyond the derived list are drawn
from the trained controller.

Defaults follow ENAS's CIFAR-10 micro search where it states them (shared weights: SGD with
Nesterov momentum, lr 0.05 with cosine decay, weight decay 1e-4, gradient clipping at 5;
controller: lr 0.0035, entropy weight 0.0001); ENAS trains for 150 epochs, here ``epochs`` is a
setting that defaults to 50, and the controller is trained with this package's PPO (a minibatch of
10 rewards, 20 controller steps per epoch) rather than ENAS's REINFORCE.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from ..space import SearchSpace
from ..weight_sharing import SupernetTrainer
from .base import Proposal, Strategy
from .ppo import PPOController

if TYPE_CHECKING:
    import torch

    from nasnet_backbones.genotype import Genotype

    from ..run import SearchRun

__all__ = ["ENASStrategy"]


class ENASStrategy(Strategy):
    name = "enas"
    wants_latency_table = True  # it scores controller_steps x epochs + derive_samples cells without training them
    settings_by_flag = {"--controller-lr": "controller_lr", "--controller-batch": "controller_batch",
                        "--entropy-weight": "entropy_weight", "--enas-epochs": "epochs",
                        "--controller-steps": "controller_steps", "--derive-samples": "derive_samples"}

    def __init__(self, space: SearchSpace, seed: int = 0, epochs: int = 50, lr: float = 0.05,
                 weight_decay: float = 1e-4, grad_clip: float = 5.0, controller_steps: int = 20,
                 controller_lr: float = 0.0035, controller_batch: int = 10, entropy_weight: float = 0.0001,
                 derive_samples: int = 100) -> None:
        super().__init__(space, seed)
        if space.combine_ops != ("add",):
            raise ValueError("weight-sharing search needs 'add' as the only combine op (a concatenating block changes "
                             "the width every later op reads); use --combine add")
        if epochs < 1 or controller_steps < 1 or derive_samples < 1:
            raise ValueError(f"epochs, controller_steps and derive_samples must be >= 1, got {epochs}, "
                             f"{controller_steps}, {derive_samples}")
        self.epochs, self.lr, self.weight_decay, self.grad_clip = epochs, lr, weight_decay, grad_clip
        self.controller_steps, self.derive_samples = controller_steps, derive_samples
        self.controller = PPOController(space, seed, lr=controller_lr, batch_size=controller_batch,
                                        entropy_weight=entropy_weight)
        self.derived: list[tuple[list[int], float]] = []  # (decisions, shared-weight accuracy), best first

    def prepare(self, search: SearchRun, *, device: str | torch.device = "cpu",
                reward_fn: Callable[[Genotype, float], float] | None = None) -> None:
        """Phase 1: train the supernet and the controller, then derive the cells this strategy
        proposes (resumes at the last finished epoch; returns at once when the phase is done)."""
        SupernetTrainer(search, strategy=self, device=device, reward_fn=reward_fn).run()

    def settings(self) -> dict[str, Any]:
        c = self.controller
        return {"epochs": self.epochs, "lr": self.lr, "weight_decay": self.weight_decay, "grad_clip": self.grad_clip,
                "controller_steps": self.controller_steps, "controller_lr": c.lr, "controller_batch": c.batch_size,
                "entropy_weight": c.entropy_weight, "derive_samples": self.derive_samples}

    def _propose(self) -> tuple[list[int], dict[str, Any]]:
        if self.num_proposed < len(self.derived):
            decisions, shared = self.derived[self.num_proposed]
            return list(decisions), {"shared_reward": shared, "origin": "derived"}
        decisions, _, _ = self.controller.controller.sample(self.rng)
        return decisions, {"origin": "controller"}

    def _observe(self, proposal: Proposal, reward: float) -> None:
        pass  # stand-alone accuracies are the result, not a training signal for the controller

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "controller": self.controller.state_dict(),
                "derived": [[d, r] for d, r in self.derived]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.controller.load_state_dict(state["controller"])
        self.derived = [(list(d), float(r)) for d, r in state["derived"]]
