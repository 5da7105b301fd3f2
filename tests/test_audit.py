"""``dpal audit``: the bounds are valid (they exceed a true ε no more often than their confidence
allows), the audits stay below the claim on dpal's mechanisms, and they have the power to see a
mechanism that adds less noise than it claims."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

import dpal.training.dpsgd as dpsgd
from dpal.audit.dpsgd import DpsgdAuditConfig, audit_dpsgd
from dpal.audit.near_private import NearPrivateAuditConfig, audit_near_private
from dpal.privacy.audit import one_run_audit, one_run_epsilon, one_run_p_value, two_sets_epsilon

pytestmark = pytest.mark.filterwarnings("ignore:dataset 'audit-canaries' has no test split")


def test_one_run_p_value_is_the_fair_coin_tail_at_epsilon_zero():
    assert one_run_p_value(100, 40, 30, 0.0, 0.0) == pytest.approx(stats.binom.sf(29, 40, 0.5))
    # the δ term only adds: a looser test
    assert one_run_p_value(100, 40, 30, 1.0, 1e-3) > one_run_p_value(100, 40, 30, 1.0, 0.0)


def test_one_run_bound_exceeds_the_true_epsilon_no_more_often_than_allowed():
    """Guesses right with probability e^ε/(1+e^ε) — randomised response, exactly ε-DP: the 90%
    bound may exceed ε in at most ~10% of audits (binomial slack for 400 audits)."""
    rng = np.random.default_rng(0)
    eps, r, audits = 1.0, 200, 400
    right = rng.binomial(r, 1 / (1 + math.exp(-eps)), size=audits)
    over = sum(one_run_epsilon(r, r, int(v), delta=0.0, confidence=0.9) > eps for v in right)
    assert over <= stats.binom.ppf(0.999, audits, 0.1)
    assert one_run_epsilon(r, r, r, delta=0.0, confidence=0.9) > 2  # all right: a large bound


def test_two_sets_bound_is_valid_on_the_laplace_mechanism():
    rng = np.random.default_rng(1)
    eps, n, audits, over = 0.5, 2000, 200, 0
    for _ in range(audits):
        d = rng.laplace(0, 1 / eps, n) >= 1
        d_prime = 1 + rng.laplace(0, 1 / eps, n) >= 1
        over += two_sets_epsilon(int(d.sum()), n, int(d_prime.sum()), n, confidence=0.9) > eps
    assert over <= stats.binom.ppf(0.999, audits, 0.1)


def test_one_run_audit_of_random_scores_finds_nothing():
    rng = np.random.default_rng(2)
    found = one_run_audit(rng.normal(size=1000), rng.random(1000) < 0.5, delta=1e-5,
                          confidence=0.95)  # fmt: skip
    assert found["epsilon_lower"] < 0.3


AUDIT = dict(noise_multiplier=2.0, sample_rate=0.1, dataset_size=2000, epochs=5, canaries=1000)


@pytest.mark.parametrize("secure", [False, True], ids=["os-entropy", "secure"])
def test_dpsgd_audit_stays_below_the_claim(tmp_path, secure):
    report = audit_dpsgd(DpsgdAuditConfig(**AUDIT, secure_noise=secure), tmp_path)
    assert 0 < report["epsilon_lower"] <= report["claimed_epsilon"]
    saved = json.loads((tmp_path / "audit.json").read_text())
    assert saved["epsilon_lower"] == report["epsilon_lower"]
    assert "not part of any released model" in (tmp_path / "NOT_A_RELEASE.txt").read_text()


def test_dpsgd_audit_sees_noise_ten_times_too_small(tmp_path, monkeypatch):
    real = dpsgd.add_gaussian_noise
    monkeypatch.setattr(dpsgd, "add_gaussian_noise", lambda s, std, g: real(s, std / 10, g))
    report = audit_dpsgd(DpsgdAuditConfig(**AUDIT), tmp_path)
    assert report["epsilon_lower"] > report["claimed_epsilon"]


NP_TRIALS = 400


def test_near_private_audit_stays_below_the_claim(tmp_path):
    report = audit_near_private(NearPrivateAuditConfig(trials=NP_TRIALS), tmp_path)
    assert all(e["epsilon_lower"] <= e["claimed_epsilon"] for e in report["events"])
    assert report["claimed_epsilon"] == pytest.approx(1.0)


def test_near_private_audit_sees_laplace_noise_ten_times_too_small(tmp_path, monkeypatch):
    import dpal.selection.near_private as np_module
    import dpal.selection.private_density as density_module

    for module in (np_module, density_module):
        real = module.laplace_counts
        monkeypatch.setattr(
            module, "laplace_counts",
            lambda c, *, epsilon, sensitivity, rng, real=real: real(
                c, epsilon=10 * epsilon, sensitivity=sensitivity, rng=rng
            ),
        )  # fmt: skip
    report = audit_near_private(NearPrivateAuditConfig(trials=NP_TRIALS), tmp_path)
    assert report["epsilon_lower"] > report["claimed_epsilon"]
    assert any(e["epsilon_lower"] > e["claimed_epsilon"] for e in report["events"][:2])


def test_dpsgd_audit_reruns_into_the_same_folder(tmp_path):
    small = {**AUDIT, "dataset_size": 500, "epochs": 1, "canaries": 100}
    first = audit_dpsgd(DpsgdAuditConfig(**small), tmp_path)
    second = audit_dpsgd(DpsgdAuditConfig(**small), tmp_path)  # replaces the first's run
    assert first["claimed_epsilon"] == second["claimed_epsilon"]
    assert json.loads((tmp_path / "audit.json").read_text()) == second
