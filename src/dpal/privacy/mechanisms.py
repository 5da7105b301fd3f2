"""Noise mechanisms on private statistics, each with its sensitivity derived here and tested on
neighbouring datasets (add/remove-one adjacency, as everywhere in dpal).

* :func:`dp_second_moment` — the Gaussian mechanism on XᵀX ("Analyze Gauss", Dwork, Talwar,
  Thakurta & Zhang 2014), for DP-PCA.
* :func:`laplace_counts` — the Laplace mechanism on a histogram.

Noise scales are calibrated with ``dp_accounting`` (``calibrate_gaussian``), never with the
classic σ = Δ√(2 ln(1.25/δ))/ε, which only holds for ε < 1.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, special

from dpal.core.errors import DpalError
from dpal.privacy.accounting import check_delta, check_epsilon
from dpal.privacy.noise_source import NumpyNoise, as_numpy_noise
from dpal.privacy.secure_noise import SecureNoise


def gaussian_delta(noise_multiplier: float, epsilon: float) -> float:
    """Exact δ(ε) of one Gaussian mechanism with σ/Δ = ``noise_multiplier`` (Balle & Wang 2018,
    Thm. 8): Φ(1/2σ − εσ) − e^ε Φ(−1/2σ − εσ); the second term in log space for large ε."""
    s = noise_multiplier
    first = special.ndtr(0.5 / s - epsilon * s)
    second = np.exp(epsilon + special.log_ndtr(-0.5 / s - epsilon * s))
    return float(first - second)


def calibrate_gaussian(*, epsilon: float, delta: float) -> float:
    """Smallest σ/Δ₂ for which one Gaussian mechanism is (ε, δ)-DP — the analytic Gaussian
    mechanism, solved by root finding on the exact δ(ε) (tested against dp_accounting's PLD)."""
    check_epsilon(epsilon)
    check_delta(delta)
    # δ(ε) decreases in σ; bracket on a log scale, then solve to relative precision 1e-10.
    f = lambda log_s: gaussian_delta(float(np.exp(log_s)), epsilon) - delta  # noqa: E731
    root = float(np.exp(optimize.brentq(f, np.log(1e-3), np.log(1e6), xtol=1e-12)))
    return root * (1 + 1e-9)  # on the safe side of the root


def clip_rows(x: np.ndarray, max_norm: float = 1.0) -> np.ndarray:
    """Scale each row down to L2 norm ≤ ``max_norm`` (rows already inside are unchanged)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x * np.minimum(1.0, max_norm / np.maximum(norms, 1e-12))


def dp_second_moment(
    x: np.ndarray, *, noise_multiplier: float, rng: NumpyNoise | int | None
) -> np.ndarray:
    """XᵀX + E for rows of X clipped to norm ≤ 1, E symmetric with i.i.d. N(0, σ²) entries on and
    above the diagonal (σ = ``noise_multiplier``).

    Sensitivity (add/remove-one): adding or removing a row x (‖x‖ ≤ 1 after clipping) changes
    XᵀX by ±x xᵀ. The mechanism releases the d(d+1)/2 entries on and above the diagonal; their
    change has L2 norm √(Σ_{i≤j} (x_i x_j)²) ≤ ‖x xᵀ‖_F = ‖x‖² ≤ 1. So Δ₂ = 1, and noise of
    standard deviation σ on each released entry is the Gaussian mechanism with multiplier σ
    (``GaussianDpEvent(σ)``). The entries below the diagonal are copies: post-processing.
    """
    rng = as_numpy_noise(rng)
    x = clip_rows(np.asarray(x, dtype=np.float64))
    d = x.shape[1]
    gram = x.T @ x
    noise = np.triu(rng.normal(0.0, noise_multiplier, (d, d)))
    return gram + noise + np.triu(noise, 1).T


def dp_pca_components(
    x: np.ndarray,
    n_components: int,
    *,
    noise_multiplier: float,
    rng: NumpyNoise | int | None,
) -> np.ndarray:
    """Top ``n_components`` eigenvectors (``[d, p]``) of the noisy second moment of ``x``."""
    if not 1 <= n_components <= x.shape[1]:
        raise DpalError(f"n_components must be in [1, {x.shape[1]}], got {n_components}.")
    noisy = dp_second_moment(x, noise_multiplier=noise_multiplier, rng=rng)
    values, vectors = np.linalg.eigh(noisy)  # ascending
    return vectors[:, np.argsort(values)[::-1][:n_components]]


def laplace_counts(
    counts: np.ndarray, *, epsilon: float, sensitivity: float, rng: NumpyNoise | int | None
) -> np.ndarray:
    """``counts`` + Laplace noise of scale Δ₁/ε on **every** count: ε-DP for a histogram whose
    L1 sensitivity is ``sensitivity`` (the scale is Δ/ε — not ε, not 1/Δ).

    With a :class:`~dpal.privacy.secure_noise.SecureNoise` source: the discrete Laplace of scale
    ⌈Δ/ε⌉ on integer counts instead (ε-DP, exact; ledger kind ``discrete-laplace``)."""
    check_epsilon(epsilon, "epsilon_support")
    if sensitivity <= 0:
        raise DpalError(f"sensitivity must be > 0, got {sensitivity}.")
    rng = as_numpy_noise(rng)
    if isinstance(rng, SecureNoise):
        return rng.discrete_laplace_counts(counts, epsilon=epsilon, sensitivity=sensitivity)
    return np.asarray(counts, dtype=np.float64) + rng.laplace(
        0.0, sensitivity / epsilon, np.shape(counts)
    )
