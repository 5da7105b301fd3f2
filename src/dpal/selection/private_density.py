"""Which public points look like the private data: noisy private counts over public clusters.

The first stage of NearPrivate's default (``dpal.selection.near_private``, ``pool_filter=
"density"``). A polluted pool's foreign images (another dataset, junk, near-duplicates of
nothing) are the model's most *uncertain* points, so any rule that ranks by public uncertainty
first — DiversePublic, and Algorithm 2's top-k candidates — buys them first. Private support is
the one signal that can tell them apart, so it is asked first, over the **whole** pool:

1. The pool is cut into ``C`` clusters by k-means on its public PCA projection (public: free).
   ``C`` follows the pool size, about ``POINTS_PER_CLUSTER`` public points each, so a cluster is
   small enough to be mostly one kind of image and large enough that its private count is well
   above the noise when the private set is about the pool's size.
2. Each private point is assigned to its nearest cluster centre; the histogram of private points
   per cluster is released with Laplace noise (``LaplaceDpEvent(1/ε_density)``).
3. A cluster is *supported* when its share of the (noisy) private points is at least
   ``MIN_DENSITY_RATIO`` times its share of the pool: the ratio estimates how much more (or less)
   likely the cluster's images are under the private distribution than under the pool's. Pure
   foreign clusters have ratio ≈ 0, clusters of the private kind ≈ 1/(1 − polluted fraction) ≥ 1,
   and a half-foreign cluster still ≈ ½/(1 − fraction) ≥ ½, so ½ cuts out clusters where most
   images are unlike the private data without needing to know how polluted the pool is.

Sensitivity (add/remove one private point; the centres are computed from public data only): a
private point falls in exactly one cluster and contributes 1 to its count, nothing else — one
count changes by 1, Δ₁ = 1 (tested on neighbouring datasets in tests/test_private_density.py).
The support decision and everything after it is post-processing of the released counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA

from dpal.core.clustering import kmeans
from dpal.core.neighbours import nearest
from dpal.privacy.mechanisms import laplace_counts
from dpal.privacy.noise_source import NumpyNoise

POINTS_PER_CLUSTER = 50
MAX_CLUSTERS = 2000
MIN_DENSITY_RATIO = 0.5
DENSITY_SENSITIVITY = 1.0  # Δ₁ of the per-cluster private histogram (module docstring)


@dataclass(frozen=True)
class PoolClusters:
    """Public: the pool's clusters in its own PCA projection."""

    projection: PCA
    centres: np.ndarray  # [C, p]
    labels: np.ndarray  # [n_pool] cluster of each public point

    @property
    def sizes(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(self.centres)).astype(np.float64)


def n_clusters_for(n_pool: int) -> int:
    """``C`` from the pool size alone (public): about ``POINTS_PER_CLUSTER`` points each."""
    return int(min(MAX_CLUSTERS, max(2, n_pool // POINTS_PER_CLUSTER), n_pool))


def cluster_pool(
    public_z: np.ndarray, *, n_clusters: int, n_components: int, seed: int
) -> PoolClusters:
    """k-means of the public points on their top ``n_components`` principal directions."""
    p = min(n_components, public_z.shape[1], len(public_z))
    projection = PCA(n_components=p, random_state=seed).fit(public_z)
    z = projection.transform(public_z)
    centres, labels = kmeans(z, n_clusters, seed=seed, n_init=1, max_iter=100)  # faiss when large
    return PoolClusters(projection, centres, labels)


def private_histogram(clusters: PoolClusters, private_z: np.ndarray) -> np.ndarray:
    """``[C]`` how many private points have each cluster centre as nearest (exact: private)."""
    if len(private_z) == 0:
        return np.zeros(len(clusters.centres))
    index, _ = nearest(clusters.projection.transform(private_z), clusters.centres)
    return np.bincount(index, minlength=len(clusters.centres)).astype(np.float64)


def noisy_histogram(
    clusters: PoolClusters, private_z: np.ndarray, *, epsilon: float, rng: NumpyNoise
) -> np.ndarray:
    """The released histogram: Laplace(Δ₁/ε) on every cluster's private count (ε-DP)."""
    counts = private_histogram(clusters, private_z)
    return laplace_counts(counts, epsilon=epsilon, sensitivity=DENSITY_SENSITIVITY, rng=rng)


def density_ratios(clusters: PoolClusters, noisy_counts: np.ndarray) -> np.ndarray:
    """``[C]`` (cluster's share of the noisy private counts) / (its share of the pool)."""
    private = np.maximum(np.asarray(noisy_counts, dtype=np.float64), 0.0)
    if private.sum() <= 0:  # the noise swallowed everything: no evidence either way
        return np.ones(len(private))
    return (private / private.sum()) / (clusters.sizes / clusters.sizes.sum())


def supported_points(clusters: PoolClusters, ratios: np.ndarray, at_least: int) -> np.ndarray:
    """Pool indices in supported clusters (ratio ≥ ``MIN_DENSITY_RATIO``); when they are fewer
    than ``at_least``, the next-best clusters by ratio are added until there are enough."""
    order = np.argsort(-ratios, kind="stable")
    sizes = clusters.sizes[order]
    needed = int(np.searchsorted(np.cumsum(sizes), at_least) + 1)  # clusters to reach at_least
    n_keep = max(int((ratios >= MIN_DENSITY_RATIO).sum()), min(needed, len(order)))
    keep = np.zeros(len(ratios), dtype=bool)
    keep[order[:n_keep]] = True
    return np.flatnonzero(keep[clusters.labels])
