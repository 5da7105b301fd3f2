"""Accuracy and predicted probabilities, in batches, without gradients."""

from __future__ import annotations

import torch
from torch import nn

from dpal.data.arrays import ImageArrays


@torch.no_grad()
def logits_of(model: nn.Module, x: torch.Tensor, *, batch_size: int = 2048) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(chunk) for chunk in x.split(batch_size)]) if len(x) else x
    finally:
        model.train(was_training)


def accuracy(
    model: nn.Module,
    data: ImageArrays | tuple[torch.Tensor, torch.Tensor],
    device: str | torch.device = "cpu",
) -> float:
    x, y = data.tensors() if isinstance(data, ImageArrays) else data
    x, y = x.to(device), y.to(device)
    if len(x) == 0:
        return float("nan")
    return (logits_of(model, x).argmax(1) == y).float().mean().item()
