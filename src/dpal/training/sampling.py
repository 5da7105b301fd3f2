"""Poisson sampling: each example joins each batch independently with probability ``q``.

This is the sampling that ``PoissonSampledDpEvent`` accounts for — not shuffling into
fixed-size batches, whose privacy is worse than the Poisson analysis claims (Chua et al. 2024).
Batches therefore vary in size, and can be empty.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from dpal.privacy.accounting import check_sample_rate


def poisson_batches(
    n: int, *, sample_rate: float, steps: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Yield ``steps`` index tensors; index ``i`` is in each with probability ``sample_rate``."""
    check_sample_rate(sample_rate)
    for _ in range(steps):
        mask = torch.rand(n, generator=generator) < sample_rate
        yield mask.nonzero(as_tuple=True)[0]


def shuffled_batches(
    n: int, *, batch_size: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """One pass of shuffled fixed-size batches — for non-private training only."""
    order = torch.randperm(n, generator=generator)
    yield from order.split(batch_size)
