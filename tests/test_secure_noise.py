"""``--secure-noise``: the distributions it draws (statistically, in both modes), the discrete
Laplace's privacy on neighbouring counts, and that the ledger says which mode ran."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from scipy import stats

from dpal.core.errors import DpalError
from dpal.privacy import noise_source
from dpal.privacy.accounting import epsilon as accountant_epsilon
from dpal.privacy.ledger import Ledger
from dpal.privacy.mechanisms import laplace_counts
from dpal.privacy.secure_noise import (
    SecureNoise,
    discrete_laplace,
    discrete_laplace_scale,
    standard_normal,
    uniforms,
)
from dpal.training.dpsgd import add_gaussian_noise

ALPHA = 1e-4  # each goodness-of-fit test fails a correct sampler once in 10,000 runs


def test_uniforms_lie_strictly_inside_the_unit_interval_and_are_uniform():
    u = uniforms(50_000)
    assert u.dtype == np.float64 and u.min() > 0 and u.max() < 1
    assert stats.kstest(u, "uniform").pvalue > ALPHA


@pytest.mark.parametrize("secure", [False, True], ids=["os-entropy", "secure"])
def test_dpsgd_noise_is_normal_with_the_calibrated_std_in_both_modes(secure):
    generator = noise_source.torch_noise_generator(deterministic=False, seed=0, secure=secure)
    std = 2.5
    zero = {"w": torch.zeros(40_000), "b": torch.zeros(200, 50)}
    noised = add_gaussian_noise(zero, std, generator)
    draws = torch.cat([v.flatten() for v in noised.values()]).double().numpy()
    assert stats.kstest(draws / std, "norm").pvalue > ALPHA
    # the sample std within 5 standard errors of σ (se of s ≈ σ/√(2n))
    assert abs(draws.std() - std) < 5 * std / math.sqrt(2 * len(draws))
    # tensors of equal shape get independent draws (pitfall 2), in both modes
    again = add_gaussian_noise({"a": torch.zeros(1000), "b": torch.zeros(1000)}, 1.0, generator)
    assert abs(float(torch.corrcoef(torch.stack([again["a"], again["b"]]))[0, 1])) < 0.2


def test_secure_gaussian_is_a_sum_of_four_draws_and_its_tails_are_normal():
    z = standard_normal(200_000)
    assert stats.kstest(z, "norm").pvalue > ALPHA
    # the tails, where floating-point Box–Muller artefacts would show: P(|Z| > 3)
    tail = np.mean(np.abs(z) > 3)
    expected = 2 * stats.norm.sf(3)
    assert abs(tail - expected) < 5 * math.sqrt(expected * (1 - expected) / len(z))


def test_discrete_laplace_has_the_exact_two_sided_geometric_pmf():
    scale = Fraction(5, 2)
    z = discrete_laplace(20_000, scale)
    assert z.dtype == np.int64
    support = np.arange(-12, 13)
    a = 1 / float(scale)
    pmf = np.exp(-a * np.abs(support)) * math.tanh(a / 2)
    observed = np.array([(z == k).sum() for k in support] + [(np.abs(z) > 12).sum()])
    expected = np.append(pmf, 1 - pmf.sum()) * len(z)
    assert stats.chisquare(observed, expected).pvalue > ALPHA


def test_discrete_laplace_scale_is_rounded_up_so_epsilon_never_grows():
    for eps, sens in [(0.4, 1), (0.6, 2), (1 / 3, 1)]:
        t = discrete_laplace_scale(eps, sens)
        assert sens / float(t) <= eps and sens / float(t) > eps * (1 - 1e-5)


def test_secure_laplace_counts_are_integers_and_epsilon_dp_on_neighbouring_counts():
    """Neighbouring histograms (one count differs by Δ = 1): for the output event {v ≥ c + 1}
    the probability ratio is exactly e^ε for the discrete Laplace; a 99.9%-confidence
    Clopper–Pearson lower bound on it must stay below ε (and come close: the test has power)."""
    eps, n = 0.5, 20_000
    rng = SecureNoise()
    d = laplace_counts(np.full(n, 10.0), epsilon=eps, sensitivity=1, rng=rng)
    d_prime = laplace_counts(np.full(n, 11.0), epsilon=eps, sensitivity=1, rng=rng)
    assert np.all(d == np.round(d))
    hits, hits_prime = int((d >= 11).sum()), int((d_prime >= 11).sum())
    p_upper = stats.beta.ppf(1 - 5e-4, hits + 1, n - hits)
    p_prime_lower = stats.beta.ppf(5e-4, hits_prime, n - hits_prime + 1)
    eps_lower = math.log(p_prime_lower / p_upper)
    assert 0.8 * eps < eps_lower <= eps


def test_secure_laplace_refuses_real_valued_statistics():
    with pytest.raises(DpalError, match="integer counts"):
        laplace_counts(np.array([0.5, 1.0]), epsilon=1.0, sensitivity=1, rng=SecureNoise())


def test_ledger_records_the_discrete_laplace_and_both_accountants_compose_it(tmp_path):
    rng = noise_source.numpy_noise_rng(deterministic=False, seed=0, secure=True)
    assert isinstance(rng, SecureNoise)
    kind, params = noise_source.laplace_entry(discrete=True, epsilon=0.6, sensitivity=1)
    assert kind == "discrete-laplace"
    ledger = Ledger(tmp_path / "ledger.json")
    entry = ledger.record(kind, mechanism="counts", params=params, noise=noise_source.SECURE)
    ledger.resolve(entry, "done")
    event = ledger.entries[entry].event()
    # pure ε-DP: at δ → 0 the PLD ε is the claimed 0.6 (never more); RDP via ½ε²-zCDP
    assert accountant_epsilon(event, delta=1e-12) <= 0.6 + 1e-3
    assert accountant_epsilon(event, delta=1e-5, accountant="rdp") > 0
    totals = ledger.totals(delta=1e-5)
    assert totals.epsilon_pld <= 0.6 + 1e-3
    assert Ledger(ledger.path).entries[entry].noise == noise_source.SECURE


def test_secure_and_deterministic_noise_exclude_each_other():
    from dpal.training.config import TrainConfig

    with pytest.raises(DpalError, match="exclude each other"):
        TrainConfig(dataset="mnist", epsilon=1.0, deterministic_noise=True, secure_noise=True)
    with pytest.raises(DpalError, match="exclude each other"):
        noise_source.source(True, True)


def test_training_with_secure_noise_records_it_and_resumes(tiny_task, tmp_path):
    from dpal.training.config import TrainConfig
    from dpal.training.trainer import train

    cfg = dict(dataset="synthetic", epochs=2, batch_size=40, lr=0.5, noise_multiplier=1.0)
    result = train(TrainConfig(**cfg, secure_noise=True), tmp_path, task=tiny_task, progress=False)
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    entries = Ledger(tmp_path / "ledger.json").entries
    assert {e.noise for e in entries if e.kind == "dpsgd"} == {noise_source.SECURE}
    resumed = train(
        TrainConfig(**{**cfg, "epochs": 3}, secure_noise=True), tmp_path, task=tiny_task,
        progress=False, resume=tmp_path / "checkpoints" / "epoch_002.pt",
    )  # fmt: skip
    assert resumed.history[-1]["epoch"] == 3 and resumed.epsilon > result.epsilon


def test_near_private_with_secure_noise_records_discrete_laplace_entries(tmp_path):
    from dpal.selection.near_private import NearPrivateConfig, near_private

    rng = np.random.default_rng(0)
    public_emb, private_emb = rng.normal(size=(500, 8)), rng.normal(size=(800, 8))
    ledger = Ledger(tmp_path / "ledger.json")
    result = near_private(
        public_emb, rng.uniform(size=500), private_emb, rng.uniform(size=800), 20,
        config=NearPrivateConfig(k=100, n_components=4), ledger=ledger, rng=SecureNoise(),
        noise=noise_source.SECURE,
    )  # fmt: skip
    assert len(set(result.indices.tolist())) == 20
    assert np.all(result.noisy_counts == np.round(result.noisy_counts))
    assert [e.kind for e in ledger.entries] == ["discrete-laplace", "discrete-laplace"]
    assert {e.noise for e in ledger.entries} == {noise_source.SECURE}
    density, support = (float(e.params["scale"]) for e in ledger.entries)
    assert 1 / density <= 0.4 and 1 / support <= 0.6  # default ε_density, ε_support


def test_budget_plans_the_discrete_laplace_that_secure_noise_records(tmp_path):
    """plan_budget accounts ``selection_events``; in secure mode they are the discrete Laplace
    events the selection then records, so the planned ε is the ε that lands in the ledger."""
    from dpal.selection.near_private import NearPrivateConfig, near_private, selection_events

    config = NearPrivateConfig(k=100, n_components=4, discrete_laplace=True)
    rng = np.random.default_rng(0)
    ledger = Ledger(tmp_path / "ledger.json")
    near_private(rng.normal(size=(300, 6)), rng.uniform(size=300), rng.normal(size=(200, 6)),
                 rng.uniform(size=200), 10, config=config, ledger=ledger,
                 rng=SecureNoise())  # fmt: skip
    assert [e.event() for e in ledger.entries] == selection_events(config, 1e-5)
