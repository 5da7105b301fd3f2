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

import torch
import torch.nn.functional as F

from dpal.core.errors import DpalError
from dpal.data.arrays import ImageArrays
from dpal.models.public_init import save_public_init
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
    save_public_init(
        out,
        model,
        model_name=config.model,
        image_shape=images.image_shape,
        learned_from=f"{images.name} ({len(images)} public images, labels unused)",
        with_head=False,
        config=asdict(config),
        rotation_accuracy_last_epoch=correct / max(seen, 1),
    )
    return out
