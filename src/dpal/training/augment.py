"""Data augmentation for DP-SGD with augmentation multiplicity (De et al. 2022).

Each example in a batch is turned into ``copies`` randomly shifted (and optionally flipped)
versions; the per-example gradient is the mean over its copies, *then* clipped. The clipped
quantity is still one example's contribution, so the sensitivity — and the accounting — are
unchanged; only compute grows with ``copies``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

AUGMENTATIONS = ("none", "shift", "shift-flip")


def augment_copies(
    x: torch.Tensor, *, copies: int, kind: str, max_shift: int, generator: torch.Generator
) -> torch.Tensor:
    """``[b·copies, c, h, w]``: ``copies`` augmented versions of each image, example-major."""
    if kind not in AUGMENTATIONS:
        raise ValueError(f"augmentation must be one of {AUGMENTATIONS}, got {kind!r}")
    xr = x.repeat_interleave(copies, 0) if copies > 1 else x
    if kind == "none" or len(xr) == 0:
        return xr
    n, _, h, w = xr.shape
    s = max_shift
    padded = F.pad(xr, (s, s, s, s), mode="reflect") if s else xr
    offsets = torch.randint(0, 2 * s + 1, (2, n), generator=generator).to(x.device)
    rows = offsets[0][:, None] + torch.arange(h, device=x.device)  # [n, h]
    cols = offsets[1][:, None] + torch.arange(w, device=x.device)  # [n, w]
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # [n,c,h,w]
    if kind == "shift-flip":
        flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        out = torch.where(flip[:, None, None, None], out.flip(3), out)
    return out.contiguous()
