"""Images from random processes (no real data), the prior of DP-RandP (Tang et al. 2023), after
the generative families of Baradad et al. (2021, "Learning to See by Looking at Noise"):

- ``dead-leaves``: occluding random shapes — axis-aligned squares and oriented rectangles and
  ellipses — with sizes from a power law (p(r) ∝ r⁻³, scale-invariant like natural images) and
  random colours;
- ``spectrum``: coloured noise with a 1/f^α amplitude spectrum (α random per image) and random
  phases, the second-order statistics of natural images without their structure;
- ``stylegan-random``: a randomly initialised StyleGAN-like generator — constant noise at 4×4,
  then per stage a ×2 upsampling, a random 3×3 convolution, per-pixel noise, a random per-channel
  modulation and a leaky ReLU, then a random 1×1 convolution to colour. Every 16 images draw new
  random weights; the images of a group share them but not their noise.

Everything is seeded and streamed in batches (:func:`stream_images`), so a million images never
sit in memory. Images are uint8 N×H×W×C, as :class:`~dpal.data.arrays.ImageArrays` holds them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from dpal.core.errors import DpalError

Generator = Callable[[torch.Generator, int, int, int], torch.Tensor]  # (gen, n, size, ch) → [0,1]


def _uniform(gen: torch.Generator, *shape: int, low: float = 0.0, high: float = 1.0):
    return low + (high - low) * torch.rand(*shape, generator=gen)


def dead_leaves(gen: torch.Generator, n: int, size: int, channels: int) -> torch.Tensor:
    """n images N×C×H×W in [0, 1]: 96 occluding leaves each over a random background.

    All leaves are drawn at once and each pixel takes the colour of the last leaf covering it
    (the same picture as painting back to front, ~10× faster than a loop over leaves)."""
    leaves = 96
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    r_min, r_max = 0.03, 0.6
    u = _uniform(gen, n, leaves, 1, 1)  # inverse-CDF sample of p(r) ∝ r⁻³ on [r_min, r_max]
    r = (r_min**-2 - u * (r_min**-2 - r_max**-2)) ** -0.5
    cx = _uniform(gen, n, leaves, 1, 1, low=-0.1, high=1.1)
    cy = _uniform(gen, n, leaves, 1, 1, low=-0.1, high=1.1)
    shape = torch.randint(0, 3, (n, leaves, 1, 1), generator=gen)  # square, rectangle, ellipse
    angle = torch.where(shape == 0, 0.0, _uniform(gen, n, leaves, 1, 1, high=math.pi))
    aspect = torch.where(shape == 0, 1.0, _uniform(gen, n, leaves, 1, 1, low=0.3, high=1.0))
    dx, dy = xx - cx, yy - cy
    c, s = torch.cos(angle), torch.sin(angle)
    u_ = (c * dx + s * dy) / r
    v_ = (c * dy - s * dx) / (r * aspect)
    covered = torch.where(shape == 2, u_**2 + v_**2 <= 1, (u_.abs() <= 1) & (v_.abs() <= 1))
    # index of the last covering leaf; leaf 0 is the background, covering everything
    covered[:, 0] = True
    order = torch.arange(leaves).view(1, leaves, 1, 1)
    top = torch.where(covered, order, -1).amax(dim=1)  # n×H×W
    colours = _uniform(gen, n, leaves, channels)
    img = torch.gather(colours, 1, top.flatten(1)[..., None].expand(-1, -1, channels))
    return img.view(n, size, size, channels).permute(0, 3, 1, 2).contiguous()


def spectrum_noise(gen: torch.Generator, n: int, size: int, channels: int) -> torch.Tensor:
    """n images with amplitude ∝ 1/f^α, α ~ U(0.5, 2.5); colour from a random mixing matrix."""
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    f = torch.sqrt(fx**2 + fy**2).clamp_min(1.0 / size)
    alpha = _uniform(gen, n, 1, 1, 1, low=0.5, high=2.5)
    amplitude = f[None, None] ** -alpha
    phase = _uniform(gen, n, channels, size, size // 2 + 1, high=2 * math.pi)
    fields = torch.fft.irfft2(
        amplitude * torch.polar(torch.ones_like(phase), phase), s=(size, size)
    )
    if channels > 1:  # correlated colour channels, as in natural images
        mix = _uniform(gen, n, channels, channels, low=-0.3, high=1.0)
        mix = mix + torch.eye(channels)
        fields = torch.einsum("ncd,ndhw->nchw", mix, fields)
    return _to_unit(fields)


def stylegan_random(gen: torch.Generator, n: int, size: int, channels: int) -> torch.Tensor:
    """n images from randomly initialised StyleGAN-like generators (see the module doc), a new
    generator for every 16 images."""
    chunks = [min(16, n - k) for k in range(0, n, 16)]
    return torch.cat([_stylegan_one(gen, k, size, channels) for k in chunks])


def _stylegan_one(gen: torch.Generator, n: int, size: int, channels: int) -> torch.Tensor:
    width = 32
    x = torch.randn(n, width, 4, 4, generator=gen)
    res = 4
    while res < size:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        res *= 2
        w = torch.randn(width, width, 3, 3, generator=gen) / math.sqrt(width * 9)
        x = F.conv2d(x, w, padding=1)
        x = x + 0.3 * torch.randn(n, 1, res, res, generator=gen)  # per-pixel noise
        style = _uniform(gen, n, width, 1, 1, low=0.2, high=2.0)  # per-image modulation
        x = F.leaky_relu(x * style, 0.2)
        x = x / (x.std(dim=(1, 2, 3), keepdim=True) + 1e-6)
    rgb = torch.randn(channels, width, 1, 1, generator=gen) / math.sqrt(width)
    x = F.conv2d(x, rgb)
    if res != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return _to_unit(x)


def _to_unit(x: torch.Tensor) -> torch.Tensor:
    """Per image: 1st–99th percentile range mapped to [0, 1] (contrast like a photograph's)."""
    flat = x.flatten(1)
    lo = flat.quantile(0.01, dim=1)[:, None, None, None]
    hi = flat.quantile(0.99, dim=1)[:, None, None, None]
    return ((x - lo) / (hi - lo + 1e-8)).clamp(0, 1)


GENERATORS: dict[str, Generator] = {
    "dead-leaves": dead_leaves,
    "spectrum": spectrum_noise,
    "stylegan-random": stylegan_random,
}
KINDS = (*GENERATORS, "mixture")


def stream_images(
    kind: str = "mixture",
    *,
    size: int = 32,
    channels: int = 3,
    batch_size: int = 256,
    seed: int = 0,
) -> Iterator[np.ndarray]:
    """Endless uint8 batches (batch_size×size×size×channels). A ``mixture`` batch holds equal
    shares of every family in random order. Deterministic given the arguments."""
    if kind not in KINDS:
        raise DpalError(f"unknown random process {kind!r}; choose one of {', '.join(KINDS)}.")
    if size < 8 or channels not in (1, 3) or batch_size < 1:
        raise DpalError(
            f"images of size ≥ 8 with 1 or 3 channels in batches ≥ 1, got size {size}, "
            f"{channels} channels, batch {batch_size}."
        )
    gen = torch.Generator().manual_seed(seed)
    families = list(GENERATORS) if kind == "mixture" else [kind]
    while True:
        # A mixture batch holds every family, shuffled: contrastive learning spreads the images
        # of a batch apart, and a batch of one family only would never contrast families.
        counts = [len(part) for part in np.array_split(np.arange(batch_size), len(families))]
        pairs = zip(families, counts, strict=True)
        parts = [GENERATORS[f](gen, k, size, channels) for f, k in pairs if k]
        img = torch.cat(parts)[torch.randperm(batch_size, generator=gen)]
        yield (img.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()


def sample(kind: str, n: int, *, size: int = 32, channels: int = 3, seed: int = 0) -> np.ndarray:
    """The first ``n`` images of :func:`stream_images` (for grids and tests)."""
    out: list[np.ndarray] = []
    per_batch = max(1, min(256, n))
    for batch in stream_images(kind, size=size, channels=channels, batch_size=per_batch, seed=seed):
        out.append(batch)
        if sum(len(b) for b in out) >= n:
            break
    return np.concatenate(out)[:n]


def save_grid(images: np.ndarray, path: str, *, columns: int = 16) -> None:
    """A PNG of ``images`` (uint8 N×H×W×C) tiled in rows, for a person to look at."""
    from PIL import Image

    n, h, w, c = images.shape
    rows = math.ceil(n / columns)
    canvas = np.full((rows * (h + 2), columns * (w + 2), c), 255, np.uint8)
    for k, img in enumerate(images):
        r, q = divmod(k, columns)
        canvas[r * (h + 2) + 1 : r * (h + 2) + 1 + h, q * (w + 2) + 1 : q * (w + 2) + 1 + w] = img
    Image.fromarray(canvas[..., 0] if c == 1 else canvas).resize(
        (canvas.shape[1] * 3, canvas.shape[0] * 3), Image.Resampling.NEAREST
    ).save(path)
