"""DP-PCA and Laplace counts: noise scales statistically, sensitivities on neighbouring data."""

import math

import numpy as np
import pytest
from dp_accounting import dp_event

from dpal.core.errors import DpalError
from dpal.privacy.accounting import epsilon
from dpal.privacy.mechanisms import (
    calibrate_gaussian,
    clip_rows,
    dp_pca_components,
    dp_second_moment,
    laplace_counts,
)


@pytest.mark.parametrize("eps", [0.1, 0.4, 1.0, 3.0])
def test_analytic_gaussian_matches_dp_accounting(eps):
    sigma = calibrate_gaussian(epsilon=eps, delta=1e-5)
    got = epsilon(dp_event.GaussianDpEvent(sigma), delta=1e-5, accountant="pld")
    assert got <= eps + 1e-9 and got == pytest.approx(eps, rel=1e-6)
    # the classic formula (valid only for ε < 1) would give a different σ; we never use it
    classic = math.sqrt(2 * math.log(1.25 / 1e-5)) / eps
    assert sigma < classic


def test_second_moment_noise_is_symmetric_with_the_right_scale():
    rng = np.random.default_rng(0)
    x = np.zeros((5, 40))
    noisy = dp_second_moment(x, noise_multiplier=2.5, rng=rng)
    assert np.allclose(noisy, noisy.T)
    upper = noisy[np.triu_indices(40)]  # 820 independent draws
    assert upper.std() == pytest.approx(2.5, rel=4.5 / math.sqrt(2 * len(upper)))
    assert abs(upper.mean()) < 4.5 * 2.5 / math.sqrt(len(upper))


def test_second_moment_sensitivity_on_neighbouring_datasets():
    rng = np.random.default_rng(1)
    for _ in range(200):
        d = np.concatenate([rng.normal(size=(30, 8)) * rng.uniform(0.1, 3)])
        extra = rng.normal(size=(1, 8)) * rng.uniform(0.1, 5)
        a = clip_rows(d).T @ clip_rows(d)
        b = clip_rows(np.vstack([d, extra])).T @ clip_rows(np.vstack([d, extra]))
        released = np.triu_indices(8)
        assert np.linalg.norm((a - b)[released]) <= 1.0 + 1e-12


def test_dp_pca_recovers_a_dominant_direction():
    rng = np.random.default_rng(2)
    direction = np.eye(6)[2]
    x = rng.normal(size=(5000, 1)) * direction * 0.9 + rng.normal(size=(5000, 6)) * 0.05
    comps = dp_pca_components(x, 1, noise_multiplier=5.0, rng=3)
    assert abs(comps[:, 0] @ direction) > 0.99


def test_laplace_scale_is_sensitivity_over_epsilon():
    counts = np.zeros(200_000)
    noisy = laplace_counts(counts, epsilon=0.5, sensitivity=2.0, rng=0)
    b = 2.0 / 0.5  # not ε, not 1/Δ
    assert noisy.std() == pytest.approx(math.sqrt(2) * b, rel=0.02)
    assert np.median(np.abs(noisy)) == pytest.approx(b * math.log(2), rel=0.02)
    with pytest.raises(DpalError, match="epsilon_support"):
        laplace_counts(counts, epsilon=0.0, sensitivity=1.0, rng=0)
