"""Where the privacy noise comes from: fresh OS entropy by default, a seed only when asked.

A noise generator seeded from the run's ``--seed`` (stored in every released summary) lets
whoever reads the release regenerate each noise draw and subtract it: for that reader the
Gaussian mechanism adds nothing. So noise generators are seeded from the operating system's
entropy pool (:mod:`secrets`) unless the user asks for bit-reproducible experiments
(``deterministic=True``, ``--deterministic-noise``); the ledger records which was used for each
release. Sampling, initialisation and augmentation may stay seeded: knowing which examples
were sampled does not undo the noise, and the analysis assumes the sampling is random, not
secret. (The generators themselves are PyTorch's and NumPy's — not cryptographically secure;
``secure=True``, ``--secure-noise``, draws every noise value from the OS CSPRNG instead, with
constructions safe from floating-point attacks: ``dpal.privacy.secure_noise``.)
"""

from __future__ import annotations

import secrets
from typing import Literal

import numpy as np
import torch

from dpal.core.errors import DpalError
from dpal.privacy.secure_noise import SecureNoise, discrete_laplace_scale

OS_ENTROPY = "os-entropy"
SEEDED = "seeded (--deterministic-noise: reproducible by anyone who knows the seed)"
SECURE = (
    "os-csprng (--secure-noise: every draw from os.urandom; Gaussian = sum of 4 Box-Muller "
    "draws / 2; Laplace = exact discrete Laplace on integer counts)"
)
TorchNoise = torch.Generator | SecureNoise
NumpyNoise = np.random.Generator | SecureNoise


def check_mode(*, deterministic: bool, secure: bool) -> None:
    if deterministic and secure:
        raise DpalError(
            "--secure-noise and --deterministic-noise exclude each other: drop one of them."
        )


def source(deterministic: bool, secure: bool = False) -> str:
    """The ledger's description of the noise source."""
    check_mode(deterministic=deterministic, secure=secure)
    return SECURE if secure else SEEDED if deterministic else OS_ENTROPY


def torch_noise_generator(
    *, deterministic: bool, seed: int, device: str | torch.device = "cpu", secure: bool = False
) -> TorchNoise:
    """A generator for DP noise: ``seed`` when ``deterministic``, else 63 bits of OS entropy;
    with ``secure``, the OS CSPRNG for every draw."""
    check_mode(deterministic=deterministic, secure=secure)
    if secure:
        return SecureNoise()
    gen = torch.Generator(device=device)
    return gen.manual_seed(seed if deterministic else secrets.randbits(63))


def numpy_noise_rng(*, deterministic: bool, seed: int, secure: bool = False) -> NumpyNoise:
    """A NumPy generator for DP noise (DP-PCA, Laplace counts), seeded as above."""
    check_mode(deterministic=deterministic, secure=secure)
    if secure:
        return SecureNoise()
    if deterministic:
        return np.random.default_rng(np.random.SeedSequence([seed, 0x6E6F697365]))  # "noise"
    return np.random.default_rng(secrets.randbits(128))


def randn(
    noise: TorchNoise, shape: torch.Size | tuple[int, ...], *, dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:  # fmt: skip
    """Standard normal noise of ``shape`` from either kind of source."""
    if isinstance(noise, SecureNoise):
        return noise.randn(shape, dtype=dtype, device=device)
    return torch.randn(shape, generator=noise, dtype=dtype, device=device)


def as_numpy_noise(rng: NumpyNoise | int | None) -> NumpyNoise:
    """``rng`` as a noise source: a SecureNoise stays one, anything else goes to default_rng."""
    return rng if isinstance(rng, SecureNoise) else np.random.default_rng(rng)


def laplace_entry(
    *, discrete: bool, epsilon: float, sensitivity: float
) -> tuple[Literal["laplace", "discrete-laplace"], dict[str, float]]:
    """The ledger kind and parameters of ``laplace_counts``: the continuous Laplace
    (dp_accounting's parameter: scale / Δ₁ = 1/ε), or — ``discrete``, what a SecureNoise source
    draws — the discrete Laplace at the scale it actually uses."""
    if discrete:
        scale = discrete_laplace_scale(epsilon, int(sensitivity))
        return "discrete-laplace", {"scale": float(scale), "sensitivity": float(sensitivity)}
    return "laplace", {"noise_multiplier": 1.0 / epsilon}
