"""Exact nearest neighbours: chunked NumPy matrix products, or faiss's exact flat index.

Both are exact (every point is compared with every query); they differ in speed and memory
(``benchmarks/selection.py``: the pool's support counts at 5,000,000 public × 500,000 private).
``backend="auto"`` uses NumPy below :data:`FAISS_FROM` query–point pairs — the reference, and
the path of every published result — and faiss (float32, multi-threaded BLAS) above it. Ties
and near-ties closer than float32 rounding may resolve differently; tests check equal indices
on data without such ties.

Privacy: each query's answer depends on that query and the (public) points alone, whichever
backend — so a count of private queries per point still moves by one when one private point is
added or removed.
"""

from __future__ import annotations

import numpy as np

from dpal.core.errors import DpalError

BACKENDS = ("auto", "numpy", "faiss")
FAISS_FROM = 10**11  # query × point pairs (benchmarks/selection.py)


def nearest(
    queries: np.ndarray, points: np.ndarray, *, chunk: int = 4096, backend: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """For each query, the index of its nearest point and the squared Euclidean distance to it.

    NumPy: in the inputs' dtype as ‖q‖² − 2q·p + ‖p‖², ``chunk`` queries at a time.
    """
    if backend not in BACKENDS:
        raise DpalError(f"neighbour backend must be one of {', '.join(BACKENDS)}, got {backend!r}.")
    if backend == "auto":
        backend = "faiss" if len(queries) * len(points) >= FAISS_FROM else "numpy"
    if backend == "faiss":
        return _faiss_nearest(queries, points)
    index = np.empty(len(queries), dtype=np.int64)
    sq_dist = np.empty(len(queries), dtype=np.result_type(queries, points))
    p_sq = (points * points).sum(1)
    for s in range(0, len(queries), chunk):
        q = queries[s : s + chunk]
        d2 = (q * q).sum(1)[:, None] - 2.0 * q @ points.T + p_sq[None, :]
        index[s : s + chunk] = d2.argmin(1)
        sq_dist[s : s + chunk] = np.maximum(d2[np.arange(len(q)), index[s : s + chunk]], 0.0)
    return index, sq_dist


def _faiss_nearest(queries: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    flat = faiss.IndexFlatL2(points.shape[1])
    flat.add(np.ascontiguousarray(points, dtype=np.float32))
    sq_dist, index = flat.search(np.ascontiguousarray(queries, dtype=np.float32), 1)
    dtype = np.result_type(queries, points)
    return index[:, 0].astype(np.int64), np.maximum(sq_dist[:, 0], 0.0).astype(dtype)
