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
def embeddings(model: nn.Module, x: torch.Tensor, *, batch_size: int = 2048) -> torch.Tensor:
    """``[n, d]`` activations before the logits.

    Uses ``model.embed`` where the model has one; otherwise captures the input of the model's
    last ``nn.Linear`` (registration order) with a forward hook, which is the embedding of any
    network that ends in a linear classifier.
    """
    was_training = model.training
    model.eval()
    out: list[torch.Tensor] = []
    try:
        embed = getattr(model, "embed", None)
        if callable(embed):
            for chunk in x.split(batch_size):
                out.append(embed(chunk))
        else:
            captured: list[torch.Tensor] = []
            handle = _last_linear(model).register_forward_pre_hook(
                lambda _m, inputs: captured.append(inputs[0].detach().flatten(1))
            )
            try:
                for chunk in x.split(batch_size):
                    model(chunk)
            finally:
                handle.remove()
            out = captured
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)
