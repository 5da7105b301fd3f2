"""Strategies on tiny arrays with known answers; NearPrivate's privacy on neighbouring data."""

import numpy as np
import pytest
from dp_accounting import dp_event
from dp_accounting.pld import pld_privacy_accountant

from dpal.core.errors import DpalError
from dpal.privacy.ledger import Ledger
from dpal.selection import diverse_public, entropy, margin, random_selection, top_uncertain
from dpal.selection.near_private import (
    NearPrivateConfig,
    near_private,
    selection_events,
    support_counts,
    uncertain_private,
)

LOGITS = np.array([[5.0, 0.0, 0.0], [1.0, 0.9, 0.0], [2.0, 2.0, 2.0], [3.0, 1.0, 0.0]])


def test_entropy_and_margin_order():
    assert np.argsort(-entropy(LOGITS)).tolist() == [2, 1, 3, 0]
    assert margin(LOGITS).tolist() == pytest.approx([5.0, 0.1, 0.0, 2.0])
    assert top_uncertain(-margin(LOGITS), 2).tolist() == [2, 1]
    assert entropy(LOGITS)[2] == pytest.approx(np.log(3))


def test_random_is_reproducible_and_distinct():
    a = random_selection(100, 30, rng=5)
    assert np.array_equal(a, random_selection(100, 30, rng=5))
    assert len(set(a.tolist())) == 30
    assert not np.array_equal(a, random_selection(100, 30, rng=6))


def _blobs(rng, centres, n_per, spread=0.05):
    """Point-symmetric blobs (c ± v) of n_per - 1 points plus c itself: each blob's mean — the
    k-means centre — is exactly c, and the point at c is the one nearest to it."""
    blobs = []
    for c in centres:
        v = spread * rng.normal(size=((n_per - 1) // 2, len(c)))
        blobs.append(np.vstack([c[None], c + v, c - v]))
    return np.vstack(blobs)


def test_diverse_public_takes_the_points_nearest_each_centre():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0]], dtype=float)
    emb = _blobs(rng, centres, 21)  # rows 0, 21, 42 sit at the centres
    unc = np.ones(63)
    picked = diverse_public(emb, unc, 3, k=63, n_clusters=3, n_each=1, n_components=3, rng=0)
    assert sorted(picked.tolist()) == [0, 21, 42]
    # only the k most uncertain are candidates
    unc2 = np.zeros(63)
    unc2[21:42] = 1.0
    picked = diverse_public(emb, unc2, 2, k=21, n_clusters=1, n_each=2, n_components=3, rng=0)
    assert all(21 <= i < 42 for i in picked) and 21 in picked


def test_diverse_public_same_seed_same_selection_and_fills_shortfall():
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(300, 8))
    unc = rng.uniform(size=300)
    a = diverse_public(emb, unc, 40, k=120, n_clusters=4, n_each=10, rng=3)
    assert np.array_equal(a, diverse_public(emb, unc, 40, k=120, n_clusters=4, n_each=10, rng=3))
    # one far-away point makes a cluster of size 1 → shortfall is filled: still 40 distinct
    emb[0] = 1000.0
    unc[0] = 2.0
    b = diverse_public(emb, unc, 40, k=120, n_clusters=4, n_each=10, rng=3)
    assert len(set(b.tolist())) == 40 and 0 in b


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_labeled=301, k=400, n_clusters=301, n_each=1), "pool of 300"),
        (dict(n_labeled=40, k=30, n_clusters=4, n_each=10), "k \\(candidates\\)"),
        (dict(n_labeled=40, k=100, n_clusters=3, n_each=10), "n_clusters × n_each"),
    ],
)
def test_diverse_public_bad_requests(kwargs, message):
    rng = np.random.default_rng(0)
    n = kwargs.pop("n_labeled")
    with pytest.raises(DpalError, match=message):
        diverse_public(rng.normal(size=(300, 4)), rng.uniform(size=300), n, **kwargs)


def test_empty_pool_is_an_error():
    with pytest.raises(DpalError, match="empty"):
        random_selection(0, 1, rng=0)


def test_support_counts_nearest_neighbour():
    public = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    private = np.array([[1.0, 0.0], [9.0, 1.0], [8.0, 0.0], [0.0, 0.5]])
    assert support_counts(public, private).tolist() == [2.0, 2.0, 0.0]


def _counts(private_z, private_unc, public_z, public_unc, k, mode):
    chosen = uncertain_private(private_unc, public_unc, k, mode)
    cand = np.argsort(-public_unc, kind="stable")[:k]
    return support_counts(public_z[cand], private_z[chosen])


@pytest.mark.parametrize("mode, bound", [("threshold", 1.0), ("top-k", 2.0)])
def test_support_count_sensitivity_on_neighbouring_datasets(mode, bound):
    """The Δ₁ the mechanism calibrates its Laplace noise to is the one measured here."""
    assert NearPrivateConfig(k=10, private_selection=mode).sensitivity == bound
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(300):
        public_z, public_unc = rng.normal(size=(30, 2)), rng.uniform(size=30)
        private_z, private_unc = rng.normal(size=(25, 2)), rng.uniform(size=25)
        extra_z, extra_unc = rng.normal(size=(1, 2)), rng.uniform(size=1)
        a = _counts(private_z, private_unc, public_z, public_unc, 10, mode)
        b = _counts(
            np.vstack([private_z, extra_z]),
            np.concatenate([private_unc, extra_unc]),
            public_z,
            public_unc,
            10,
            mode,
        )
        worst = max(worst, np.abs(a - b).sum())
    assert worst <= bound
    assert worst == bound  # the bound is attained: top-k really has Δ₁ = 2


@pytest.mark.parametrize("pool_filter", ["density", "none"])
def test_near_private_records_both_mechanisms_and_total_matches_dp_accounting(
    tmp_path, pool_filter
):
    rng = np.random.default_rng(0)
    public_emb, private_emb = rng.normal(size=(500, 8)), rng.normal(size=(800, 8))
    public_unc, private_unc = rng.uniform(size=500), rng.uniform(size=800)
    ledger = Ledger(tmp_path / "ledger.json")
    dpsgd = ledger.record_dpsgd(noise_multiplier=1.1, sample_rate=0.01, steps=300, mechanism="t")
    ledger.resolve(dpsgd, "done")
    cfg = NearPrivateConfig(
        k=100, n_components=4, epsilon_pca=0.4, epsilon_support=0.6, pool_filter=pool_filter
    )
    result = near_private(
        public_emb, public_unc, private_emb, private_unc, 20, config=cfg, ledger=ledger, rng=1
    )
    assert len(set(result.indices.tolist())) == 20
    assert set(result.indices.tolist()) <= set(result.candidates.tolist())
    kinds = [e.kind for e in ledger.entries]
    first = (
        dp_event.GaussianDpEvent(result.noise_multiplier_pca)
        if pool_filter == "none"
        else dp_event.LaplaceDpEvent(1 / cfg.epsilon_density)
    )
    assert kinds == ["dpsgd", "gaussian" if pool_filter == "none" else "laplace", "laplace"]
    assert ledger.entries[2].params["noise_multiplier"] == pytest.approx(1 / 0.6)
    assert [e.mechanism for e in ledger.entries[1:]] == [
        "near-private:dp-pca" if pool_filter == "none" else "near-private:density-counts",
        "near-private:support-counts",
    ]
    direct = pld_privacy_accountant.PLDAccountant()
    direct.compose(
        dp_event.ComposedDpEvent(
            [
                dp_event.SelfComposedDpEvent(
                    dp_event.PoissonSampledDpEvent(0.01, dp_event.GaussianDpEvent(1.1)), 300
                ),
                first,
                dp_event.LaplaceDpEvent(1 / 0.6),
            ]
        )
    )
    totals = ledger.totals(delta=1e-5)
    assert totals.epsilon_pld == pytest.approx(direct.get_epsilon(1e-5), rel=1e-6)
    assert totals.epsilon_pld < totals.epsilon_naive
    planned = selection_events(cfg, 1e-5)  # what the budget planner composes
    assert [type(e) for e in planned] == [type(first), dp_event.LaplaceDpEvent]
    again = near_private(
        public_emb,
        public_unc,
        private_emb,
        private_unc,
        20,
        config=cfg,
        ledger=Ledger(tmp_path / "l2.json"),
        rng=1,
    )
    assert np.array_equal(again.indices, result.indices)  # same seed, same selection


def test_near_private_bad_config():
    with pytest.raises(DpalError, match="epsilon_pca"):
        NearPrivateConfig(k=10, epsilon_pca=0.0)
    with pytest.raises(DpalError, match="private_selection"):
        NearPrivateConfig(k=10, private_selection="all")
    with pytest.raises(DpalError, match="pool_filter"):
        NearPrivateConfig(k=10, pool_filter="cifar")
    with pytest.raises(DpalError, match="epsilon_density"):
        NearPrivateConfig(k=10, epsilon_density=-1.0)
