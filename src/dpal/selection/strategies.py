"""Selection strategies that read only the public pool and the released model: post-processing,
free in privacy. Each returns ``[n_labeled]`` pool indices, most wanted first.

``diverse_public`` is Algorithm 1 of Zhao, Papernot, Singh, Polyzotis & Odena (2019).
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA

from dpal.core.clustering import kmeans
from dpal.core.errors import DpalError

STRATEGIES = ("random", "entropy", "margin", "diverse-public", "near-private")


def check_request(n_pool: int, n_labeled: int) -> None:
    if n_pool == 0:
        raise DpalError("the public pool is empty: nothing to select from.")
    if n_labeled <= 0:
        raise DpalError(f"n_labeled must be ≥ 1, got {n_labeled}.")
    if n_labeled > n_pool:
        raise DpalError(
            f"cannot select {n_labeled} points from a pool of {n_pool}; lower --n-labeled."
        )


def random_selection(n_pool: int, n_labeled: int, *, rng: np.random.Generator | int | None):
    check_request(n_pool, n_labeled)
    return np.random.default_rng(rng).choice(n_pool, size=n_labeled, replace=False)


def top_uncertain(uncertainty: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` largest uncertainties, largest first (ties: lower index first)."""
    check_request(len(uncertainty), n)
    order = np.argsort(-np.asarray(uncertainty), kind="stable")
    return order[:n]


def diverse_public(
    embeddings: np.ndarray,
    uncertainty: np.ndarray,
    n_labeled: int,
    *,
    k: int,
    n_clusters: int,
    n_each: int,
    n_components: int = 16,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """DiversePublic: PCA on the embeddings of the whole pool, the k most uncertain points
    projected onto its top ``n_components``, k-means into ``n_clusters``, the ``n_each`` points
    nearest each centre.

    Shortfall: a cluster with fewer than ``n_each`` members gives all of them; the remaining
    places go to the not-yet-chosen candidates nearest to their own centre, so exactly
    ``n_labeled`` distinct points are returned.
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    n = len(embeddings)
    check_request(n, n_labeled)
    if len(uncertainty) != n:
        raise DpalError(f"{len(uncertainty)} uncertainties for {n} embeddings.")
    if n_clusters * n_each != n_labeled:
        raise DpalError(
            f"n_clusters × n_each must equal n_labeled: {n_clusters} × {n_each} = "
            f"{n_clusters * n_each} ≠ {n_labeled}; e.g. n_clusters = {max(1, n_labeled // n_each)} "
            f"with n_each = {n_each} for {max(1, n_labeled // n_each) * n_each} labels."
        )
    if k < n_labeled:
        raise DpalError(f"k (candidates) must be ≥ n_labeled = {n_labeled}, got {k}.")
    k = min(k, n)
    p = min(n_components, embeddings.shape[1], n)
    seed = np.random.default_rng(rng).integers(2**31 - 1)

    projection = PCA(n_components=p, random_state=seed).fit(embeddings)
    candidates = top_uncertain(uncertainty, k)
    z = projection.transform(embeddings[candidates])  # [k, p]
    centres, labels = kmeans(z, n_clusters, seed=int(seed), n_init=3, max_iter=300)
    dist = np.linalg.norm(z - centres[labels], axis=1)  # to own centre

    chosen: list[int] = []
    taken = np.zeros(k, dtype=bool)
    for c in range(n_clusters):
        members = np.flatnonzero(labels == c)
        nearest = members[np.argsort(dist[members], kind="stable")[:n_each]]
        chosen.extend(nearest.tolist())
        taken[nearest] = True
    if len(chosen) < n_labeled:  # shortfall: small clusters
        rest = np.flatnonzero(~taken)
        fill = rest[np.argsort(dist[rest], kind="stable")[: n_labeled - len(chosen)]]
        chosen.extend(fill.tolist())
    return candidates[np.asarray(chosen, dtype=np.int64)]
