"""Noise for ``--secure-noise``: every draw from the operating system's CSPRNG, and constructions
that do not hand floating point an attack.

The default noise generators (``dpal.privacy.noise_source``) are seeded from OS entropy but are
PyTorch's and NumPy's — Mersenne Twister / PCG64, predictable from enough of their output, and
their Laplace and Gaussian samplers are floating-point transforms whose outputs have gaps an
attacker can read (Mironov 2012 for the Laplace; Jin et al. 2022 for Box–Muller and polar
Gaussians). In secure mode:

* **Uniforms** are 53-bit fractions of 64-bit words from :func:`os.urandom` (the kernel's
  CSPRNG): ``(k + ½)·2⁻⁵³`` for ``k`` uniform on ``{0, …, 2⁵³−1}``, so never 0 or 1.
* **Gaussian** (DP-SGD, AdaMix, DP-PCA): each released coordinate is the sum of four independent
  Box–Muller draws of N(0, σ²), computed in float64, divided by 2 — N(0, σ²) in distribution.
  Summing several draws (Holohan & Braghin 2021, the construction of Opacus's ``secure_mode``)
  fills the floating-point support, so the output no longer reveals which draw produced it
  (the attack of Jin et al. needs exactly that). What this is not: a proof — no library has an
  exact-DP floating-point Gaussian; the discrete Gaussian on a grid (Canonne, Kamath & Steinke
  2020) would be one, at the price of discretising the gradient and re-deriving its sensitivity.
* **Laplace** (NearPrivate's density and support counts — integers with an integer L1
  sensitivity Δ): the *discrete* Laplace mechanism, exact in integer arithmetic. Noise Z on ℤ
  with P(Z = z) ∝ exp(−|z|/t), t = Δ/ε rounded *up* to a multiple of 2⁻²⁰. For integer vectors
  c, c' with ‖c − c'‖₁ ≤ Δ and any integer output v:
  P(c + Z = v) / P(c' + Z = v) = exp(Σ_j (|v_j − c'_j| − |v_j − c_j|)/t) ≤ exp(Δ/t) ≤ e^ε.
  Sampled by Algorithm 2 of Canonne, Kamath & Steinke (2020) with Bernoulli(exp(−γ)) coins built
  from uniform *integers* only; the released counts are integers, so there is no float support
  to read. Its ledger event is ``DiscreteLaplaceDpEvent(1/t, Δ)`` (its PLD puts more mass at ±ε
  than the continuous Laplace's, so recording it as a continuous Laplace would under-count
  under composition at δ > 0).

Cost: os.urandom is a system call per block; the benchmark (``benchmarks/dpsgd_throughput.py
--secure-noise``) measures what it costs a DP-SGD step.
"""

from __future__ import annotations

import math
import os
import secrets
from fractions import Fraction

import numpy as np
import torch

from dpal.core.errors import DpalError

GAUSSIAN_DRAWS = 4  # summed, divided by √4 = 2 (Holohan & Braghin 2021; Opacus's secure_mode)
SCALE_GRID = 1 << 20  # the discrete Laplace scale t is a multiple of 2⁻²⁰, rounded up


def uniforms(n: int) -> np.ndarray:
    """``n`` float64 uniforms in (0, 1) from the OS CSPRNG: (k + ½)·2⁻⁵³, k on 53 bits."""
    words = np.frombuffer(os.urandom(8 * n), dtype=np.uint64) >> np.uint64(11)
    return (words.astype(np.float64) + 0.5) * 2.0**-53


def _box_muller(n: int) -> np.ndarray:
    """``n`` standard normal float64 draws (Box–Muller on CSPRNG uniforms)."""
    half = (n + 1) // 2
    u1, u2 = uniforms(half), uniforms(half)
    radius = np.sqrt(-2.0 * np.log(u1))
    angle = 2.0 * math.pi * u2
    return np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:n]


def standard_normal(n: int) -> np.ndarray:
    """``n`` N(0, 1) float64 draws, each the sum of four Box–Muller draws over 2."""
    total = np.zeros(n)
    for _ in range(GAUSSIAN_DRAWS):
        total += _box_muller(n)
    return total / math.sqrt(GAUSSIAN_DRAWS)


# -- the discrete Laplace, exact (integers only: no Fraction objects, which cost 5× here) -------
def _bernoulli_exp_at_most_one(num: int, den: int) -> bool:
    """Bernoulli(exp(−γ)) for γ = num/den ∈ [0, 1]: draw A_k ~ Bernoulli(γ/k), k = 1, 2, … until
    the first 0; its index is odd with probability exp(−γ) (CKS 2020, Prop. 5)."""
    k = 1
    while secrets.randbelow(den * k) < num:
        k += 1
    return k % 2 == 1


def _bernoulli_exp(num: int, den: int) -> bool:
    """Bernoulli(exp(−num/den)) for any num/den ≥ 0: ⌊γ⌋ coins of exp(−1), then one more."""
    for _ in range(num // den):
        if not _bernoulli_exp_at_most_one(1, 1):
            return False
    return _bernoulli_exp_at_most_one(num % den, den)


def discrete_laplace_one(scale: Fraction) -> int:
    """One draw of Z with P(Z = z) ∝ exp(−|z|/scale), scale = s/t (CKS 2020, Algorithm 2)."""
    s, t = scale.numerator, scale.denominator  # exp(−|z|·t/s): geometric in units of 1/s
    while True:
        u = secrets.randbelow(s)
        if not _bernoulli_exp(u, s):
            continue
        v = 0
        while _bernoulli_exp_at_most_one(1, 1):
            v += 1
        x = (u + s * v) // t  # P(x) ∝ exp(−x·t/s)
        negative = secrets.randbelow(2) == 1
        if negative and x == 0:
            continue  # else 0 would be counted twice
        return -x if negative else x


def discrete_laplace_scale(epsilon: float, sensitivity: int) -> Fraction:
    """t = Δ/ε rounded up to the grid (a larger scale: the mechanism stays ε-DP)."""
    return Fraction(math.ceil(sensitivity * SCALE_GRID / epsilon), SCALE_GRID)


def discrete_laplace(n: int, scale: Fraction) -> np.ndarray:
    return np.array([discrete_laplace_one(scale) for _ in range(n)], dtype=np.int64)


class SecureNoise:
    """The noise source of ``--secure-noise``, usable where dpal takes a noise generator.

    Torch side: :meth:`randn` (DP-SGD's and AdaMix's Gaussian). NumPy side: :meth:`normal`
    (DP-PCA), :meth:`integers` (seeds for public computations), and the discrete Laplace used by
    ``dpal.privacy.mechanisms.laplace_counts`` when it is handed this source.
    """

    def randn(
        self, shape: torch.Size | tuple[int, ...], *, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        n = math.prod(shape)
        return torch.from_numpy(standard_normal(n)).reshape(shape).to(dtype=dtype, device=device)

    def normal(self, loc: float, scale: float, size: int | tuple[int, ...]) -> np.ndarray:
        shape = (size,) if isinstance(size, int) else tuple(size)
        return loc + scale * standard_normal(math.prod(shape)).reshape(shape)

    def integers(self, high: int) -> int:
        return secrets.randbelow(int(high))

    def discrete_laplace_counts(
        self, counts: np.ndarray, *, epsilon: float, sensitivity: float
    ) -> np.ndarray:
        """Integer ``counts`` + discrete Laplace noise of scale ⌈Δ/ε⌉ (grid 2⁻²⁰) on each."""
        counts = np.asarray(counts)
        if not np.all(counts == np.round(counts)) or sensitivity != int(sensitivity):
            raise DpalError(
                "secure noise adds discrete Laplace noise, which needs integer counts and an "
                "integer sensitivity; run without --secure-noise for real-valued statistics."
            )
        scale = discrete_laplace_scale(epsilon, int(sensitivity))
        noise = discrete_laplace(counts.size, scale).reshape(counts.shape)
        return (np.round(counts).astype(np.int64) + noise).astype(np.float64)
