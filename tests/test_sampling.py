import math

import pytest
import torch

from dpal.training.sampling import poisson_batches, shuffled_batches


def test_poisson_batch_sizes_are_binomial():
    n, q, steps = 2000, 0.05, 400
    sizes = torch.tensor(
        [
            len(b)
            for b in poisson_batches(
                n, sample_rate=q, steps=steps, generator=torch.Generator().manual_seed(0)
            )
        ],
        dtype=torch.float64,
    )
    mean, var = n * q, n * q * (1 - q)
    assert sizes.mean().item() == pytest.approx(mean, abs=4.5 * math.sqrt(var / steps))
    # the variance of a sample variance of a near-normal variable is 2σ⁴/(steps-1)
    assert sizes.var().item() == pytest.approx(var, abs=4.5 * var * math.sqrt(2 / (steps - 1)))


def test_each_example_is_included_independently_with_probability_q():
    n, q, steps = 50, 0.2, 4000
    counts = torch.zeros(n)
    for b in poisson_batches(
        n, sample_rate=q, steps=steps, generator=torch.Generator().manual_seed(1)
    ):
        counts[b] += 1
    sd = math.sqrt(steps * q * (1 - q))
    assert torch.all((counts - steps * q).abs() < 4.5 * sd)


def test_same_seed_same_batches_and_shuffle_covers_all():
    a = list(
        poisson_batches(100, sample_rate=0.1, steps=5, generator=torch.Generator().manual_seed(3))
    )
    b = list(
        poisson_batches(100, sample_rate=0.1, steps=5, generator=torch.Generator().manual_seed(3))
    )
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    order = torch.cat(list(shuffled_batches(103, batch_size=10, generator=torch.Generator())))
    assert sorted(order.tolist()) == list(range(103))
