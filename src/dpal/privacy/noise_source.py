"""Where the privacy noise comes from: fresh OS entropy by default, a seed only when asked.

A noise generator seeded from the run's ``--seed`` (stored in every released summary) lets
whoever reads the release regenerate each noise draw and subtract it: for that reader the
Gaussian mechanism adds nothing. So noise generators are seeded from the operating system's
entropy pool (:mod:`secrets`) unless the user asks for bit-reproducible experiments
(``deterministic=True``, ``--deterministic-noise``); the ledger records which was used for each
release. Sampling, initialisation and augmentation may stay seeded: knowing which examples
were sampled does not undo the noise, and the analysis assumes the sampling is random, not
secret. (The generators themselves are PyTorch's and NumPy's — not cryptographically secure.)
"""

from __future__ import annotations

import secrets

import numpy as np
import torch

OS_ENTROPY = "os-entropy"
SEEDED = "seeded (--deterministic-noise: reproducible by anyone who knows the seed)"


def source(deterministic: bool) -> str:
    """The ledger's description of the noise source."""
    return SEEDED if deterministic else OS_ENTROPY


def torch_noise_generator(
    *, deterministic: bool, seed: int, device: str | torch.device = "cpu"
) -> torch.Generator:
    """A generator for DP noise: ``seed`` when ``deterministic``, else 63 bits of OS entropy."""
    gen = torch.Generator(device=device)
    return gen.manual_seed(seed if deterministic else secrets.randbits(63))


def numpy_noise_rng(*, deterministic: bool, seed: int) -> np.random.Generator:
    """A NumPy generator for DP noise (DP-PCA, Laplace counts), seeded as above."""
    if deterministic:
        return np.random.default_rng(np.random.SeedSequence([seed, 0x6E6F697365]))  # "noise"
    return np.random.default_rng(secrets.randbits(128))
