"""Selection at SVHN-extra scale: 531,131 public and 73,257 private embeddings (32-d, like the
TF-Privacy CNN's), both strategies, time of each stage and in total. Target: < 60 s each.

    python benchmarks/selection.py [--n-labeled 5000] [--dim 32]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

from dpal.privacy.ledger import Ledger
from dpal.privacy.mechanisms import calibrate_gaussian, dp_pca_components, laplace_counts
from dpal.selection.near_private import (
    NearPrivateConfig,
    near_private,
    public_features,
    support_counts,
    uncertain_private,
)
from dpal.selection.strategies import diverse_public, top_uncertain


def timed(label: str, fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    print(f"  {label:<44} {time.perf_counter() - start:7.2f} s")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n-public", type=int, default=531_131)
    p.add_argument("--n-private", type=int, default=73_257)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--n-labeled", type=int, default=5000)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, a.dim)) * 2
    pub = centres[rng.integers(0, 10, a.n_public)] + rng.normal(size=(a.n_public, a.dim))
    priv = centres[rng.integers(0, 10, a.n_private)] + rng.normal(size=(a.n_private, a.dim))
    pub_unc, priv_unc = rng.uniform(size=a.n_public), rng.uniform(size=a.n_private)
    n, k, p_comp = a.n_labeled, a.n_labeled + 2000, 16
    print(f"{a.n_public} public, {a.n_private} private, dim {a.dim}, N={n}, k={k}, p={p_comp}")

    print("diverse-public, by stage:")
    pca = timed("PCA fit on the whole pool", PCA(n_components=p_comp, random_state=0).fit, pub)
    cand = timed("top-k uncertain", top_uncertain, pub_unc, k)
    z = timed("project candidates", pca.transform, pub[cand])
    timed(
        f"k-means ({n // 10} clusters)", KMeans(n_clusters=n // 10, n_init=3, random_state=0).fit, z
    )
    start = time.perf_counter()
    diverse_public(pub, pub_unc, n, k=k, n_clusters=n // 10, n_each=10, rng=0)
    total_dp = time.perf_counter() - start
    print(f"  {'diverse_public() end to end':<44} {total_dp:7.2f} s")

    print("near-private, by stage:")
    center, scale = timed("public centre and scale", public_features, pub)
    sigma = timed("calibrate σ (analytic Gaussian)", calibrate_gaussian, epsilon=0.4, delta=1e-5)
    comps = timed(
        "DP-PCA of private embeddings",
        dp_pca_components,
        (priv - center) / scale,
        p_comp,
        noise_multiplier=sigma,
        rng=0,
    )
    chosen = timed(
        "uncertain private points (public τ)", uncertain_private, priv_unc, pub_unc, k, "threshold"
    )
    counts = timed(
        "nearest-candidate support counts",
        support_counts,
        ((pub[cand] - center) / scale) @ comps,
        ((priv[chosen] - center) / scale) @ comps,
    )
    timed("Laplace noise", laplace_counts, counts, epsilon=0.6, sensitivity=1.0, rng=0)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        near_private(
            pub,
            pub_unc,
            priv,
            priv_unc,
            n,
            config=NearPrivateConfig(k=k),
            ledger=Ledger(f"{tmp}/ledger.json"),
            rng=0,
        )
        total_np = time.perf_counter() - start
    print(f"  {'near_private() end to end':<44} {total_np:7.2f} s")
    print(f"total: diverse-public {total_dp:.1f} s, near-private {total_np:.1f} s (target < 60 s)")


if __name__ == "__main__":
    main()
