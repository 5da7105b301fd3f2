"""Exact nearest neighbours by chunked matrix products (fast enough at the sizes dpal meets:
hundreds of thousands of points in ≤ 1,000 dimensions; ``benchmarks/selection.py``)."""

from __future__ import annotations

import numpy as np


def nearest(
    queries: np.ndarray, points: np.ndarray, *, chunk: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """For each query, the index of its nearest point and the squared Euclidean distance to it.

    Computed in the inputs' dtype as ‖q‖² − 2q·p + ‖p‖², ``chunk`` queries at a time.
    """
    index = np.empty(len(queries), dtype=np.int64)
    sq_dist = np.empty(len(queries), dtype=np.result_type(queries, points))
    p_sq = (points * points).sum(1)
    for s in range(0, len(queries), chunk):
        q = queries[s : s + chunk]
        d2 = (q * q).sum(1)[:, None] - 2.0 * q @ points.T + p_sq[None, :]
        index[s : s + chunk] = d2.argmin(1)
        sq_dist[s : s + chunk] = np.maximum(d2[np.arange(len(q)), index[s : s + chunk]], 0.0)
    return index, sq_dist
