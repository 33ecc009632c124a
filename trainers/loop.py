"""The one training loop: align and FaST-VGS runs both go through `train_loop`.

A trainer builds its model and hands the loop a `Recipe`: how to turn a batch of record
indices into the model's inputs, how to validate, and how to save the weights. The loop does
the rest, the same way for every kind of run:

- DistributedDataParallel under torchrun (each rank takes its share of the global batch);
- AdamW (`make_optimizer`), linear warm-up then `cfg.schedule`, gradient clipping, AMP on CUDA;
- `ctx.log` every step; a stop at the next step once `ctx.should_stop()`;
- validation on rank 0 after every epoch (every `cfg.eval_every` epochs where the config has it,
  and always after the last), keeping the best by `cfg.best_metric` (without validation data
  every validated epoch is kept, so the last one wins); the kept weights are written by
  `recipe.save` and recorded as the `recipe.artifact` artifact;
- `ctx.run_dir/last.pt` after the last epoch, at a stop, and after any epoch that ends
  `CHECKPOINT_EVERY_S` or more after the previous checkpoint (a killed run loses at most that
  much work; a small run does not write its optimiser state every second); a run with a
  checkpoint resumes exactly where it stopped (model, optimiser, scaler, step, best so far, RNG
  states), skipping the batches of the interrupted epoch that were already done.

The config `cfg` supplies batch_size, epochs, seed, warmup_steps, schedule, weight_decay,
betas, grad_clip, amp, best_metric, dataset and val_split, and `to_dict()` (`eval_every` optional).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from trainers.common import (DistInfo, any_rank, autocast, epoch_batches, init_distributed, local_share, lr_at,
                             make_optimizer, mean_over_ranks, restore_rng, rng_states)
from xmodal_core.errors import InputError

CHECKPOINT_EVERY_S = 30.0  # between epoch-end checkpoints (the last epoch and a stop always write one)


@dataclass
class Recipe:
    """What one kind of run gives the loop besides its config.

    Attributes:
        model: the bare model (on its device); `model(*inputs)` -> (loss, {term: loss}).
        n_train: records in the training split.
        inputs: (this rank's record indices, device) -> the model's positional inputs.
        lr_of: parameter name -> learning rate before the schedule.
        base_lr: the rate logged as "lr" (times the schedule's factor).
        save: model -> path of the weights file it wrote (the kept epoch's weights).
        artifact: the store's name for that file ("heads", "model").
        evaluate: model -> validation metrics, or None for a run without validation data.
        scalars: model -> extra values logged every step (a logit scale).
        config_file: the run's config.json, recorded as the "config" artifact at the end.
        find_unused_parameters: for DDP (fine-tuned towers may leave parameters unused).
    """

    model: nn.Module
    n_train: int
    inputs: Callable[[Tensor, torch.device], Sequence[Any]]
    lr_of: Callable[[str], float]
    base_lr: float
    save: Callable[[nn.Module], Path]
    artifact: str
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None
    scalars: Callable[[nn.Module], Mapping[str, float]] = lambda model: {}
    config_file: Path | None = None
    find_unused_parameters: bool = False


@dataclass
class TrainResult:
    """How a training call ended. `best` holds the validation metrics of the best epoch."""

    steps: int
    epochs_done: int
    stopped: bool
    best: dict[str, float]
    best_epoch: int | None
    last_loss: float


@dataclass
class _State:
    """What a checkpoint keeps besides the weights and the optimiser."""

    step: int = 0
    best: dict[str, float] = field(default_factory=dict)
    best_epoch: int | None = None
    last_loss: float = math.nan


class _Loop:
    """One run of the loop; `run()` trains and returns the `TrainResult`."""

    def __init__(self, cfg: Any, recipe: Recipe, ctx: Any, info: DistInfo, dataset_name: str | None):
        self.cfg, self.recipe, self.ctx, self.info = cfg, recipe, ctx, info
        self.dataset_name = dataset_name or cfg.dataset
        self.model = recipe.model
        self.model.train()
        self.ddp_model: nn.Module = self.model
        device = info.device
        if info.distributed:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=recipe.find_unused_parameters)
        self.optimizer = make_optimizer(self.model, recipe.lr_of, cfg.weight_decay, cfg.betas)
        self.use_amp = cfg.amp and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and not torch.cuda.is_bf16_supported())
        if info.distributed and recipe.n_train >= cfg.batch_size and cfg.batch_size % info.world_size:
            raise InputError(f"batch_size {cfg.batch_size} does not split evenly over {info.world_size} processes")
        self.steps_per_epoch = len(epoch_batches(recipe.n_train, cfg.batch_size, 0, cfg.seed))
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.eval_every = max(1, int(getattr(cfg, "eval_every", None) or 1))
        self.state = _State()
        self._last_checkpoint = time.monotonic()

    # -- checkpoints

    def resume(self) -> None:
        saved = self.ctx.load_checkpoint(map_location=self.info.device)
        if saved is None:
            return
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scaler.load_state_dict(saved["scaler"])
        self.state = _State(saved["step"], saved["best"], saved["best_epoch"])
        restore_rng(saved["rng"], self.info)

    def checkpoint(self) -> None:
        self._last_checkpoint = time.monotonic()
        rng = rng_states(self.info)  # collective: every rank calls checkpoint()
        if self.info.is_main:
            s = self.state
            self.ctx.save_checkpoint({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                                      "scaler": self.scaler.state_dict(), "step": s.step, "best": s.best,
                                      "best_epoch": s.best_epoch, "rng": rng, "config": self.cfg.to_dict()})

    # -- one step, one epoch's end

    def step(self, index: Tensor, epoch_progress: float) -> None:
        cfg, info, s = self.cfg, self.info, self.state
        lr_factor = lr_at(s.step, base_lr=1.0, warmup_steps=cfg.warmup_steps, total_steps=self.total_steps,
                          schedule=cfg.schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * lr_factor
        inputs = self.recipe.inputs(local_share(index, info), info.device)
        with autocast(info.device, self.use_amp):
            loss, parts = self.ddp_model(*inputs)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        s.step += 1
        # Contrastive terms are already global; per-rank means (L2) are averaged for the log.
        terms = mean_over_ranks(torch.stack([loss.detach(), *[v.detach() for v in parts.values()]]), info)
        s.last_loss = float(terms[0])
        if info.is_main:
            logged = {"loss": s.last_loss, "lr": self.recipe.base_lr * lr_factor, "grad_norm": float(grad_norm)}
            if len(parts) > 1:
                logged.update({f"loss_{k}": float(v) for k, v in zip(parts, terms[1:])})
            logged.update(self.recipe.scalars(self.model))
            self.ctx.log(s.step, epoch_progress, logged)

    def end_of_epoch(self, epoch: int) -> None:
        """Rank 0: validate, keep the best epoch's weights (every epoch without validation)."""
        cfg, s = self.cfg, self.state
        metrics: dict[str, float] = {}
        if self.recipe.evaluate is not None:
            metrics = self.recipe.evaluate(self.model)
            self.ctx.log(s.step, epoch + 1, {f"val/{k}": v for k, v in metrics.items()})
            if cfg.best_metric not in metrics:
                raise InputError(f"best_metric {cfg.best_metric!r} is not among the validation metrics: "
                                 f"{', '.join(sorted(metrics))}")
            if s.best_epoch is not None and metrics[cfg.best_metric] <= s.best.get(cfg.best_metric, -math.inf):
                return
        s.best, s.best_epoch = metrics, epoch + 1
        self.ctx.add_artifact(self.recipe.artifact, self.recipe.save(self.model))

    # -- the loop

    def run(self) -> TrainResult:
        cfg, info, ctx = self.cfg, self.info, self.ctx
        if info.is_main:
            ctx.set_total_steps(self.total_steps, device=str(info.device))
        self.resume()
        stopped = False
        for epoch in range(self.state.step // self.steps_per_epoch, cfg.epochs):
            batches = epoch_batches(self.recipe.n_train, cfg.batch_size, epoch, cfg.seed)
            for b, index in enumerate(batches):
                if epoch * self.steps_per_epoch + b < self.state.step:
                    continue  # done before the run was stopped
                if any_rank(info.is_main and ctx.should_stop(), info):
                    stopped = True
                    break
                self.step(index, epoch + (b + 1) / len(batches))
            if stopped:
                break
            last = epoch == cfg.epochs - 1
            if info.is_main and (last or (epoch + 1) % self.eval_every == 0):
                self.end_of_epoch(epoch)
            # Every rank takes the same decision (rank 0's clock), as checkpoint() is collective.
            due = any_rank(info.is_main and time.monotonic() - self._last_checkpoint >= CHECKPOINT_EVERY_S, info)
            if last or due:
                self.checkpoint()
        if stopped:
            self.checkpoint()
        s = self.state
        if info.is_main and s.best:  # a stopped run records its best epoch so far
            ctx.add_evaluation(self.dataset_name, cfg.val_split, s.best)
        if info.is_main and self.recipe.config_file is not None:
            ctx.add_artifact("config", self.recipe.config_file)
        return TrainResult(steps=s.step, epochs_done=min(cfg.epochs, s.step // max(1, self.steps_per_epoch)),
                           stopped=stopped, best=s.best, best_epoch=s.best_epoch, last_loss=s.last_loss)


def train_loop(cfg: Any, recipe: Recipe, ctx: Any, info: DistInfo, *, dataset_name: str | None = None) -> TrainResult:
    """Train `recipe.model` under `cfg` (see the module docstring).

    `ctx` is a `xmodal_core.runner.RunContext` (or a `trainers.common.OfflineContext`): metrics
    go to `ctx.log`, checkpoints to `ctx.save_checkpoint`, weights are recorded with
    `ctx.add_artifact`, the best validation metrics with `ctx.add_evaluation(dataset_name or
    cfg.dataset, cfg.val_split, ...)`. Under torchrun every rank calls this; rank 0 alone
    reports and writes.
    """
    return _Loop(cfg, recipe, ctx, info, dataset_name).run()


# ------------------------------------------------------------------ entry points both trainers share

def evaluate_saved_run(load_run: Callable[[Any], Any], load_data: Callable[..., Any], evaluate: Callable[..., Any],
                       run_dir_or_id: Any, dataset: str, split: str, limit: int | None) -> dict[str, float]:
    """Metrics of a saved run on another data set's split.

    `load_run(run_dir_or_id)` gives an object with `config`, `model` and `device`;
    `load_data(config, split, dataset=, limit=)` the split; `evaluate(model, data, config, device=)` the metrics.
    """
    trained = load_run(run_dir_or_id)
    data = load_data(trained.config, split, dataset=dataset, limit=limit)
    return evaluate(trained.model, data, trained.config, device=trained.device)


def train_queued_run(cfg: Any, ctx: Any, load_data: Callable[..., Any], train: Callable[..., Any], *,
                     log_data: bool = False) -> None:
    """What the run queue calls: `cfg`'s train and val splits through `load_data`, then `train`.

    With `log_data`, rank 0 logs at step 0 how long loading took and the size of each split.
    """
    info = init_distributed(cfg.device)
    started = time.monotonic()
    train_split = load_data(cfg, cfg.train_split, limit=cfg.max_train)
    val_split = load_data(cfg, cfg.val_split, limit=cfg.max_val)
    if log_data and info.is_main:
        ctx.log(0, 0.0, {"data_seconds": time.monotonic() - started, "train_pairs": float(len(train_split)),
                         "val_pairs": float(len(val_split))})
    train(cfg, train_split, val_split, ctx, info=info)
