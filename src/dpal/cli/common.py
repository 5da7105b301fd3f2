"""Arguments shared by several commands."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any


def add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="dataset root (default: $DPAL_DATA, else ~/.cache/dpal)")


def add_deterministic_noise(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--deterministic-noise",
        action="store_true",
        help="noise from the seed, not OS entropy: bit-reproducible, but anyone who knows the "
        "seed can undo the noise (experiments only; recorded in the ledger)",
    )
    p.add_argument(
        "--secure-noise",
        action="store_true",
        help="every noise draw from the OS CSPRNG, Gaussian as a sum of four draws, Laplace as "
        "an exact discrete Laplace (floating-point safe; slower; recorded in the ledger)",
    )


def noise_from_seed(config: Any, a: argparse.Namespace) -> Any:
    """``config`` whose DP training (and NearPrivate) draws noise from the seed, or from the OS
    CSPRNG, if asked."""
    if not (a.deterministic_noise or a.secure_noise):
        return config
    return replace(
        config,
        train=replace(
            config.train, deterministic_noise=a.deterministic_noise, secure_noise=a.secure_noise
        ),
    )
