"""NearPrivate (after Algorithm 2 of Zhao et al. 2019): label the uncertain public points that
the most uncertain *private* points lie nearest to — counted with differential privacy — among
the public points that look like the private data at all.

``pool_filter="density"`` (the default) asks private support *first*, over the whole pool
(``dpal.selection.private_density``): public k-means clusters, a noisy histogram of the private
points over them (ledger event ``LaplaceDpEvent(1/ε_density)``), and only the clusters whose
private density is at least half their public density stay in play. Why first: a polluted pool's
foreign images are its most uncertain points, so the paper's order (the k most uncertain public
points, then private support among them) hands NearPrivate a candidate set that is mostly
polluters whenever k is not far larger than N — measured on MNIST + 20% CIFAR-10 in
docs/RESULTS.md, where with k = N + 2,000 it bought 67–81% non-digits. Ranking uncertainty only
among supported points removes that dependence on k, and on a clean pool nearly every cluster is
supported, so the method reduces to Algorithm 2 there. The counts of step 4 are then made in the
supported points' own public PCA projection (free) — the DP-PCA of Algorithm 2 is not needed, and
its ε goes to the density counts instead. ``pool_filter="none"`` is Algorithm 2 as published:

1. Features: embeddings centred by the **public** pool's mean and divided by a public scale (the
   95th percentile of public embedding norms); both are public statistics, free.
2. DP-PCA of the private features (Gaussian mechanism on XᵀX with rows clipped to norm ≤ 1,
   ``dpal.privacy.mechanisms.dp_second_moment``): ledger event ``GaussianDpEvent(σ)``, σ
   calibrated so this step alone is (ε_pca, δ)-DP.
3. Candidates: the k most uncertain public points (with the density filter: the k most uncertain
   supported points). Uncertain private points: see below.
4. Each uncertain private point is assigned to its nearest candidate in the top-p subspace; the
   support count of a candidate is how many private points it received.
5. Laplace noise of scale Δ₁/ε_support on *every* candidate's count (ledger event
   ``LaplaceDpEvent(1/ε_support)``: dp_accounting's parameter is scale / Δ₁); the
   ``n_labeled`` largest noisy counts are chosen.

Sensitivity of the counts (add/remove-one; the model, the DP-PCA output, the density histogram
and the public data are fixed — they are released DP outputs, accounted on their own, or public):

* ``private_selection="threshold"`` (default): a private point is uncertain when its
  uncertainty is ≥ τ, τ = the k-th largest uncertainty among the public points in play (public
  given the released histogram). Whether one private point is uncertain does not depend on any
  other private point, and each uncertain point adds exactly 1 to exactly one count. Adding or
  removing one point changes one count by 1: Δ₁ = 1.
* ``private_selection="top-k"`` (the paper's): the k most uncertain private points. Adding a
  point can push another out of the top k: one count +1 and another −1, Δ₁ = 2 (pitfall 5).

The density histogram has Δ₁ = 1 (``dpal.selection.private_density``). The mechanisms compose
adaptively; ``selection_events`` lists them for the accountant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from dp_accounting import dp_event
from sklearn.decomposition import PCA

from dpal.core.errors import DpalError
from dpal.core.neighbours import nearest
from dpal.privacy.accounting import check_delta, check_epsilon
from dpal.privacy.ledger import Ledger, event_for
from dpal.privacy.mechanisms import calibrate_gaussian, dp_pca_components, laplace_counts
from dpal.privacy.noise_source import NumpyNoise, as_numpy_noise, laplace_entry
from dpal.privacy.secure_noise import SecureNoise
from dpal.selection import private_density
from dpal.selection.strategies import check_request, top_uncertain

PRIVATE_SELECTIONS = ("threshold", "top-k")
POOL_FILTERS = ("density", "none")


@dataclass(frozen=True, kw_only=True)
class NearPrivateConfig:
    k: int
    n_components: int = 16
    epsilon_pca: float = 0.4  # pool_filter="none" only: the DP-PCA step
    epsilon_density: float = 0.4  # pool_filter="density" only: the private histogram
    epsilon_support: float = 0.6
    delta: float = 1e-5  # the δ at which DP-PCA alone is (ε_pca, δ)
    private_selection: str = "threshold"
    pool_filter: str = "density"
    n_clusters: int | None = None  # density filter; None: from the pool size
    # The counts' noise is the exact discrete Laplace (--secure-noise): what the accountant plans.
    discrete_laplace: bool = False

    def __post_init__(self) -> None:
        check_epsilon(self.epsilon_pca, "epsilon_pca")
        check_epsilon(self.epsilon_density, "epsilon_density")
        check_epsilon(self.epsilon_support, "epsilon_support")
        check_delta(self.delta)
        if self.private_selection not in PRIVATE_SELECTIONS:
            raise DpalError(
                f"private_selection must be one of {PRIVATE_SELECTIONS}, "
                f"got {self.private_selection!r}."
            )
        if self.pool_filter not in POOL_FILTERS:
            raise DpalError(f"pool_filter must be one of {POOL_FILTERS}, got {self.pool_filter!r}.")
        if self.n_components < 1:
            raise DpalError(f"n_components must be ≥ 1, got {self.n_components}.")
        if self.n_clusters is not None and self.n_clusters < 2:
            raise DpalError(f"n_clusters must be ≥ 2, got {self.n_clusters}.")

    @property
    def sensitivity(self) -> float:
        return 1.0 if self.private_selection == "threshold" else 2.0

    @property
    def epsilon_first(self) -> float:
        """ε of the first mechanism: the density histogram, or DP-PCA for the paper's variant."""
        return self.epsilon_density if self.pool_filter == "density" else self.epsilon_pca


def selection_events(config: NearPrivateConfig, delta: float) -> list[dp_event.DpEvent]:
    """The mechanisms ``near_private`` runs with ``config``, for the accountant (DP-PCA is
    calibrated at ``delta``, the δ it will be recorded at)."""

    # The same kind and parameters the selection records in the ledger (laplace_entry).
    def laplace(epsilon: float, sensitivity: float) -> dp_event.DpEvent:
        entry = laplace_entry(
            discrete=config.discrete_laplace, epsilon=epsilon, sensitivity=sensitivity
        )
        return event_for(*entry)

    counts = laplace(config.epsilon_support, config.sensitivity)
    if config.pool_filter == "density":
        return [laplace(config.epsilon_density, 1), counts]
    sigma = calibrate_gaussian(epsilon=config.epsilon_pca, delta=delta)
    return [dp_event.GaussianDpEvent(sigma), counts]


@dataclass(frozen=True)
class NearPrivateResult:
    indices: np.ndarray  # [n_labeled] pool indices, largest noisy count first
    candidates: np.ndarray  # [k] the uncertain public points
    noisy_counts: np.ndarray  # [k] released
    ledger_entries: tuple[int, int]
    noise_multiplier_pca: float | None = None  # pool_filter="none"
    supported: np.ndarray | None = None  # pool_filter="density": the pool indices in play
    density_counts: np.ndarray | None = None  # pool_filter="density": released histogram


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
    rng: NumpyNoise | int | None = None,
    noise: str = "",
    clusters: private_density.PoolClusters | None = None,
) -> NearPrivateResult:
    """Run NearPrivate; both mechanisms are recorded in ``ledger`` (pending) before they run.

    ``rng`` draws both mechanisms' noise (and seeds the public clustering): pass one seeded from
    OS entropy (``dpal.privacy.noise_source.numpy_noise_rng``) for a release; ``noise`` says
    which it is, in the ledger. ``clusters``: the public clustering of the pool's features
    (:func:`public_features`), when the caller has made it (the audit: once for many runs).

    The caller marks the two entries done once the selection is saved
    (``ledger.resolve(i, "done")`` for ``i`` in ``result.ledger_entries``).
    """
    public_emb = np.asarray(public_emb, dtype=np.float64)
    private_emb = np.asarray(private_emb, dtype=np.float64)
    public_unc = np.asarray(public_unc, dtype=np.float64)
    check_request(len(public_emb), n_labeled)
    if config.k < n_labeled:
        raise DpalError(f"k (candidates) must be ≥ n_labeled = {n_labeled}, got {config.k}.")
    if len(private_emb) == 0:
        raise DpalError("no private embeddings: NearPrivate needs the private training data.")
    rng = as_numpy_noise(rng)
    discrete = isinstance(rng, SecureNoise)  # laplace_counts then draws the discrete Laplace
    center, scale = public_features(public_emb)
    pub = (public_emb - center) / scale
    priv = (private_emb - center) / scale
    p = min(config.n_components, pub.shape[1])

    sigma = None
    supported = density = None
    if config.pool_filter == "density":
        n_clusters = min(config.n_clusters or private_density.n_clusters_for(len(pub)), len(pub))
        if clusters is None:
            clusters = private_density.cluster_pool(
                pub, n_clusters=n_clusters, n_components=p, seed=int(rng.integers(2**31 - 1))
            )
        n_clusters = len(clusters.centres)
        kind, params = laplace_entry(
            discrete=discrete, epsilon=config.epsilon_density, sensitivity=1
        )
        first_entry = ledger.record(
            kind,
            mechanism="near-private:density-counts",
            params=params,
            note=f"histogram of {len(priv)} private embeddings over {n_clusters} public "
            f"clusters, ε={config.epsilon_density}, Δ₁=1",
            noise=noise,
        )
        density = private_density.noisy_histogram(
            clusters, priv, epsilon=config.epsilon_density, rng=rng
        )
        ratios = private_density.density_ratios(clusters, density)
        supported = private_density.supported_points(clusters, ratios, at_least=n_labeled)
        # Post-processing from here: the supported set is a function of the released histogram.
        in_play = supported
        projection = PCA(n_components=min(p, len(in_play)), random_state=0).fit(pub[in_play])
        components = projection.components_.T
    else:
        in_play = np.arange(len(pub))
        sigma = calibrate_gaussian(epsilon=config.epsilon_pca, delta=config.delta)
        first_entry = ledger.record(
            "gaussian",
            mechanism="near-private:dp-pca",
            params={"noise_multiplier": sigma},
            note=f"DP-PCA of {len(priv)} private embeddings, ε={config.epsilon_pca} at "
            f"δ={config.delta} alone, Δ₂=1",
            noise=noise,
        )
        components = dp_pca_components(priv, p, noise_multiplier=sigma, rng=rng)

    unc_in_play = public_unc[in_play]
    k = min(config.k, len(in_play))
    candidates = in_play[top_uncertain(unc_in_play, k)]
    counted = uncertain_private(private_unc, unc_in_play, k, config.private_selection)
    counts = support_counts(pub[candidates] @ components, priv[counted] @ components)
    kind, params = laplace_entry(
        discrete=discrete, epsilon=config.epsilon_support, sensitivity=config.sensitivity
    )
    support_entry = ledger.record(
        kind,
        mechanism="near-private:support-counts",
        params=params,
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
        ledger_entries=(first_entry, support_entry),
        noise_multiplier_pca=sigma,
        supported=supported,
        density_counts=density,
    )
