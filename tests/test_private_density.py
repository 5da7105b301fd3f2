"""NearPrivate's density filter: its sensitivity on neighbouring datasets, its noise, an
empirical privacy audit of its release, and what it is for — keeping foreign pool images out."""

import numpy as np
import pytest
from scipy.stats import beta

from dpal.privacy.ledger import Ledger
from dpal.selection import private_density
from dpal.selection.near_private import NearPrivateConfig, near_private


def _clusters(seed=0, n=300, d=6, c=12):
    rng = np.random.default_rng(seed)
    public = rng.normal(size=(n, d))
    return rng, private_density.cluster_pool(public, n_clusters=c, n_components=4, seed=seed)


def test_histogram_sensitivity_on_neighbouring_datasets():
    """Δ₁ = 1: adding or removing one private point changes one cluster's count by exactly 1."""
    rng, clusters = _clusters()
    assert private_density.DENSITY_SENSITIVITY == 1.0
    for _ in range(200):
        private = rng.normal(size=(int(rng.integers(1, 60)), 6)) * rng.uniform(0.5, 3)
        extra = rng.normal(size=(1, 6)) * rng.uniform(0.5, 6)
        a = private_density.private_histogram(clusters, private)
        b = private_density.private_histogram(clusters, np.vstack([private, extra]))
        assert np.abs(b - a).sum() == 1.0  # attained by every neighbour, never exceeded
        assert b.sum() == len(private) + 1


def test_histogram_noise_is_laplace_of_scale_one_over_epsilon():
    _, clusters = _clusters()
    private = np.random.default_rng(1).normal(size=(100, 6))
    exact = private_density.private_histogram(clusters, private)
    rng = np.random.default_rng(2)
    noise = np.stack(
        [
            private_density.noisy_histogram(clusters, private, epsilon=0.5, rng=rng) - exact
            for _ in range(3000)
        ]
    )
    # Laplace(b): E|X| = b, Var X = 2b²; b = Δ₁/ε = 2
    assert np.abs(noise).mean() == pytest.approx(2.0, rel=0.03)
    assert noise.var() == pytest.approx(8.0, rel=0.06)
    assert abs(noise.mean()) < 0.05


def _lower_bound(k_hit: int, n: int, alpha: float) -> float:
    return float(beta.ppf(alpha, k_hit, n - k_hit + 1)) if k_hit else 0.0


def _upper_bound(k_hit: int, n: int, alpha: float) -> float:
    return float(beta.ppf(1 - alpha, k_hit + 1, n - k_hit)) if k_hit < n else 1.0


def test_audit_of_the_released_histogram_stays_below_the_claimed_epsilon():
    """Neighbouring private sets D ⊂ D′ (one extra point, in cluster j), many noisy releases, the
    most telling event for a Laplace count (noisy count_j ≥ its count under D′, where the
    likelihood ratio is largest): Clopper–Pearson bounds give a 99.9%-confidence lower bound on
    the privacy loss, which must not exceed ε — and must come close to it, or the audit could not
    catch a mechanism with too little noise."""
    epsilon, n = 0.6, 10_000
    _, clusters = _clusters()
    private = np.random.default_rng(3).normal(size=(80, 6))
    extra = np.random.default_rng(4).normal(size=(1, 6))
    neighbour = np.vstack([private, extra])
    j = int(np.argmax(private_density.private_histogram(clusters, neighbour)
                      - private_density.private_histogram(clusters, private)))  # fmt: skip
    threshold = private_density.private_histogram(clusters, neighbour)[j]
    rng = np.random.default_rng(5)

    def hits(data):
        return sum(
            private_density.noisy_histogram(clusters, data, epsilon=epsilon, rng=rng)[j]
            >= threshold
            for _ in range(n)
        )

    k_neighbour, k_base = hits(neighbour), hits(private)
    alpha = 0.0005  # each side; 99.9% together
    eps_lower = np.log(_lower_bound(k_neighbour, n, alpha) / _upper_bound(k_base, n, alpha))
    assert eps_lower <= epsilon
    assert eps_lower > 0.8 * epsilon  # the audit has the power to see a wrong scale


def test_density_ratio_and_support():
    _, clusters = _clusters(c=4)
    sizes = clusters.sizes
    private_counts = np.array([sizes[0], sizes[1], 0.0, sizes[3] * 0.3])  # cluster 2: foreign
    ratios = private_density.density_ratios(clusters, private_counts)
    assert ratios[2] == 0.0
    assert ratios[0] == pytest.approx(ratios[1]) and ratios[0] > 1.0
    kept = private_density.supported_points(clusters, ratios, at_least=1)
    assert set(np.unique(clusters.labels[kept])) == {0, 1}
    everything = private_density.supported_points(clusters, ratios, at_least=len(clusters.labels))
    assert len(everything) == len(clusters.labels)  # topped up by ratio until there are enough
    assert private_density.n_clusters_for(37_500) == 750
    assert private_density.n_clusters_for(10_000_000) == private_density.MAX_CLUSTERS


def _polluted_pool(seed=0):
    """In-distribution points in 5 blobs, 25% foreign points far away; the model is most
    uncertain about the foreign ones (as a classifier is about another dataset's images)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(5, 8)) * 4
    inside = centres[rng.integers(0, 5, 1500)] + rng.normal(size=(1500, 8))
    foreign = rng.normal(size=(500, 8)) + 12.0
    public = np.vstack([inside, foreign])
    public_unc = np.concatenate([rng.uniform(0, 0.7, 1500), rng.uniform(0.5, 1.0, 500)])
    private = centres[rng.integers(0, 5, 1500)] + rng.normal(size=(1500, 8))
    private_unc = rng.uniform(0, 0.7, 1500)
    is_foreign = np.arange(2000) >= 1500
    return public, public_unc, private, private_unc, is_foreign


@pytest.mark.parametrize("seed", [0, 1])
def test_the_default_keeps_foreign_pool_points_out(tmp_path, seed):
    """With the paper's candidate set (k = N + a few hundred) the top-k are mostly foreign, and
    Algorithm 2 can only pick among them; the density filter asks private support first."""
    public, public_unc, private, private_unc, is_foreign = _polluted_pool(seed)
    n = 200
    picked = {}
    for pool_filter in ("density", "none"):
        cfg = NearPrivateConfig(k=n + 300, n_components=4, pool_filter=pool_filter)
        result = near_private(
            public, public_unc, private, private_unc, n,
            config=cfg, ledger=Ledger(tmp_path / f"{pool_filter}.json"), rng=seed,
        )  # fmt: skip
        picked[pool_filter] = int(is_foreign[result.indices].sum())
        if pool_filter == "density":
            assert result.supported is not None and not is_foreign[result.supported].any()
    assert picked["none"] > 100  # the paper's order buys mostly foreign points here
    assert picked["density"] == 0


def test_on_a_clean_pool_nearly_everything_is_supported(tmp_path):
    rng = np.random.default_rng(0)
    public, private = rng.normal(size=(3000, 8)), rng.normal(size=(3000, 8))
    result = near_private(
        public, rng.uniform(size=3000), private, rng.uniform(size=3000), 100,
        config=NearPrivateConfig(k=600), ledger=Ledger(tmp_path / "l.json"), rng=0,
    )  # fmt: skip
    assert result.supported is not None and len(result.supported) > 0.9 * 3000
