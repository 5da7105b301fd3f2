"""DP-friendly networks with GroupNorm (BatchNorm would mix examples in a batch and break
per-example clipping): a small CNN for the CPU recipe and WRN-16-4 for the full DP-RandP recipe
(Tang et al. 2023; De et al. 2022 use the same family).

Both expose ``embed(x)`` (the features a linear probe reads) and a last ``nn.Linear`` head named
``classifier``, which is what gets replaced when weights are reused for another task. Between
the two sits a fixed :class:`FeatureStandardization` (identity unless set; see
:mod:`dpal.models.standardize`).
"""

from __future__ import annotations

import torch
from torch import nn


class FeatureStandardization(nn.Module):
    """``(f − shift) / scale`` per feature, with fixed buffers (not trained, saved in checkpoints).

    Why: features read after ReLU and average pooling share a large positive offset (on MNIST
    the spread between images is ~7% of it), so under per-example clipping most of each
    example's clipped gradient of the head is spent on that common offset and the noise, whose
    norm does not shrink, swamps the part that tells classes apart. Removing the offset with
    statistics that involve no private data keeps the network's function class and fixes the
    conditioning. Checkpoints written before this module existed load as the identity.
    """

    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("shift", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return (f - self.shift) / self.scale

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("shift", "scale"):  # older checkpoints: the identity
            state_dict.setdefault(prefix + name, getattr(self, name).clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _gn(channels: int, affine: bool = True) -> nn.GroupNorm:
    return nn.GroupNorm(min(16, channels // 4) or 1, channels, affine=affine)


class SmallGNCNN(nn.Module):
    """Three stages of two 3×3 convolutions (GroupNorm, ReLU) with 2× average pooling between,
    global average pooling, and a linear head: 73 k parameters at width 16 (the default)."""

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (3, 32, 32),
        num_classes: int = 10,
        width: int = 16,
    ) -> None:
        super().__init__()
        c = image_shape[0]
        layers: list[nn.Module] = []
        widths = (width, 2 * width, 4 * width)
        for stage, w in enumerate(widths):
            # GroupNorm without a learned affine (the conv biases shift anyway): every trainable
            # parameter is then a Conv2d or Linear one, which the fast per-example engine
            # (dpal.training.layer_grads) handles — 2–3× faster than torch.func here.
            layers += [nn.Conv2d(c, w, 3, padding=1), _gn(w, affine=False), nn.ReLU()]
            layers += [nn.Conv2d(w, w, 3, padding=1), _gn(w, affine=False), nn.ReLU()]
            if stage < len(widths) - 1:
                layers.append(nn.AvgPool2d(2))
            c = w
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.feature_dim = widths[-1]
        self.standardize = FeatureStandardization(self.feature_dim)
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.standardize(self.embed(x)))


class _WideBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = _gn(c_in), nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm2, self.conv2 = _gn(c_out), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = (
            nn.Conv2d(c_in, c_out, 1, stride, bias=False) if stride != 1 or c_in != c_out else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = torch.relu(self.norm1(x))
        y = self.conv1(o)
        y = self.conv2(torch.relu(self.norm2(y)))
        return y + (self.shortcut(o) if self.shortcut is not None else x)


class WideResNet(nn.Module):
    """WRN-depth-k with GroupNorm (pre-activation blocks), e.g. WRN-16-4: 2.7 M parameters."""

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (3, 32, 32),
        num_classes: int = 10,
        depth: int = 16,
        widen: int = 4,
    ) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4, got {depth}.")
        n = (depth - 4) // 6
        widths = (16, 16 * widen, 32 * widen, 64 * widen)
        layers: list[nn.Module] = [nn.Conv2d(image_shape[0], widths[0], 3, 1, 1, bias=False)]
        c = widths[0]
        for stage, w in enumerate(widths[1:]):
            for i in range(n):
                layers.append(_WideBlock(c, w, 2 if (i == 0 and stage > 0) else 1))
                c = w
        layers += [_gn(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.feature_dim = c
        self.standardize = FeatureStandardization(c)
        self.classifier = nn.Linear(c, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.standardize(self.embed(x)))
