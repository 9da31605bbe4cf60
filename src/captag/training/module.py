"""The LightningModule: BCE-with-logits over the fused model, Adam, validation F1 each epoch."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch
from torch import nn

from captag.evaluation.metrics import compute_metrics
from captag.models.fusion import FusionModel, model_inputs


class CaptagModule(L.LightningModule):
    """Trains a FusionModel; keeps the epoch's train loss and the validation metrics."""

    def __init__(self, model: FusionModel, lr: float = 1e-4, head_lr: float = 1e-3,
                 weight_decay: float = 0.0, at_least_one: bool = True, schedule: str = "constant",
                 warmup: float = 0.0):
        super().__init__()
        self.model = model
        self.lr, self.head_lr, self.weight_decay = lr, head_lr, weight_decay
        self.at_least_one = at_least_one
        self.schedule, self.warmup = schedule, warmup
        self.loss = nn.BCEWithLogitsLoss()
        self.train_losses: list[float] = []  # this epoch's
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.val_metrics: dict[str, float] = {}
        self.strict_loading = False  # checkpoints hold the trained part only

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        frozen = self.model.frozen_keys()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items()
                                    if k.removeprefix("model.") not in frozen}

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
        logits = self(batch)
        loss = self.loss(logits, batch["target"])
        self.log("val_loss", loss, prog_bar=True, on_epoch=True, sync_dist=True,
                 batch_size=len(batch["target"]))
        self._val_outputs.append((batch["index"], torch.sigmoid(logits).float(), batch["target"]))

    def on_validation_epoch_end(self) -> None:
        index, probs, targets = (torch.cat(parts) for parts in zip(*self._val_outputs))
        self._val_outputs = []
        if self.trainer.world_size > 1:
            index, probs, targets = (self.all_gather(t).flatten(0, 1) for t in (index, probs, targets))
        _, first = np.unique(index.cpu().numpy(), return_index=True)
        metrics = compute_metrics(targets.cpu().numpy()[first], probs.cpu().numpy()[first],
                                  at_least_one=self.at_least_one)
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
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, total, self.warmup, self.schedule))
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def lr_factor(step: int, total: int, warmup: float, schedule: str) -> float:
    """Linear warm-up over the first `warmup` fraction of steps, then linear or cosine decay."""
    warm = int(total * warmup)
    if step < warm:
        return (step + 1) / warm
    progress = min((step - warm) / max(total - warm, 1), 1.0)
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"Unknown schedule {schedule!r}: use constant, linear or cosine.")
