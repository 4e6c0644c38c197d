"""The classification training loop: the paper's losses and schedules, exact-step resume,
TensorBoard scalars, per-epoch checkpoints and a final JSON.

One step: ScheduledDropPath progress ``step / total_steps`` (paper Appendix A.5), cross-entropy
(with label smoothing) plus ``aux_weight`` x the auxiliary head's loss, gradient clipping at a
global norm, an optimizer step, a per-step learning-rate schedule, and the weights' moving average
when the recipe keeps one. Every epoch ends with an evaluation and ``last.pth`` (everything needed
to resume at that exact step); an interrupted run (Ctrl-C) saves one too. Checkpoints contain only
tensors and plain containers, so they load with ``torch.load(weights_only=True)``.

Exact resume: every source of randomness is a pure function of the seed and the position in the
run, never of what happened earlier in the process. The data order is the sampler's permutation
of ``(seed, epoch)``; each sample's augmentation is seeded by ``(seed, epoch, index)`` in whichever
worker loads it; dropout and drop-path draw from torch's RNG re-seeded by ``(seed, step, rank)``
before every step. A run resumed at any step, mid-epoch included, therefore ends bit-identical to
an uninterrupted one.

Unreadable images: with ``skip_bad_images`` they are left out of their batch and counted (in the
log and ``results.json``); without, training stops at the first with an error naming the file,
after saving ``last.pth`` at the last completed step.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..atomic import write_atomic
from ..checkpoint import save_checkpoint
from ..data import (BadImages, GuardedDataset, ResumableSampler, SeededSampler, collate_readable, readable_batches,
                    sample_seed)
from ..evaluate import TopKCounts, evaluate
from ..images import UnreadableImage
from .distributed import DistContext, all_reduce_sum, barrier
from .recipes import TrainRecipe

__all__ = ["Trainer", "TrainState", "build_optimizer", "build_scheduler", "RESUME_FILE"]

logger = logging.getLogger(__name__)

RESUME_FILE = "last.pth"
FINAL_WEIGHTS = "model.safetensors"


def _differs(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) != list(b)
    return a != b


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # batches done in the current (unfinished) epoch
    best_top1: float = -1.0
    history: list[dict[str, float]] = field(default_factory=list)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv and linear weights only, as TF-slim's regularisers (not BN, not biases)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, recipe: TrainRecipe, lr: float) -> torch.optim.Optimizer:
    groups = _param_groups(model, recipe.weight_decay)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=recipe.momentum, nesterov=recipe.nesterov)
    if recipe.optimizer == "rmsprop":
        # TF's RMSProp adds epsilon inside the square root; with TF's epsilon 1.0 the difference
        # from PyTorch's (outside) is small next to the gradient scale it damps.
        return torch.optim.RMSprop(groups, lr=lr, alpha=recipe.rmsprop_decay, eps=recipe.rmsprop_eps,
                                   momentum=recipe.momentum)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}; use sgd or rmsprop")


def build_scheduler(optimizer: torch.optim.Optimizer, recipe: TrainRecipe, steps_per_epoch: int,
                    total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step schedule: optional linear warm-up, then cosine to zero or 0.97 every 2.4 epochs."""
    warmup = int(round(recipe.warmup_epochs * steps_per_epoch))
    if recipe.schedule == "cosine":
        main = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup))
    elif recipe.schedule == "exponential":
        every = max(1, int(round(recipe.decay_epochs * steps_per_epoch)))
        main = torch.optim.lr_scheduler.StepLR(optimizer, step_size=every, gamma=recipe.decay_rate)
    else:
        raise ValueError(f"unknown schedule {recipe.schedule!r}; use cosine or exponential")
    if warmup <= 0:
        return main
    ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1e-3, total_iters=warmup)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])


def _tf_ema(decay: float):
    """TF's ``ExponentialMovingAverage(decay, num_updates)``: the decay used at update ``n`` is
    ``min(decay, (1 + n) / (10 + n))``, so early averages follow the weights instead of
    staying near the random initialisation for ~1 / (1 - decay) steps."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        floats = [(a, c) for a, c in zip(averaged, current) if a.is_floating_point()]
        if floats:
            torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], 1.0 - d)
        for a, c in zip(averaged, current):
            if not a.is_floating_point():
                a.copy_(c)  # counters such as BN's num_batches_tracked

    return update


_SKIP_HINT = ("; remove or replace the file and continue with --resume, or pass --skip-bad-images to skip "
              "unreadable images (counted in results.json)")


def _step_seed(seed: int, step: int, rank: int) -> int:
    """The seed of torch's RNG (dropout, drop-path) for training step ``step`` on ``rank``."""
    return sample_seed(seed, 1_000_003 + rank, step)  # a stream apart from the samples' (seed, epoch, index)


class Trainer:
    """Train ``model`` on ``train_set`` with ``recipe``; evaluate on ``val_set`` after every epoch.

    ``skip_bad_images``: leave unreadable images out of their batch and count them, instead of
    stopping at the first (after saving resumable state) with an error naming the file."""

    def __init__(
        self,
        model: nn.Module,
        recipe: TrainRecipe,
        train_set: Dataset,
        val_set: Dataset | None,
        output_dir: str | Path,
        ctx: DistContext,
        workers: int = 4,
        seed: int = 0,
        amp: bool = False,
        sync_bn: bool = False,
        run_info: dict[str, Any] | None = None,
        export_metadata: dict[str, str] | None = None,
        progress: bool = True,
        skip_bad_images: bool = False,
    ) -> None:
        recipe.validate()
        self.recipe, self.ctx, self.seed = recipe, ctx, seed
        self.progress = progress and ctx.is_main
        self.export_metadata = export_metadata or {}
        self.output_dir = Path(output_dir)
        self.run_info = run_info or {}
        self.amp = amp and ctx.device.type == "cuda"
        if sync_bn and ctx.enabled:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model.to(ctx.device)
        self.net: nn.Module = DistributedDataParallel(self.model, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None) if ctx.enabled else self.model

        self.sampler = ResumableSampler(len(train_set), recipe.batch_size, seed, True, ctx.rank, ctx.world_size)
        pin = ctx.device.type == "cuda"
        # The loaders' own generators: creating an iterator must not draw from torch's global RNG
        # (it would shift every later draw by where in the run the iterator was made).
        self.train_loader = DataLoader(GuardedDataset(train_set), batch_size=recipe.batch_size,
                                       sampler=SeededSampler(self.sampler), collate_fn=collate_readable,
                                       num_workers=workers, pin_memory=pin, persistent_workers=False,
                                       generator=torch.Generator().manual_seed(seed),
                                       drop_last=True)  # a 1-image batch breaks BatchNorm in training
        self.val_loader = None
        if val_set is not None:
            val_sampler = ResumableSampler(len(val_set), recipe.batch_size, shuffle=False, rank=ctx.rank,
                                           world_size=ctx.world_size, pad=False)
            self.val_loader = DataLoader(GuardedDataset(val_set), batch_size=recipe.batch_size, sampler=val_sampler,
                                         collate_fn=collate_readable, num_workers=workers, pin_memory=pin,
                                         generator=torch.Generator().manual_seed(seed))
        self.bad_images = BadImages(skip_bad_images, hint=_SKIP_HINT)
        self.steps_per_epoch = self.sampler.per_rank // recipe.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(train_set)} training images over {ctx.world_size} process(es) do not fill one "
                             f"batch of {recipe.batch_size}; lower --batch-size")
        self.total_steps = self.steps_per_epoch * recipe.epochs
        self.lr = recipe.learning_rate(recipe.batch_size * ctx.world_size)
        self.optimizer = build_optimizer(self.model, recipe, self.lr)
        self.scheduler = build_scheduler(self.optimizer, recipe, self.steps_per_epoch, self.total_steps)
        self.ema = None
        if recipe.ema_decay:
            self.ema = AveragedModel(self.model, multi_avg_fn=_tf_ema(recipe.ema_decay), use_buffers=True)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
        self.state = TrainState()
        self.writer = None
        self._stop_requested = False

    # -- checkpoints ---------------------------------------------------------------------------

    def _checkpoint(self) -> dict[str, Any]:
        s = self.state
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "step": s.step, "epoch": s.epoch, "batch_in_epoch": s.batch_in_epoch, "best_top1": s.best_top1,
            "history": s.history, "recipe": self.recipe.to_dict(), "run": self.run_info, "seed": self.seed,
            "bad_images": self.bad_images.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.ctx.device) if self.ctx.device.type == "cuda" else None,
        }

    def save(self) -> Path:
        path = self.output_dir / RESUME_FILE
        if self.ctx.is_main:
            checkpoint = self._checkpoint()
            write_atomic(path, lambda tmp: torch.save(checkpoint, tmp))
        barrier(self.ctx)
        return path

    def resume(self, path: str | Path | None = None) -> None:
        """Continue from ``last.pth``: same step, same data order, same optimizer and schedule."""
        path = Path(path) if path else self.output_dir / RESUME_FILE
        if not path.is_file():
            raise FileNotFoundError(f"nothing to resume: {path} does not exist")
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        saved = {**ckpt["recipe"], "world_size": ckpt["run"].get("world_size", 1)}
        now = {**self.recipe.to_dict(), "world_size": self.ctx.world_size}
        if "seed" in ckpt:  # the seed decides the data order and every random draw from here on
            saved["seed"], now["seed"] = ckpt["seed"], self.seed
        changed = [f"{k} {saved.get(k)} -> {now[k]}" for k in now if _differs(saved.get(k), now[k])]
        if changed:
            raise ValueError(
                f"{path} was trained with other settings ({'; '.join(changed)}). Resume with the same settings "
                "(the optimizer, schedule and data order continue from the checkpoint), or start a new run in "
                "another --output-dir with --weights pointing at its model.safetensors"
            )
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.load_state_dict(ckpt["ema"])
        self.state = TrainState(ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"], ckpt["best_top1"],
                                list(ckpt["history"]))
        if ckpt.get("bad_images") is not None:
            self.bad_images.load_state_dict(ckpt["bad_images"])
        torch.set_rng_state(ckpt["torch_rng"])
        if ckpt.get("cuda_rng") is not None and self.ctx.device.type == "cuda":
            torch.cuda.set_rng_state(ckpt["cuda_rng"], self.ctx.device)
        logger.info("resumed from %s at step %d (epoch %d, batch %d)", path, self.state.step, self.state.epoch,
                    self.state.batch_in_epoch)

    # -- loop ----------------------------------------------------------------------------------

    def _loss(self, outputs: Any, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, aux = (outputs.logits, outputs.aux_logits) if isinstance(outputs, tuple) else (outputs, None)
        loss = self.criterion(logits, target)
        if aux is not None and self.recipe.aux_weight > 0:
            loss = loss + self.recipe.aux_weight * self.criterion(aux, target)
        return loss, logits

    def _train_step(self, images: torch.Tensor, target: torch.Tensor) -> float:
        torch.manual_seed(_step_seed(self.seed, self.state.step, self.ctx.rank))  # dropout, drop-path
        self.model.set_drop_path_progress(self.state.step / max(1, self.total_steps))
        images = images.to(self.ctx.device, non_blocking=True)
        target = target.to(self.ctx.device, non_blocking=True)
        with torch.autocast(self.ctx.device.type, dtype=torch.bfloat16, enabled=self.amp):
            loss, _ = self._loss(self.net(images), target)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {self.state.step}; lower --lr or check the data")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.recipe.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.state.step += 1
        return float(loss.detach())

    def _empty_step(self, readable: int) -> float:
        """A step whose batch kept too few readable images to train on (BatchNorm needs two): the
        schedule advances so the run keeps its length and its learning rates; nothing is updated."""
        logger.warning("step %d: only %d readable image(s) in the batch; the step makes no update",
                       self.state.step + 1, readable)
        self.scheduler.step()
        self.state.step += 1
        return float("nan")

    def _check_batch(self, target: torch.Tensor | None, bad: list) -> bool:
        """Handle a batch's unreadable images (skip and count, or save and stop naming the file);
        True when the batch can be trained on. Every process takes the same decision."""
        fatal = ""
        try:
            self.bad_images.check(bad)
        except UnreadableImage as exc:
            fatal = str(exc)
        readable = 0 if target is None else len(target)
        if self.ctx.enabled:
            flags = all_reduce_sum(torch.tensor([1.0 if fatal else 0.0, 1.0 if readable < 2 else 0.0]), self.ctx)
            if flags[0] > 0 and not fatal:
                fatal = "another process met an unreadable image (its log names the file)"
            trainable = bool(flags[1] == 0)
        else:
            trainable = readable >= 2
        if fatal:
            self._stop_on_bad_image(fatal)
        return trainable

    def _stop_on_bad_image(self, message: str) -> None:
        """Save the run at the last completed step, then raise the error naming the file."""
        path = self.save()
        raise UnreadableImage(f"{message}. Training stopped after step {self.state.step}; {path} holds the run at "
                              "that step")

    def _scalar(self, tag: str, value: float) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, self.state.step)

    def validate(self) -> TopKCounts | None:
        if self.val_loader is None:
            return None
        model = self.ema.module if self.ema is not None else self.model
        try:
            counts, _ = evaluate(model, readable_batches(self.val_loader, self.bad_images), self.ctx.device,
                                 progress=False)
        except UnreadableImage as exc:
            self._stop_on_bad_image(str(exc))
        return TopKCounts.from_tensor(all_reduce_sum(counts.as_tensor(), self.ctx))

    def fit(self, max_steps: int | None = None, log_every: int = 50) -> dict[str, Any]:
        """Train to the end of the recipe (or ``max_steps`` total steps); returns the final summary."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if self.ctx.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.output_dir / "tensorboard"), purge_step=self.state.step or None)
        stop_at = min(self.total_steps, max_steps) if max_steps else self.total_steps
        logger.info("training %d steps (%d epochs x %d) at lr %.4g, global batch %d", self.total_steps,
                    self.recipe.epochs, self.steps_per_epoch, self.lr, self.recipe.batch_size * self.ctx.world_size)
        self._stop_requested = False
        previous_handler = None
        if threading.current_thread() is threading.main_thread():
            previous_handler = signal.signal(signal.SIGINT, self._on_interrupt)
        try:
            while self.state.step < stop_at and not self._stop_requested:
                self._run_epoch(stop_at, log_every)
        finally:
            if previous_handler is not None:
                signal.signal(signal.SIGINT, previous_handler)
            if self.writer is not None:
                self.writer.close()
        if self._stop_requested:
            logger.warning("interrupted at step %d; saved %s: continue with --resume", self.state.step,
                           self.output_dir / RESUME_FILE)
            raise KeyboardInterrupt
        return self._finish()

    def _on_interrupt(self, signum: int, frame: Any) -> None:
        """First Ctrl-C: finish the current step, save, stop. Second: stop at once, unsaved."""
        if self._stop_requested:
            raise KeyboardInterrupt
        self._stop_requested = True
        logger.warning("Ctrl-C: saving after this step (press again to abort without saving)")

    def _should_stop(self) -> bool:
        flag = torch.tensor([1.0 if self._stop_requested else 0.0])
        if self.ctx.enabled:  # every process stops at the same step, or the save would deadlock
            self._stop_requested = bool(all_reduce_sum(flag, self.ctx).item() > 0)
        return self._stop_requested

    def _run_epoch(self, stop_at: int, log_every: int) -> None:
        s = self.state
        self.sampler.set_epoch(s.epoch, s.batch_in_epoch)
        self.net.train()
        bar = tqdm(total=self.steps_per_epoch, initial=s.batch_in_epoch, desc=f"epoch {s.epoch + 1}/{self.recipe.epochs}",
                   disable=not self.progress, unit="step", dynamic_ncols=True)
        start, seen, loss_sum, batches = time.perf_counter(), 0, 0.0, 0
        for images, target, bad in self.train_loader:
            if self._check_batch(target, bad):
                loss = self._train_step(images, target)
                seen += len(target)
                loss_sum, batches = loss_sum + loss, batches + 1
            else:
                loss = self._empty_step(0 if target is None else len(target))
            s.batch_in_epoch += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / max(1, batches):.3f}", lr=f"{self.scheduler.get_last_lr()[0]:.3g}")
            if (s.step % log_every == 0 or s.step == 1) and loss == loss:  # not an empty step's NaN
                self._scalar("train/loss", loss)
                self._scalar("train/lr", self.scheduler.get_last_lr()[0])
            if (s.step >= stop_at or self._should_stop()) and s.batch_in_epoch < self.steps_per_epoch:
                bar.close()
                self.save()  # stopped mid-epoch: resumable at exactly this step
                return
        bar.close()
        s.epoch += 1
        s.batch_in_epoch = 0
        counts = self.validate()
        record = {"epoch": s.epoch, "step": s.step, "train_loss": loss_sum / max(1, batches),
                  "images_per_s": seen * self.ctx.world_size / max(time.perf_counter() - start, 1e-9)}
        if counts is not None:
            record.update(top1=counts.top1, top5=counts.top5)
            self._scalar("val/top1", counts.top1)
            self._scalar("val/top5", counts.top5)
            if counts.top1 > s.best_top1 and self.ctx.is_main:
                s.best_top1 = counts.top1
                self._export_weights(self.output_dir / "best.safetensors")
        s.history.append(record)
        logger.info("epoch %d: %s", s.epoch, ", ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "epoch"))
        self.save()

    def _export_weights(self, path: Path) -> None:
        """Inference weights in this package's format (the moving average when there is one)."""
        model = self.ema.module if self.ema is not None else self.model
        save_checkpoint(model, path, metadata=self.export_metadata)

    def _finish(self) -> dict[str, Any]:
        s = self.state
        last = s.history[-1] if s.history else {}
        summary = {
            **self.run_info,
            "steps": s.step, "epochs_completed": s.epoch, "total_steps": self.total_steps,
            "finished": s.step >= self.total_steps,
            "top1": last.get("top1"), "top5": last.get("top5"),
            "best_top1": s.best_top1 if s.best_top1 >= 0 else None,
            "train_loss": last.get("train_loss"),
            "weights": str(self.output_dir / FINAL_WEIGHTS), "resume_checkpoint": str(self.output_dir / RESUME_FILE),
            "recipe": self.recipe.to_dict(), "history": s.history,
            **self.bad_images.summary(),
        }
        self.bad_images.log_summary("training")
        if self.ctx.is_main:
            self._export_weights(self.output_dir / FINAL_WEIGHTS)
            (self.output_dir / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
        barrier(self.ctx)
        return summary
