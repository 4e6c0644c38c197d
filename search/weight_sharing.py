"""Phase 1 of weight-sharing search, the ENAS strategy's preparation phase: train the supernet and the
controller together, then derive cells.

Each epoch: one pass over the children's training split, each batch through one cell sampled from
the controller, updating the shared weights; then ``controller_steps`` controller proposals, each
scored by its accuracy on one held-out batch with the shared weights (times the latency factor
when the search is latency-aware), updating the controller by PPO. The held-out batches run with
batch statistics, as the shared weights are trained, since one set of running statistics cannot
fit every sub-network.

Everything phase 1 needs to continue (supernet, its optimizer and schedule, controller, random
state, epoch, elapsed time) is written atomically to ``supernet.pt`` after every epoch, so a search
killed at any point resumes at the last finished epoch. The supernet trains in the search process,
on its GPU when there is one; the derived cells are then retrained as ordinary children (Ray tasks).
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from nasnet_backbones.atomic import write_atomic
from nasnet_backbones.genotype import Genotype
from nasnet_backbones.nasnet import NUM_STACKS

from .child import NUM_CLASSES, ChildSettings
from .data import search_splits
from .supernet import Supernet

if TYPE_CHECKING:  # the strategy runs this phase (ENASStrategy.prepare), so the modules import only one way
    from .run import SearchRun
    from .strategies.enas import ENASStrategy

__all__ = ["SupernetTrainer", "SUPERNET_FILE", "SHARED_REWARDS_FILE"]

logger = logging.getLogger(__name__)

SUPERNET_FILE = "supernet.pt"
SHARED_REWARDS_FILE = "shared_rewards.jsonl"


class SupernetTrainer:
    """Runs phase 1 for ``search``, whose strategy is ``strategy`` (an :class:`ENASStrategy`, whose
    :meth:`~search.strategies.ENASStrategy.prepare` runs this); ``reward_fn(genotype, accuracy)``
    turns a shared-weight accuracy into the controller's reward (default: the accuracy)."""

    def __init__(self, search: SearchRun, *, strategy: ENASStrategy, device: str | torch.device,
                 reward_fn: Callable[[Genotype, float], float] | None = None, workers: int = 0) -> None:
        if search.strategy is not strategy:
            raise TypeError("SupernetTrainer trains the supernet of the search's own strategy")
        self.search, self.strategy = search, strategy
        self.child: ChildSettings = search.config.child
        self.device = torch.device(device)
        self.reward_fn = reward_fn or (lambda genotype, accuracy: accuracy)
        self.workers = workers
        self.path = search.out / SUPERNET_FILE

    def run(self) -> None:
        s, child, space = self.strategy, self.child, self.search.space
        torch.manual_seed(self.search.config.seed)
        net = Supernet(space, NUM_STACKS * child.cells, child.filters, NUM_CLASSES).to(self.device)
        params = list(net.parameters())
        optimizer = torch.optim.SGD(params, lr=s.lr, momentum=0.9, nesterov=True, weight_decay=s.weight_decay)
        train_set, val_set = search_splits(child.dataset, child.data_dir, child.val_size, child.train_size,
                                           child.img_size, download=False)
        steps_per_epoch = len(train_set) // child.batch_size
        if steps_per_epoch == 0:
            raise ValueError(f"{len(train_set)} training images do not fill one batch of {child.batch_size}")
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=s.epochs * steps_per_epoch)
        rng = np.random.default_rng(self.search.config.seed + 7919)
        epoch, elapsed_before = 0, 0.0
        if self.path.is_file():
            ckpt = torch.load(self.path, map_location="cpu", weights_only=True)
            if ckpt["finished"]:
                return
            net.load_state_dict(ckpt["supernet"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            s.controller.load_state_dict(ckpt["controller"])
            rng.bit_generator.state = ckpt["rng"]
            torch.set_rng_state(ckpt["torch_rng"])
            epoch, elapsed_before = int(ckpt["epoch"]), float(ckpt["elapsed"])
            logger.info("resuming the supernet at epoch %d of %d", epoch, s.epochs)
        self._keep_log_until(epoch)  # epochs logged after the last checkpoint run again
        start = time.perf_counter()
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(self.search.out / "tensorboard" / "supernet"), purge_step=epoch or None)
        criterion = nn.CrossEntropyLoss()
        val_loader = DataLoader(val_set, batch_size=child.batch_size, shuffle=True, num_workers=self.workers,
                                generator=torch.Generator().manual_seed(self.search.config.seed))
        val_batches = iter(())
        try:
            for epoch in range(epoch, s.epochs):
                loader = DataLoader(train_set, batch_size=child.batch_size, shuffle=True, drop_last=True,
                                    num_workers=self.workers,
                                    generator=torch.Generator().manual_seed(self.search.config.seed * 1000 + epoch))
                net.train()
                losses = []
                for images, labels in tqdm(loader, desc=f"supernet epoch {epoch + 1}/{s.epochs}", unit="step",
                                           leave=False, dynamic_ncols=True):
                    decisions, _, _ = s.controller.controller.sample(rng)
                    logits = net(images.to(self.device), space.decode(decisions))
                    loss = criterion(logits, labels.to(self.device))
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    nn.utils.clip_grad_norm_(params, s.grad_clip)
                    optimizer.step()
                    scheduler.step()
                    losses.append(float(loss.detach()))
                rewards = []
                for _ in range(s.controller_steps):
                    try:
                        images, labels = next(val_batches)
                    except StopIteration:
                        val_batches = iter(val_loader)
                        images, labels = next(val_batches)
                    proposal = s.controller.propose()
                    genotype = space.decode(proposal.decisions)
                    with torch.no_grad():
                        predicted = net(images.to(self.device), genotype).argmax(1).cpu()
                    accuracy = float((predicted == labels).float().mean())
                    reward = self.reward_fn(genotype, accuracy)
                    s.controller.observe(proposal, reward)
                    rewards.append(reward)
                elapsed = elapsed_before + time.perf_counter() - start
                record = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "shared_reward": float(np.mean(rewards)),
                          "elapsed": elapsed}
                with open(self.search.out / SHARED_REWARDS_FILE, "a") as f:
                    f.write(json.dumps(record) + "\n")
                writer.add_scalar("enas/train_loss", record["train_loss"], epoch + 1)
                writer.add_scalar("enas/shared_reward", record["shared_reward"], epoch + 1)
                for tag, value in s.controller.metrics().items():
                    writer.add_scalar(tag, value, epoch + 1)
                logger.info("supernet epoch %d/%d: loss %.3f, mean shared-weight reward %.4f", epoch + 1, s.epochs,
                            record["train_loss"], record["shared_reward"])
                self._save(net, optimizer, scheduler, rng, epoch + 1, elapsed, finished=False)
            self._derive(net, val_set, rng)
            elapsed = elapsed_before + time.perf_counter() - start
            self._save(net, optimizer, scheduler, rng, s.epochs, elapsed, finished=True)
            self.search.elapsed_before += elapsed_before  # this session's time is on the search's own clock
            self.search.save_state()
        finally:
            writer.close()

    def _keep_log_until(self, epoch: int) -> None:
        path = self.search.out / SHARED_REWARDS_FILE
        if not path.exists():
            return
        lines = [line for line in path.read_text().splitlines() if line.endswith("}")]
        kept = [line for line in lines if json.loads(line)["epoch"] <= epoch]
        if len(kept) != len(lines):
            write_atomic(path, lambda p: p.write_text("".join(line + "\n" for line in kept)))

    def _derive(self, net: Supernet, val_set, rng: np.random.Generator) -> None:
        """Rank ``derive_samples`` controller samples by shared-weight accuracy on the held-out split."""
        s, space = self.strategy, self.search.space
        loader = DataLoader(val_set, batch_size=max(self.child.batch_size, 100), num_workers=self.workers)
        batches = [(x.to(self.device), y) for x, y in loader]
        scored: dict[str, tuple[list[int], float]] = {}
        net.train()  # batch statistics, as during search
        for _ in tqdm(range(s.derive_samples), desc="deriving cells", unit="cell", leave=False, dynamic_ncols=True):
            decisions, _, _ = s.controller.controller.sample(rng)
            genotype = space.decode(decisions)
            if genotype.hash() in scored:
                continue
            with torch.no_grad():
                correct = sum(int((net(x, genotype).argmax(1).cpu() == y).sum()) for x, y in batches)
            scored[genotype.hash()] = (decisions, self.reward_fn(genotype, correct / len(val_set)))
        s.derived = sorted(scored.values(), key=lambda item: item[1], reverse=True)
        logger.info("derived %d distinct cells; best shared-weight reward %.4f", len(s.derived), s.derived[0][1])

    def _save(self, net: Supernet, optimizer, scheduler, rng, epoch: int, elapsed: float, finished: bool) -> None:
        state = {"supernet": net.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "controller": self.strategy.controller.state_dict(), "rng": rng.bit_generator.state,
                 "torch_rng": torch.get_rng_state(), "epoch": epoch, "elapsed": elapsed, "finished": finished}
        write_atomic(self.path, lambda p: torch.save(state, p))
