"""Empirical lower bounds on ε: what an attack *demonstrates*, to set beside what the accountant
*claims*. An audit bound above the claim means the mechanism that ran is not the one accounted
(a bug to fix); a bound below it is consistent with the claim — not a proof of it.

Two tests, both valid at the stated confidence whatever the attack:

* :func:`one_run_epsilon` — Steinke, Nasr & Jagielski (2023), "Privacy auditing with one (1)
  training run", Theorem 3.1 with its δ term (their Appendix D). m canaries, each included
  independently with probability ½; the auditor guesses in/out for r of them and is right v
  times. Under (ε, δ)-DP, P[v correct] ≤ P[Binomial(r, e^ε/(1+e^ε)) ≥ v] + 2mδ·α, where α is
  the largest ratio P[v > Binomial ≥ v − i]/i over i ≥ 1. The bound is the largest ε whose
  p-value is still below 1 − confidence.
* :func:`two_sets_epsilon` — neighbouring datasets D and D′, the mechanism run many times on
  each, one output event E: Clopper–Pearson intervals on P_D(E) and P_D′(E) give
  ε ≥ ln((P_D′(E) − δ) / P_D(E)) with the lower end of one and the upper end of the other
  (each at half of 1 − confidence, so the bound holds at ``confidence``).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, stats

from dpal.core.errors import DpalError


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise DpalError(f"confidence must be in (0, 1), got {confidence}.")


def one_run_p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """P[≥ v of r guesses right] under (ε, δ)-DP with m canaries (Steinke et al. 2023)."""
    if not 0 <= v <= r <= m:
        raise DpalError(f"need 0 ≤ correct ≤ guesses ≤ canaries, got {v}, {r}, {m}.")
    q = 1.0 / (1.0 + math.exp(-epsilon))  # accuracy of ε-DP randomised response
    tail = float(stats.binom.sf(v - 1, r, q))
    if delta == 0 or v == 0:
        return min(1.0, tail)
    below = np.cumsum(stats.binom.pmf(v - np.arange(1, v + 1), r, q))  # P[v > B ≥ v − i]
    alpha = float(np.max(below / np.arange(1, v + 1)))
    return min(1.0, tail + 2 * m * delta * alpha)


def one_run_epsilon(m: int, r: int, v: int, *, delta: float, confidence: float) -> float:
    """The largest ε that ``v`` right guesses of ``r`` rule out at ``confidence`` (0 if none)."""
    _check_confidence(confidence)
    beta = 1 - confidence
    if one_run_p_value(m, r, v, 0.0, delta) >= beta:
        return 0.0
    high = 1.0
    while one_run_p_value(m, r, v, high, delta) < beta:
        high *= 2
        if high > 100:
            return math.inf
    f = lambda eps: one_run_p_value(m, r, v, eps, delta) - beta  # noqa: E731
    return float(optimize.brentq(f, 0.0, high, xtol=1e-6))


def guess_counts(m: int) -> list[int]:
    """Fixed in advance, so the audit tests a handful of hypotheses (Bonferroni), not one per
    threshold it could have picked: the r most confident guesses, r ∈ {5, 10, 20, 50, 100}% of m."""
    return sorted({min(m, max(2, round(m * f))) for f in (0.05, 0.1, 0.2, 0.5, 1.0)})


def one_run_audit(
    scores: np.ndarray, included: np.ndarray, *, delta: float, confidence: float
) -> dict[str, float]:
    """Guess the r/2 highest-scoring canaries in and the r/2 lowest out, for each r of
    :func:`guess_counts`; the best bound, each at confidence 1 − (1 − confidence)/#r."""
    scores, included = np.asarray(scores, dtype=np.float64), np.asarray(included, dtype=bool)
    m = len(scores)
    order = np.argsort(-scores, kind="stable")
    counts = guess_counts(m)
    per_test = 1 - (1 - confidence) / len(counts)
    best = {"epsilon_lower": 0.0, "guesses": 0, "correct": 0}
    for r in counts:
        k_in, k_out = r // 2, r - r // 2
        right = int(included[order[:k_in]].sum()) + int((~included[order[m - k_out :]]).sum())
        eps = one_run_epsilon(m, r, right, delta=delta, confidence=per_test)
        if eps > best["epsilon_lower"] or best["guesses"] == 0:
            best = {"epsilon_lower": eps, "guesses": r, "correct": right}
    return {**best, "canaries": m, "confidence": confidence, "delta": delta}


def two_sets_epsilon(
    hits: int, trials: int, hits_prime: int, trials_prime: int, *, confidence: float,
    delta: float = 0.0,
) -> float:  # fmt: skip
    """ε ≥ ln((P_D′(E) − δ)/P_D(E)) at ``confidence``, E seen ``hits`` of ``trials`` times on D
    and ``hits_prime`` of ``trials_prime`` on D′ (0 when the intervals do not separate)."""
    _check_confidence(confidence)
    tail = (1 - confidence) / 2
    upper = 1.0 if hits == trials else float(stats.beta.ppf(1 - tail, hits + 1, trials - hits))
    lower = (
        0.0 if hits_prime == 0
        else float(stats.beta.ppf(tail, hits_prime, trials_prime - hits_prime + 1))
    )  # fmt: skip
    if lower - delta <= 0 or upper <= 0:
        return 0.0
    return max(0.0, math.log((lower - delta) / upper))
