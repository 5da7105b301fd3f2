"""What changes along a run, step by step: the learning rate, and which parameters train
(DP-RandP's linear probe first, then every layer — one σ, one q, one ledger throughout)."""

from __future__ import annotations

import math

import torch
from torch import nn

from dpal.models.public_init import head_name
from dpal.training.config import TrainConfig


def train_head_only(model: nn.Module, head_only: bool) -> None:
    """Freeze every parameter but the classifier head's (the last ``nn.Linear``), or none.
    Clipping then bounds the norm of the trainable parameters' gradient: sensitivity stays C."""
    head = head_name(model)
    for name, p in model.named_parameters():
        p.requires_grad_(not head_only or name.startswith(head + "."))


def set_lr(optimizer: torch.optim.Optimizer, config: TrainConfig, step: int, total: int) -> None:
    """Constant, or cosine decay from ``config.lr`` to 0 over the run's ``total`` steps."""
    lr = config.lr
    if config.lr_schedule == "cosine":
        lr = 0.5 * config.lr * (1 + math.cos(math.pi * step / total))
    for group in optimizer.param_groups:
        group["lr"] = lr
