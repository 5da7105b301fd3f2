"""Self-supervised rotation pre-training on *public* images (Gidaris et al. 2018), the start of
the paper's SVHN recipe: predict which of 0°, 90°, 180°, 270° an image was turned by, then keep
every layer but the 4-way head as the initialisation of DP-SGD on the private data.

No privacy cost and no ledger entry: only public images are read (SVHN's ``extra`` split when
its ``train`` split is the private data), and DP-SGD's guarantee holds for any initialisation
chosen without the private data.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dpal.data.arrays import ImageArrays
from dpal.errors import DpalError
from dpal.models.registry import build_model
from dpal.training.sampling import shuffled_batches

ROTATIONS = 4


@dataclass(frozen=True, kw_only=True)
class RotationConfig:
    model: str = "cnn-tanh"
    epochs: int = 10
    batch_size: int = 128  # images per batch; each appears in all four rotations
    lr: float = 0.05
    momentum: float = 0.9
    max_images: int | None = 200_000  # a random subset of a larger pool keeps CPU time bounded
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise DpalError("rotation pre-training needs epochs ≥ 1, batch size ≥ 1 and lr > 0.")
        if self.max_images is not None and self.max_images < 1:
            raise DpalError(f"--max-images must be ≥ 1, got {self.max_images}.")


def rotated(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of ``x`` (N, C, H, W; square) in the four rotations, and the rotation labels."""
    if x.shape[-1] != x.shape[-2]:
        raise DpalError(f"rotation pre-training needs square images, got {tuple(x.shape[-2:])}.")
    turns = [torch.rot90(x, k, dims=(-2, -1)) for k in range(ROTATIONS)]
    labels = torch.arange(ROTATIONS).repeat_interleave(len(x))
    return torch.cat(turns), labels


def rotation_pretrain(
    images: ImageArrays, config: RotationConfig, out: str | Path, *, progress: bool = False
) -> Path:
    """Train ``config.model`` to predict rotations of ``images`` (public!) and save its weights,
    without the rotation head, to ``out`` (a ``.pt`` file) with what they were learned from."""
    out = Path(out)
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    n = len(images)
    if config.max_images is not None and n > config.max_images:
        keep = torch.randperm(n, generator=gen)[: config.max_images].numpy()
        images = images.subset(keep)
    x, _ = images.tensors()
    model = build_model(config.model, images.image_shape, ROTATIONS)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    total = config.epochs * math.ceil(len(x) / config.batch_size)
    step = 0
    model.train()
    for epoch in range(config.epochs):
        correct = seen = 0
        for idx in shuffled_batches(len(x), batch_size=config.batch_size, generator=gen):
            for group in opt.param_groups:  # cosine decay to 0
                group["lr"] = 0.5 * config.lr * (1 + math.cos(math.pi * step / total))
            step += 1
            xb, yb = rotated(x[idx])
            opt.zero_grad(set_to_none=True)
            logits = model(xb)
            F.cross_entropy(logits, yb).backward()
            opt.step()
            correct += int((logits.argmax(1) == yb).sum())
            seen += len(yb)
        if progress:
            print(f"rotation epoch {epoch + 1}: train accuracy {correct / seen:.3f}", flush=True)
    head = head_name(model)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(head + ".")}
    payload = {
        "state": state,
        "model": config.model,
        "image_shape": list(images.image_shape),
        "learned_from": f"{images.name} ({len(images)} public images, labels unused)",
        "config": asdict(config),
        "rotation_accuracy_last_epoch": correct / max(seen, 1),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(out)
    return out


def head_name(model: nn.Module) -> str:
    """The last ``nn.Linear``: the classifier head, replaced when the weights are reused."""
    last = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not last:
        raise DpalError("the model has no nn.Linear head to replace.")
    return last[-1]


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
    body = {k for k in full if not k.startswith(head + ".")}
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
