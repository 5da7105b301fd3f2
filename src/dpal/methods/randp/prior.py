"""Phase I of DP-RandP: representation learning on random-process images only.

Contrastive learning with the alignment + uniformity objective of Wang & Isola (2020), as the
DP-RandP reference uses: two augmented views of each synthetic image pass through the network's
features and a projection head onto the unit sphere;

    loss = E‖f(x) − f(x⁺)‖²  +  ½ [log E exp(−2‖f(x) − f(y)‖²)  for each view's batch]

pulls the views of an image together and spreads all images over the sphere. Augmentations: random
resized crop, horizontal flip, colour jitter, random grayscale (drawn per image, applied per batch).

No privacy cost and nothing in any ledger: no real data is read at all. The learned weights are
saved in the format of ``TrainConfig.init`` (every layer but the head), so DP training starts from
them like from any public initialisation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dpal.core.errors import DpalError
from dpal.data.random_process import KINDS, stream_images
from dpal.models.public_init import head_name, save_public_init
from dpal.models.registry import build_model


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
    # None: every step draws fresh images from the stream. A number: that many images are drawn
    # once and revisited (as Baradad et al.'s fixed datasets are) — generating dead leaves costs
    # more than a training step on 2 CPU cores, so a pool makes a CPU prior ~2× cheaper.
    pool: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DpalError(f"unknown random process {self.kind!r}; choose one of {KINDS}.")
        if self.steps < 1 or self.batch_size < 2 or not self.lr > 0:
            raise DpalError("phase I needs steps ≥ 1, batch size ≥ 2 and lr > 0.")
        if self.pool is not None and self.pool < self.batch_size:
            raise DpalError(f"pool ({self.pool}) must hold at least one batch ({self.batch_size}).")


def _batches(config: PriorConfig) -> Iterator[np.ndarray]:
    """uint8 N×H×W×C batches of random-process images: streamed, or drawn from a pool."""
    stream = stream_images(
        config.kind,
        size=config.size,
        channels=config.channels,
        batch_size=config.batch_size,
        seed=config.seed,
    )
    if config.pool is None:
        yield from stream
        return
    pool = np.empty((config.pool, config.size, config.size, config.channels), np.uint8)
    for start in range(0, config.pool, config.batch_size):
        batch = next(stream)[: config.pool - start]
        pool[start : start + len(batch)] = batch
    rng = np.random.default_rng(config.seed)
    while True:
        yield pool[rng.choice(config.pool, config.batch_size, replace=False)]


def align_loss(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    return (z1 - z2).pow(2).sum(dim=1).mean()


def uniform_loss(z: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    return torch.pdist(z).pow(2).mul(-t).exp().mean().log()


class BatchAugment:
    """SimCLR's augmentations — random resized crop (area 0.2–1, aspect 3/4–4/3), horizontal
    flip, colour jitter (p = 0.8: brightness, contrast, saturation 0.4, hue 0.1) and random
    grayscale (p = 0.2) — drawn independently per image but applied to the whole batch at once.

    Written here rather than taken from torchvision's v2 transforms because those run image by
    image: for two views of 128 images at 32×32 on 2 CPU cores the per-image loop takes 0.11 s,
    about half a Phase I training step, and this 0.012 s (``benchmarks/randp_augment.py``).
    Crops are bilinear-resampled with :func:`torchvision.ops.roi_align` (which averages over each
    output pixel's footprint, so downscaling is anti-aliased); hue is a rotation of the YIQ chroma
    plane.
    """

    _YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])

    def __init__(self, size: int, channels: int, *, min_area: float = 0.2) -> None:
        self.size, self.channels, self.min_area = size, channels, min_area

    def __call__(self, batch: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        """uint8 N×C×H×W → float N×C×size×size in [0, 1]."""
        from torchvision.ops import roi_align

        x = batch.float() / 255
        n, _, h, w = x.shape

        def u(low: float, high: float, *shape: int) -> torch.Tensor:
            return low + (high - low) * torch.rand(n, *shape, generator=gen)

        area = u(self.min_area, 1.0) * h * w
        aspect = torch.exp(u(math.log(3 / 4), math.log(4 / 3)))
        cw = torch.sqrt(area * aspect).clamp(1, w)
        ch = torch.sqrt(area / aspect).clamp(1, h)
        x0, y0 = u(0, 1) * (w - cw), u(0, 1) * (h - ch)
        boxes = torch.stack([torch.arange(n, dtype=x.dtype), x0, y0, x0 + cw, y0 + ch], dim=1)
        x = roi_align(x, boxes, self.size, aligned=True)
        flip = u(0, 1) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        jitter = (u(0, 1) < 0.8)[:, None, None, None]
        x = torch.where(jitter, self._jitter(x, u), x)
        if self.channels == 3:
            grayscale = (u(0, 1) < 0.2)[:, None, None, None]
            x = torch.where(grayscale, self._luma(x).expand_as(x), x)
        return x.clamp(0, 1)

    def _jitter(self, x: torch.Tensor, u: Any) -> torch.Tensor:
        x = (x * u(0.6, 1.4, 1, 1, 1)).clamp(0, 1)  # brightness
        gray = x.mean(1, keepdim=True) if self.channels == 1 else self._luma(x)
        mean = gray.mean(dim=(2, 3), keepdim=True)
        x = ((x - mean) * u(0.6, 1.4, 1, 1, 1) + mean).clamp(0, 1)  # contrast
        if self.channels == 1:
            return x
        gray = self._luma(x)
        x = ((x - gray) * u(0.6, 1.4, 1, 1, 1) + gray).clamp(0, 1)  # saturation
        yiq = torch.einsum("ij,njhw->nihw", self._YIQ, x)
        theta = u(-0.1, 0.1) * 2 * math.pi
        c, s = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
        i, q = yiq[:, 1], yiq[:, 2]
        yiq = torch.stack([yiq[:, 0], c * i - s * q, s * i + c * q], dim=1)
        return torch.einsum("ij,njhw->nihw", torch.linalg.inv(self._YIQ), yiq)

    def _luma(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self._YIQ[0].view(1, 3, 1, 1)).sum(1, keepdim=True)


def augmenter(size: int, channels: int) -> BatchAugment:
    return BatchAugment(size, channels)


def two_views(batch: torch.Tensor, augment: BatchAugment) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independently augmented views of each uint8 N×C×H×W image, mapped to [-1, 1] like
    :meth:`~dpal.data.arrays.ImageArrays.tensors`."""
    return augment(batch) * 2 - 1, augment(batch) * 2 - 1


class Projector(nn.Module):
    def __init__(self, backbone: nn.Module, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.backbone: Any = backbone  # a dpal model with embed()
        self.head = nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(), nn.Linear(in_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.backbone.embed(x)), dim=1)


class LastLinearInput(nn.Module):
    """Any classifier ending in an ``nn.Linear`` as an embedder: ``embed(x)`` is what that layer
    receives (differentiable, unlike ``models.embedding``), ``feature_dim`` its width."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        last = model.get_submodule(head_name(model))
        assert isinstance(last, nn.Linear)
        self.last, self.feature_dim = last, last.in_features

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []
        handle = self.last.register_forward_pre_hook(lambda _m, inp: captured.append(inp[0]))
        try:
            self.model(x)
        finally:
            handle.remove()
        return captured[0].flatten(1)


def learn_prior(
    config: PriorConfig, out: str | Path, *, progress: bool = False, model: nn.Module | None = None
) -> dict[str, Any]:
    """Train ``config.model`` (or ``model``, your own classifier: its last ``nn.Linear``'s input
    is the representation) on streamed random-process images; save the weights of every layer
    but its classifier head to ``out`` (a ``.pt`` file loadable with ``TrainConfig.init``)."""
    torch.manual_seed(config.seed)
    shape = (config.channels, config.size, config.size)
    backbone: Any = model if model is not None else build_model(config.model, shape, 10)
    if not hasattr(backbone, "embed") or not hasattr(backbone, "feature_dim"):
        backbone = LastLinearInput(backbone)  # e.g. a user's own module
    net = Projector(backbone, int(backbone.feature_dim), config.projection_dim)
    target = backbone.model if isinstance(backbone, LastLinearInput) else backbone
    head = {id(p) for p in target.get_submodule(head_name(target)).parameters()}
    opt = torch.optim.SGD(
        [p for p in net.parameters() if id(p) not in head],  # the head is not part of a prior
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    augment = augmenter(config.size, config.channels)
    images = _batches(config)
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
        target,
        model_name=config.model,
        image_shape=shape,
        learned_from=f"{config.steps * config.batch_size} views of "
        f"{config.pool or config.steps * config.batch_size} random-process images "
        f"({config.kind}); no real data",
        with_head=False,
        config=asdict(config),
        history=history,
    )
