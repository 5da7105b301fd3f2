"""faiss beside the exact paths: nearest neighbours equal, k-means equivalent in objective; and
the selection strategies give the same kind of answer whichever backend runs."""

from __future__ import annotations

import numpy as np
import pytest

from dpal.core.clustering import inertia, kmeans
from dpal.core.errors import DpalError
from dpal.core.neighbours import nearest


def _blobs(n: int, d: int, centres: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(centres, d)) * 4
    return mu[rng.integers(0, centres, n)] + rng.normal(size=(n, d))


def test_faiss_nearest_neighbours_equal_the_exact_numpy_ones():
    points, queries = _blobs(3000, 16, 20, 0), _blobs(700, 16, 20, 1)
    i_np, d_np = nearest(queries, points, backend="numpy")
    i_fa, d_fa = nearest(queries, points, backend="faiss")
    np.testing.assert_array_equal(i_fa, i_np)
    np.testing.assert_allclose(d_fa, d_np, rtol=1e-4, atol=1e-4)
    assert d_fa.dtype == d_np.dtype == np.float64


@pytest.mark.parametrize("n_clusters", [10, 60])
def test_faiss_kmeans_is_equivalent_in_objective_to_sklearn(n_clusters):
    z = _blobs(20_000, 8, 40, 2)
    c_sk, l_sk = kmeans(z, n_clusters, seed=0, backend="sklearn")
    c_fa, l_fa = kmeans(z, n_clusters, seed=0, backend="faiss")
    assert l_fa.shape == (len(z),) and c_fa.shape == (n_clusters, 8)
    # every label is the nearest centre (as the density filter and DiversePublic assume)
    np.testing.assert_array_equal(l_fa, nearest(z, c_fa, backend="numpy")[0])
    assert inertia(z, c_fa, l_fa) <= 1.05 * inertia(z, c_sk, l_sk)


def test_auto_keeps_the_exact_reference_path_on_small_inputs():
    z = _blobs(500, 4, 5, 3)
    assert np.array_equal(kmeans(z, 5, seed=1)[1], kmeans(z, 5, seed=1, backend="sklearn")[1])
    with pytest.raises(DpalError, match="backend must be one of"):
        nearest(z, z, backend="annoy")
