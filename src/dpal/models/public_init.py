"""Weights learned from public data only, for DP training to start from (``TrainConfig.init``):
rotation pre-training (SVHN path), DP-RandP's prior, AdaMix's few-shot model. One file format,
one writer, one reader. DP-SGD's guarantee holds for any initialisation chosen without private data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from dpal.core.atomic import atomic_torch_save
from dpal.core.errors import DpalError
from dpal.models.groupnorm import FeatureStandardization


def head_name(model: nn.Module) -> str:
    """The last ``nn.Linear``: the classifier head, replaced when the weights are reused."""
    last = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not last:
        raise DpalError("the model has no nn.Linear head to replace.")
    return last[-1]


def save_public_init(
    path: str | Path,
    model: nn.Module,
    *,
    model_name: str,
    image_shape: tuple[int, ...],
    learned_from: str,
    with_head: bool,
    **extra: Any,
) -> dict[str, Any]:
    """Save ``model``'s weights — without its head unless ``with_head`` (the head of another
    task is useless) — with what they were learned from; returns the payload."""
    head = head_name(model)
    state = {
        k: v for k, v in model.state_dict().items() if with_head or not k.startswith(head + ".")
    }
    payload = {
        "state": state,
        "model": model_name,
        "image_shape": list(image_shape),
        "learned_from": learned_from,
        **extra,
    }
    atomic_torch_save(payload, Path(path))
    return payload


def load_public_init(model: nn.Module, path: str | Path, model_name: str) -> dict[str, Any]:
    """Copy weights learned on public data into ``model``: every layer but the head (a prior
    from another task), or every layer (a public model of this task, as AdaMix starts from)."""
    path = Path(path)
    if not path.exists():
        raise DpalError(f"--init {path}: no such file; create it with `dpal pretrain`.")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload["model"] != model_name:
        raise DpalError(
            f"--init {path} holds weights of {payload['model']!r}, not {model_name!r}; "
            f"train with --model {payload['model']} or pre-train a {model_name}."
        )
    head = head_name(model)
    full = model.state_dict()
    # the head's input standardisation is set per task (dpal.models.standardize), not inherited
    optional = {
        f"{name}.{buffer}"
        for name, m in model.named_modules()
        if isinstance(m, FeatureStandardization)
        for buffer, _ in m.named_buffers(recurse=False)
    }
    body = {k for k in full if not k.startswith(head + ".")} - optional
    state = payload["state"]
    # every layer but the head must be there; the head too when the weights are for this task
    if not body <= set(state) or any(
        k not in full or full[k].shape != v.shape for k, v in state.items()
    ):
        raise DpalError(
            f"--init {path} was pre-trained on images of shape {payload['image_shape']} "
            f"with {payload.get('num_classes', 'other')} outputs; it does not fit this task."
        )
    model.load_state_dict(state, strict=False)
    return {k: v for k, v in payload.items() if k != "state"}
