"""k-means, by scikit-learn (exact Lloyd on every point) or by faiss for large sets.

Why two: scikit-learn's ``KMeans`` is the reference and what dpal's published results used; on
millions of points its every iteration touches every point (5,000,000 × 2,000 clusters: minutes
per iteration on 2 cores). ``faiss.Kmeans`` trains on a random subsample of at most
``max_points_per_centroid`` points per centre (256: faiss's default) and then assigns every
point to its nearest centre once — equivalent in objective (tests: the inertia on all points
within a few per cent of scikit-learn's; ``benchmarks/selection.py`` measures it at scale).
``backend="auto"`` keeps scikit-learn below :data:`FAISS_FROM` points, so small pools select
exactly as before.

Privacy: k-means here only ever clusters *public* embeddings (a function of public data: free);
the private data are then assigned to the released centres one point at a time.
"""

from __future__ import annotations

import numpy as np

from dpal.core.errors import DpalError

BACKENDS = ("auto", "sklearn", "faiss")
FAISS_FROM = 1_000_000  # points; below it "auto" is scikit-learn (benchmarks/selection.py)
INIT_POINTS_PER_CENTRE = 50  # the k-means++ subsample for faiss's initial centres


def kmeans(
    z: np.ndarray,
    n_clusters: int,
    *,
    seed: int,
    n_init: int = 1,
    max_iter: int = 100,
    backend: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """``(centres [C, d], labels [n])`` of ``z``: each label the nearest centre's index."""
    if backend not in BACKENDS:
        raise DpalError(f"k-means backend must be one of {', '.join(BACKENDS)}, got {backend!r}.")
    if backend == "auto":
        backend = "faiss" if len(z) >= FAISS_FROM else "sklearn"
    if backend == "sklearn":
        from sklearn.cluster import KMeans

        fit = KMeans(n_clusters=n_clusters, n_init=n_init, max_iter=max_iter, random_state=seed)
        fit.fit(z)
        return fit.cluster_centers_, fit.labels_.astype(np.int64)
    import faiss
    from sklearn.cluster import kmeans_plusplus

    x = np.ascontiguousarray(z, dtype=np.float32)
    # k-means++ seeding (scikit-learn's) on a subsample: faiss's own random initialisation
    # ended 12% above scikit-learn's objective on 40 blobs / 60 clusters; with this, within 1%.
    rng = np.random.default_rng(seed)
    sample = x[rng.choice(len(x), size=min(len(x), INIT_POINTS_PER_CENTRE * n_clusters),
                          replace=False)]  # fmt: skip
    init, _ = kmeans_plusplus(sample, n_clusters, random_state=seed % (2**31 - 1))
    km = faiss.Kmeans(x.shape[1], n_clusters, niter=min(max_iter, 50), seed=seed % (2**31 - 1),
                      verbose=False)  # fmt: skip
    km.train(x, init_centroids=np.ascontiguousarray(init, dtype=np.float32))
    _, labels = km.index.search(x, 1)
    assert km.centroids is not None  # set by train()
    return km.centroids.astype(np.asarray(z).dtype), labels[:, 0].astype(np.int64)


def inertia(z: np.ndarray, centres: np.ndarray, labels: np.ndarray) -> float:
    """Σ_i ‖z_i − centre(z_i)‖²: the k-means objective both backends minimise."""
    return float(np.square(np.asarray(z) - np.asarray(centres)[labels]).sum())
