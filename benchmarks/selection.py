"""Selection at scale: DiversePublic and NearPrivate end to end on synthetic 32-d embeddings
(the width of the MNIST CNN's), the exact path (scikit-learn k-means, NumPy neighbours) beside
faiss, each backend in its own process so that its peak memory is its own.

    python benchmarks/selection.py                                   # 531,131 / 73,257
    python benchmarks/selection.py --n-public 5000000 --n-private 500000

Prints, per backend: each stage's time, each strategy's end-to-end time, the process's peak
resident memory; then the ratios (exact ÷ faiss) and how far the two backends' answers agree
(k-means objective of the pool clustering, overlap of the chosen sets).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

from dpal.core import clustering, neighbours
from dpal.privacy.ledger import Ledger
from dpal.selection import private_density
from dpal.selection.near_private import NearPrivateConfig, near_private, public_features
from dpal.selection.strategies import diverse_public


def data(a: argparse.Namespace) -> tuple[np.ndarray, ...]:
    """Public and private embeddings from 10 shared blobs, plus 20% public polluters elsewhere."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, a.dim)) * 2
    n_pol = a.n_public // 5
    pub = np.concatenate(
        [
            centres[rng.integers(0, 10, a.n_public - n_pol)],
            rng.normal(size=(n_pol, a.dim)) * 2 + 6.0,  # polluters: no private support
        ]
    ) + rng.normal(size=(a.n_public, a.dim))
    priv = centres[rng.integers(0, 10, a.n_private)] + rng.normal(size=(a.n_private, a.dim))
    return pub, priv, rng.uniform(size=a.n_public), rng.uniform(size=a.n_private)


def one_backend(a: argparse.Namespace) -> dict[str, Any]:
    # The benchmark pins each backend by moving the "auto" thresholds (0: always faiss).
    big = a.backend == "faiss"
    clustering.FAISS_FROM = 0 if big else 1 << 62
    neighbours.FAISS_FROM = 0 if big else 1 << 62
    pub, priv, pub_unc, priv_unc = data(a)
    n, k = a.n_labeled, a.n_labeled + 2000
    out: dict[str, Any] = {"backend": a.backend, "stages": {}}

    def timed(label: str, fn, *args, **kwargs):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        out["stages"][label] = time.perf_counter() - start
        return result

    start = time.perf_counter()
    chosen_dp = diverse_public(pub, pub_unc, n, k=k, n_clusters=n // 10, n_each=10, rng=0)
    out["diverse_public_s"] = time.perf_counter() - start

    center, scale = public_features(pub)
    z = (pub - center) / scale
    c = private_density.n_clusters_for(len(z))
    clusters = timed(f"pool k-means ({c} clusters)", private_density.cluster_pool, z,
                     n_clusters=c, n_components=16, seed=0)  # fmt: skip
    out["pool_inertia"] = clustering.inertia(
        clusters.projection.transform(z), clusters.centres, clusters.labels
    )
    timed("private → nearest centre", private_density.private_histogram, clusters,
          (priv - center) / scale)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = near_private(pub, pub_unc, priv, priv_unc, n, config=NearPrivateConfig(k=k),
                              ledger=Ledger(f"{tmp}/ledger.json"), rng=0)  # fmt: skip
        out["near_private_s"] = time.perf_counter() - start
    polluter = np.arange(len(pub)) >= len(pub) - len(pub) // 5
    out["near_private_polluters"] = int(polluter[result.indices].sum())
    out["diverse_public_polluters"] = int(polluter[chosen_dp].sum())
    out["chosen_dp"], out["chosen_np"] = chosen_dp.tolist(), result.indices.tolist()
    out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-public", type=int, default=531_131)
    p.add_argument("--n-private", type=int, default=73_257)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--n-labeled", type=int, default=5000)
    p.add_argument("--backends", nargs="+", default=["exact", "faiss"])
    p.add_argument("--backend", help=argparse.SUPPRESS)  # one backend, in a child process
    p.add_argument("--json", help="write the rows here")
    a = p.parse_args()
    if a.backend:
        print(json.dumps(one_backend(a)))
        return
    print(f"{a.n_public:,} public ({a.n_public // 5:,} polluters), {a.n_private:,} private, "
          f"dim {a.dim}, N = {a.n_labeled}, k = N + 2000")  # fmt: skip
    rows = []
    for backend in a.backends:
        argv = [sys.executable, __file__, "--backend", backend, "--n-public", str(a.n_public),
                "--n-private", str(a.n_private), "--dim", str(a.dim),
                "--n-labeled", str(a.n_labeled)]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{backend}:")
        for label, s in row["stages"].items():
            print(f"  {label:<40} {s:8.1f} s")
        print(f"  {'diverse_public() end to end':<40} {row['diverse_public_s']:8.1f} s "
              f"({row['diverse_public_polluters']} polluters of {a.n_labeled})")  # fmt: skip
        print(f"  {'near_private() end to end':<40} {row['near_private_s']:8.1f} s "
              f"({row['near_private_polluters']} polluters of {a.n_labeled})")  # fmt: skip
        print(f"  {'peak resident memory':<40} {row['peak_rss_gib']:8.2f} GiB")
    by = {r["backend"]: r for r in rows}
    if {"exact", "faiss"} <= set(by):
        x, f = by["exact"], by["faiss"]
        overlap_dp = len(set(x["chosen_dp"]) & set(f["chosen_dp"])) / a.n_labeled
        overlap_np = len(set(x["chosen_np"]) & set(f["chosen_np"])) / a.n_labeled
        print(f"{x['backend']} ÷ {f['backend']}: near-private time "
              f"{x['near_private_s'] / f['near_private_s']:.2f}×, diverse-public "
              f"{x['diverse_public_s'] / f['diverse_public_s']:.2f}×; pool k-means objective "
              f"{f['pool_inertia'] / x['pool_inertia']:.3f} (faiss ÷ exact); chosen sets "
              f"overlap {overlap_np:.0%} (near-private), "
              f"{overlap_dp:.0%} (diverse-public)")  # fmt: skip
    if a.json:
        for r in rows:
            r.pop("chosen_dp"), r.pop("chosen_np")
            r.update(n_public=a.n_public, n_private=a.n_private, dim=a.dim, n_labeled=a.n_labeled)
        with open(a.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
