"""Uncertainty of a classifier's predictions; higher = more uncertain, for every score here."""

from __future__ import annotations

import numpy as np
from scipy import special

SCORES = ("entropy", "margin")


def entropy(logits: np.ndarray) -> np.ndarray:
    """``[n]`` entropy of softmax(logits) (nats)."""
    logp = special.log_softmax(np.asarray(logits, dtype=np.float64), axis=1)
    return -(np.exp(logp) * logp).sum(1)


def margin(logits: np.ndarray) -> np.ndarray:
    """``[n]`` the paper's "difference": top-1 minus top-2 logit (smaller = more uncertain)."""
    top2 = np.sort(np.asarray(logits, dtype=np.float64), axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def uncertainty(logits: np.ndarray, score: str = "margin") -> np.ndarray:
    """``[n]`` uncertainty, larger = more uncertain: entropy, or minus the margin."""
    if score == "entropy":
        return entropy(logits)
    if score == "margin":
        return -margin(logits)
    raise ValueError(f"score must be one of {SCORES}, got {score!r}")
