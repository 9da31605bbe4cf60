"""The LightningModule: the fused model's loss (BCE or ASL), Adam with a step- or time-driven
schedule, an optional EMA of the weights, and validation F1 each epoch."""

from __future__ import annotations

import contextlib
import math
import time

import lightning as L
import numpy as np
import torch
from timm.loss import AsymmetricLossMultiLabel
from torch import nn

from captag.config import DEFAULT_EPOCHS, RunConfig
from captag.evaluation.metrics import compute_metrics
from captag.models.fusion import FusionModel, model_inputs


def make_loss(name: str = "bce", gamma_neg: float = RunConfig.asl_gamma_neg,
              gamma_pos: float = RunConfig.asl_gamma_pos,
              clip: float = RunConfig.asl_clip) -> nn.Module:
    """The training loss: BCE with logits, or timm's asymmetric loss (mean over labels)."""
    if name == "asl":
        return AsymmetricLossMultiLabel(gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=clip,
                                        reduction="mean")
    return nn.BCEWithLogitsLoss()


class WeightEMA(nn.Module):
    """An exponential moving average of a model's trainable parameters (its buffers, saved in
    checkpoints), with the decay warmed up as min(decay, (1 + n) / (10 + n))."""

    def __init__(self, model: nn.Module, decay: float):
        super().__init__()
        self.decay = decay
        self.names = [name for name, p in model.named_parameters() if p.requires_grad]
        for i, name in enumerate(self.names):
            self.register_buffer(f"w{i}", model.get_parameter(name).detach().clone())
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def averages(self) -> list[torch.Tensor]:
        return [getattr(self, f"w{i}") for i in range(len(self.names))]

    def params(self, model: nn.Module) -> list[torch.Tensor]:
        return [model.get_parameter(name) for name in self.names]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        n = int(self.steps)
        weight = 1 - min(self.decay, (1 + n) / (10 + n))
        torch._foreach_lerp_(self.averages(), [p.detach() for p in self.params(model)], weight)
        self.steps += 1

    @contextlib.contextmanager
    def swapped_in(self, model: nn.Module):
        """The model runs with the averaged weights inside the block."""
        pairs = list(zip(self.params(model), self.averages()))
        for p, a in pairs:
            p.data, a.data = a.data, p.data
        try:
            yield
        finally:
            for p, a in pairs:
                p.data, a.data = a.data, p.data

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for p, a in zip(self.params(model), self.averages()):
            p.copy_(a)


class CaptagModule(L.LightningModule):
    """Trains a FusionModel; keeps the epoch's train loss and the validation metrics. With
    `ema`, an exponential moving average of the weights is scored beside them each epoch, and
    the epoch's metrics (and `ema_chosen`) are those of the better of the two."""

    def __init__(self, model: FusionModel, lr: float = 1e-4, head_lr: float = 1e-3,
                 weight_decay: float = 0.0, at_least_one: bool = True, schedule: str = "constant",
                 warmup: float = 0.0, loss: nn.Module | None = None, ema: float = 0.0,
                 deadline: float | None = None):
        super().__init__()
        self.model = model
        self.lr, self.head_lr, self.weight_decay = lr, head_lr, weight_decay
        self.at_least_one = at_least_one
        self.schedule, self.warmup, self.deadline = schedule, warmup, deadline
        self.loss = loss if loss is not None else nn.BCEWithLogitsLoss()
        self.ema = WeightEMA(model, ema) if ema else None
        self.ema_chosen = False  # whether this epoch's metrics are the EMA's
        self.train_losses: list[float] = []  # this epoch's
        self._val_outputs: list[tuple[torch.Tensor, ...]] = []
        self.val_metrics: dict[str, float] = {}
        self.strict_loading = False  # checkpoints hold the trained part only
        self._fit_started = time.perf_counter()
        self.total_steps, self.warm_steps = 1, 0  # set by configure_optimizers

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        frozen = self.model.frozen_keys()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items()
                                    if k.removeprefix("model.") not in frozen}
        checkpoint["ema_chosen"] = self.ema_chosen

    def use_ema_weights(self) -> None:
        """Put the EMA's weights into the model."""
        self.ema.copy_to(self.model)

    def on_train_start(self) -> None:
        self._fit_started = time.perf_counter()

    def on_fit_start(self) -> None:
        if self.device.type == "cpu" and self.model.image is not None:  # faster convolutions
            self.model.image.to(memory_format=torch.channels_last)

    def on_fit_end(self) -> None:
        if self.model.image is not None:
            self.model.image.to(memory_format=torch.contiguous_format)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update(self.model)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.model(**model_inputs(batch))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(self(batch), batch["target"])
        self.train_losses.append(loss.detach().item())
        if batch_idx % self.trainer.log_every_n_steps == 0:  # self.log costs ~2 ms a call
            self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["target"]))
        return loss

    def on_train_epoch_start(self) -> None:
        self.model.train()  # Lightning keeps modes as found; frozen stages stay in eval mode
        self.train_losses = []
        self.val_metrics = {}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        with torch.autocast(self.device.type, enabled=False):  # scored as it will be used: fp32
            logits = self(batch)
        loss = self.loss(logits, batch["target"])
        self.log("val_loss", loss, prog_bar=True, on_epoch=True, sync_dist=True,
                 batch_size=len(batch["target"]))
        outputs = [batch["index"], batch["target"], torch.sigmoid(logits).float()]
        if self.ema is not None:
            with self.ema.swapped_in(self.model):
                outputs.append(torch.sigmoid(self(batch)).float())
        self._val_outputs.append(tuple(outputs))

    def on_validation_epoch_end(self) -> None:
        index, targets, *probs = (torch.cat(parts) for parts in zip(*self._val_outputs))
        self._val_outputs = []
        if self.trainer.world_size > 1:
            index, targets, *probs = (self.all_gather(t).flatten(0, 1)
                                      for t in (index, targets, *probs))
        _, first = np.unique(index.cpu().numpy(), return_index=True)
        scored = [compute_metrics(targets.cpu().numpy()[first], p.cpu().numpy()[first],
                                  at_least_one=self.at_least_one) for p in probs]
        self.ema_chosen = len(scored) > 1 and scored[1]["f1_samples"] > scored[0]["f1_samples"]
        metrics = scored[1] if self.ema_chosen else scored[0]
        self.val_metrics = {f"val_{k}": float(v) for k, v in metrics.items() if k != "n_samples"}
        self.log_dict(self.val_metrics, prog_bar=False, sync_dist=False)
        self.log("val_f1", self.val_metrics["val_f1_samples"], prog_bar=True)

    @property
    def epoch_train_loss(self) -> float:
        return float(np.mean(self.train_losses)) if self.train_losses else float("nan")

    def configure_optimizers(self):
        head = [p for p in self.model.head.parameters() if p.requires_grad]
        head_ids = {id(p) for p in head}
        encoders = [p for p in self.model.parameters() if p.requires_grad and id(p) not in head_ids]
        groups = [{"params": head, "lr": self.head_lr}]
        if encoders:
            groups.append({"params": encoders, "lr": self.lr})
        optimizer = torch.optim.Adam(groups, weight_decay=self.weight_decay)
        if self.schedule == "constant":
            return optimizer
        self.total_steps = max(int(self.trainer.estimated_stepping_batches), 1)
        self.warm_steps = int(self.warmup * self._warmup_base())
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, self.total_steps, self.warm_steps,
                                              self.schedule, self._time_used()))
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _warmup_base(self) -> int:
        """The steps that `warmup` is a share of: all of them, or under a time budget (whose
        epochs are planned after the first one) those of at most DEFAULT_EPOCHS epochs."""
        if self.deadline is None:
            return self.total_steps
        per_epoch = self.total_steps / max(self.trainer.max_epochs, 1)
        return round(per_epoch * min(self.trainer.max_epochs, DEFAULT_EPOCHS))

    def plan_epochs(self, epochs: int, steps_per_epoch: int) -> None:
        """Decay the learning rate over `epochs` epochs from now on (the time planner's plan)."""
        self.total_steps = max(epochs * steps_per_epoch, 1)

    def _time_used(self) -> float:
        """The share of the time until the deadline spent since fitting started (0 without)."""
        if self.deadline is None:
            return 0.0
        now = time.perf_counter()
        return (now - self._fit_started) / max(self.deadline - self._fit_started, 1e-9)


def lr_factor(step: int, total: int, warm: int, schedule: str, time_used: float = 0.0) -> float:
    """Linear warm-up over the first `warm` steps, then linear or cosine decay to `total`,
    driven by the steps or, when further along, by the share of a time budget used."""
    if step < warm:
        return (step + 1) / warm
    progress = min(max((step - warm) / max(total - warm, 1), time_used), 1.0)
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"Unknown schedule {schedule!r}: use constant, linear or cosine.")
