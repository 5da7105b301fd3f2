"""Embeddings of any classifier: what its last ``nn.Linear`` layer receives."""

from __future__ import annotations

import torch
from torch import nn


def _last_linear(model: nn.Module) -> nn.Linear:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("model has no nn.Linear layer; give it an `embed(x)` method instead.")
    return linears[-1]


@torch.no_grad()
def logits_and_embeddings(
    model: nn.Module, x: torch.Tensor, *, batch_size: int = 2048
) -> tuple[torch.Tensor, torch.Tensor]:
    """``([n, classes], [n, d])``: the logits and the input of the model's last ``nn.Linear``
    (registration order), from one forward pass — the embedding of any network that ends in a
    linear classifier."""
    was_training = model.training
    model.eval()
    logits: list[torch.Tensor] = []
    captured: list[torch.Tensor] = []
    handle = _last_linear(model).register_forward_pre_hook(
        lambda _m, inputs: captured.append(inputs[0].detach().flatten(1))
    )
    try:
        for chunk in x.split(batch_size):
            logits.append(model(chunk))
    finally:
        handle.remove()
        model.train(was_training)
    if not logits:
        return torch.empty(0), torch.empty(0)
    return torch.cat(logits), torch.cat(captured)


@torch.no_grad()
def embeddings(model: nn.Module, x: torch.Tensor, *, batch_size: int = 2048) -> torch.Tensor:
    """``[n, d]`` activations before the logits: ``model.embed`` where the model has one,
    otherwise the input of its last ``nn.Linear`` (see :func:`logits_and_embeddings`)."""
    embed = getattr(model, "embed", None)
    if not callable(embed):
        return logits_and_embeddings(model, x, batch_size=batch_size)[1]
    was_training = model.training
    model.eval()
    try:
        out = [embed(chunk) for chunk in x.split(batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)
