"""Phase I of DP-RandP: representation learning on random-process images only.

Contrastive learning with the alignment + uniformity objective of Wang & Isola (2020), as the
DP-RandP reference uses: two augmented views of each synthetic image pass through the network's
features and a projection head onto the unit sphere;

    loss = E‖f(x) − f(x⁺)‖²  +  ½ [log E exp(−2‖f(x) − f(y)‖²)  for each view's batch]

pulls the views of an image together and spreads all images over the sphere. Augmentations: random
resized crop, horizontal flip, colour jitter, random grayscale (torchvision v2, drawn per image).

No privacy cost and nothing in any ledger: no real data is read at all. The learned weights are
saved in the format of ``TrainConfig.init`` (every layer but the head), so DP training starts from
them like from any public initialisation.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dpal.errors import DpalError
from dpal.models.public_init import save_public_init
from dpal.models.registry import build_model
from dpal.randp.generators import KINDS, stream_images


@dataclass(frozen=True, kw_only=True)
class PriorConfig:
    model: str = "cnn-gn"
    kind: str = "mixture"  # random process(es) the images come from
    size: int = 32
    channels: int = 3
    steps: int = 2000
    batch_size: int = 256
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    projection_dim: int = 128
    uniformity_weight: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DpalError(f"unknown random process {self.kind!r}; choose one of {KINDS}.")
        if self.steps < 1 or self.batch_size < 2 or not self.lr > 0:
            raise DpalError("phase I needs steps ≥ 1, batch size ≥ 2 and lr > 0.")


def align_loss(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    return (z1 - z2).pow(2).sum(dim=1).mean()


def uniform_loss(z: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    return torch.pdist(z).pow(2).mul(-t).exp().mean().log()


def augmenter(size: int, channels: int) -> nn.Module:
    """Per-image random augmentations on uint8 C×H×W tensors → float in [0, 1]."""
    from torchvision.transforms import v2

    ops: list[nn.Module] = [
        v2.RandomResizedCrop(size, scale=(0.2, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
    ]
    if channels == 3:
        ops += [
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
        ]
    else:
        ops.append(v2.RandomApply([v2.ColorJitter(0.4, 0.4)], p=0.8))
    return v2.Compose([*ops, v2.ToDtype(torch.float32, scale=True)])


def two_views(batch: torch.Tensor, augment: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independently augmented views of each uint8 N×C×H×W image, mapped to [-1, 1] like
    :meth:`~dpal.data.arrays.ImageArrays.tensors`."""
    v1 = torch.stack([augment(img) for img in batch])
    v2_ = torch.stack([augment(img) for img in batch])
    return v1 * 2 - 1, v2_ * 2 - 1


class Projector(nn.Module):
    def __init__(self, backbone: nn.Module, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.backbone: Any = backbone  # a dpal model with embed()
        self.head = nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(), nn.Linear(in_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.backbone.embed(x)), dim=1)


def learn_prior(config: PriorConfig, out: str | Path, *, progress: bool = False) -> dict[str, Any]:
    """Train ``config.model`` on streamed random-process images; save the weights of every layer
    but its classifier head to ``out`` (a ``.pt`` file loadable with ``TrainConfig.init``)."""
    torch.manual_seed(config.seed)
    shape = (config.channels, config.size, config.size)
    backbone: Any = build_model(config.model, shape, 10)
    if not hasattr(backbone, "embed") or not hasattr(backbone, "feature_dim"):
        raise DpalError(
            f"model {config.model!r} has no embed()/feature_dim; use cnn-gn or wrn-16-4."
        )
    net = Projector(backbone, int(backbone.feature_dim), config.projection_dim)
    opt = torch.optim.SGD(
        [p for n, p in net.named_parameters() if not n.startswith("backbone.classifier.")],
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    augment = augmenter(config.size, config.channels)
    images = stream_images(
        config.kind,
        size=config.size,
        channels=config.channels,
        batch_size=config.batch_size,
        seed=config.seed,
    )
    history = []
    start = time.time()
    net.train()
    for step in range(config.steps):
        for group in opt.param_groups:  # cosine decay to 0
            group["lr"] = 0.5 * config.lr * (1 + math.cos(math.pi * step / config.steps))
        batch = torch.from_numpy(next(images)).permute(0, 3, 1, 2)
        x1, x2 = two_views(batch, augment)
        z1, z2 = net(x1), net(x2)
        align = align_loss(z1, z2)
        uniform = (uniform_loss(z1) + uniform_loss(z2)) / 2
        loss = align + config.uniformity_weight * uniform
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == config.steps - 1:
            history.append(
                {
                    "step": step,
                    "align": float(align.detach()),
                    "uniform": float(uniform.detach()),
                    "seconds": round(time.time() - start, 1),
                }
            )
            if progress:
                print(
                    f"phase I step {step}: align {history[-1]['align']:.3f} "
                    f"uniform {history[-1]['uniform']:.3f}",
                    flush=True,
                )
    return save_public_init(
        out,
        backbone,
        model_name=config.model,
        image_shape=shape,
        learned_from=f"{config.steps * config.batch_size} random-process images "
        f"({config.kind}); no real data",
        with_head=False,
        config=asdict(config),
        history=history,
    )
