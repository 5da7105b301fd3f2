"""NearPrivate (Algorithm 2 of Zhao et al. 2019): label the uncertain public points that the most
uncertain *private* points lie nearest to — counted with differential privacy.

1. Features: embeddings centred by the **public** pool's mean and divided by a public scale (the
   95th percentile of public embedding norms); both are public statistics, free.
2. DP-PCA of the private features (Gaussian mechanism on XᵀX with rows clipped to norm ≤ 1,
   ``dpal.privacy.mechanisms.dp_second_moment``): ledger event ``GaussianDpEvent(σ)``, σ
   calibrated so this step alone is (ε_pca, δ)-DP.
3. Candidates: the k most uncertain public points. Uncertain private points: see below.
4. Each uncertain private point is assigned to its nearest candidate in the top-p DP-PCA
   subspace; the support count of a candidate is how many private points it received.
5. Laplace noise of scale Δ₁/ε_support on *every* candidate's count (ledger event
   ``LaplaceDpEvent(1/ε_support)``); the ``n_labeled`` largest noisy counts are chosen.

Sensitivity of the counts (add/remove-one; the model, the DP-PCA output and the public data are
fixed — the first two are released DP outputs, accounted on their own):

* ``private_selection="threshold"`` (default): a private point is uncertain when its
  uncertainty is ≥ τ, τ = the k-th largest uncertainty in the *public* pool (public, free).
  Whether one private point is uncertain does not depend on any other private point, and each
  uncertain point adds exactly 1 to exactly one count. Adding or removing one point changes one
  count by 1: Δ₁ = 1.
* ``private_selection="top-k"`` (the paper's): the k most uncertain private points. Adding a
  point can push another out of the top k: one count +1 and another −1, Δ₁ = 2 (pitfall 5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dpal.core.errors import DpalError
from dpal.core.neighbours import nearest
from dpal.privacy.accounting import check_delta, check_epsilon
from dpal.privacy.ledger import Ledger
from dpal.privacy.mechanisms import calibrate_gaussian, dp_pca_components, laplace_counts
from dpal.selection.strategies import check_request, top_uncertain

PRIVATE_SELECTIONS = ("threshold", "top-k")


@dataclass(frozen=True, kw_only=True)
class NearPrivateConfig:
    k: int
    n_components: int = 16
    epsilon_pca: float = 0.4
    epsilon_support: float = 0.6
    delta: float = 1e-5  # the δ at which DP-PCA alone is (ε_pca, δ)
    private_selection: str = "threshold"

    def __post_init__(self) -> None:
        check_epsilon(self.epsilon_pca, "epsilon_pca")
        check_epsilon(self.epsilon_support, "epsilon_support")
        check_delta(self.delta)
        if self.private_selection not in PRIVATE_SELECTIONS:
            raise DpalError(
                f"private_selection must be one of {PRIVATE_SELECTIONS}, "
                f"got {self.private_selection!r}."
            )
        if self.n_components < 1:
            raise DpalError(f"n_components must be ≥ 1, got {self.n_components}.")

    @property
    def sensitivity(self) -> float:
        return 1.0 if self.private_selection == "threshold" else 2.0


@dataclass(frozen=True)
class NearPrivateResult:
    indices: np.ndarray  # [n_labeled] pool indices, largest noisy count first
    candidates: np.ndarray  # [k] the uncertain public points
    noisy_counts: np.ndarray  # [k] released
    noise_multiplier_pca: float
    ledger_entries: tuple[int, int]


def public_features(public_emb: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre (public mean) and scale (95th percentile of public norms): public, free."""
    center = public_emb.mean(0)
    scale = float(np.percentile(np.linalg.norm(public_emb - center, axis=1), 95)) or 1.0
    return center, scale


def uncertain_private(private_unc: np.ndarray, public_unc: np.ndarray, k: int, mode: str):
    """Indices of the private points that are counted (see module docstring)."""
    if mode == "threshold":
        tau = np.sort(public_unc)[::-1][min(k, len(public_unc)) - 1]
        return np.flatnonzero(private_unc >= tau)
    return top_uncertain(private_unc, min(k, len(private_unc)))


def support_counts(public_z: np.ndarray, private_z: np.ndarray) -> np.ndarray:
    """``[len(public_z)]`` how many private points have each public point as nearest."""
    if len(private_z) == 0:
        return np.zeros(len(public_z))
    index, _ = nearest(private_z, public_z)
    return np.bincount(index, minlength=len(public_z)).astype(np.float64)


def near_private(
    public_emb: np.ndarray,
    public_unc: np.ndarray,
    private_emb: np.ndarray,
    private_unc: np.ndarray,
    n_labeled: int,
    *,
    config: NearPrivateConfig,
    ledger: Ledger,
    rng: np.random.Generator | int | None = None,
    noise: str = "",
) -> NearPrivateResult:
    """Run NearPrivate; both mechanisms are recorded in ``ledger`` (pending) before they run.

    ``rng`` draws both mechanisms' noise: pass one seeded from OS entropy
    (``dpal.privacy.noise_source.numpy_noise_rng``) for a release; ``noise`` says which it is, in
    the ledger.

    The caller marks the two entries done once the selection is saved
    (``ledger.resolve(i, "done")`` for ``i`` in ``result.ledger_entries``).
    """
    public_emb = np.asarray(public_emb, dtype=np.float64)
    private_emb = np.asarray(private_emb, dtype=np.float64)
    check_request(len(public_emb), n_labeled)
    if config.k < n_labeled:
        raise DpalError(f"k (candidates) must be ≥ n_labeled = {n_labeled}, got {config.k}.")
    if len(private_emb) == 0:
        raise DpalError("no private embeddings: NearPrivate needs the private training data.")
    rng = np.random.default_rng(rng)
    center, scale = public_features(public_emb)
    pub = (public_emb - center) / scale
    priv = (private_emb - center) / scale

    sigma = calibrate_gaussian(epsilon=config.epsilon_pca, delta=config.delta)
    pca_entry = ledger.record(
        "gaussian",
        mechanism="near-private:dp-pca",
        params={"noise_multiplier": sigma},
        note=f"DP-PCA of {len(priv)} private embeddings, ε={config.epsilon_pca} at "
        f"δ={config.delta} alone, Δ₂=1",
        noise=noise,
    )
    components = dp_pca_components(priv, min(config.n_components, pub.shape[1]),
                                   noise_multiplier=sigma, rng=rng)  # fmt: skip

    candidates = top_uncertain(public_unc, min(config.k, len(pub)))
    counted = uncertain_private(private_unc, public_unc, config.k, config.private_selection)
    counts = support_counts(pub[candidates] @ components, priv[counted] @ components)
    support_entry = ledger.record(
        "laplace",
        mechanism="near-private:support-counts",
        params={"noise_multiplier": 1.0 / config.epsilon_support},
        note=f"support counts of {len(candidates)} candidates, ε={config.epsilon_support}, "
        f"Δ₁={config.sensitivity:g} ({config.private_selection})",
        noise=noise,
    )
    noisy = laplace_counts(
        counts, epsilon=config.epsilon_support, sensitivity=config.sensitivity, rng=rng
    )
    order = np.argsort(-noisy, kind="stable")[:n_labeled]
    return NearPrivateResult(
        indices=candidates[order],
        candidates=candidates,
        noisy_counts=noisy,
        noise_multiplier_pca=sigma,
        ledger_entries=(pca_entry, support_entry),
    )
