import math

import pytest
from dp_accounting import dp_event
from dp_accounting.pld import pld_privacy_accountant

from dpal.core.errors import DpalError
from dpal.privacy.accounting import (
    DpsgdSchedule,
    calibrate_noise_multiplier,
    epsilon,
    steps_for_epochs,
)


def test_known_answers_tf_privacy_mnist_schedule():
    # σ=1.1, q=256/60000, 60 epochs of ⌊60000/256⌋ = 234 steps, δ=1e-5 (dp-accounting 0.6).
    steps = steps_for_epochs(60, 256 / 60000)
    assert steps == 60 * 234
    event = DpsgdSchedule(noise_multiplier=1.1, sample_rate=256 / 60000, steps=steps).event()
    assert epsilon(event, delta=1e-5, accountant="rdp") == pytest.approx(2.594, abs=5e-4)
    assert epsilon(event, delta=1e-5, accountant="pld") == pytest.approx(2.380, abs=5e-4)


def test_known_answer_opacus():
    steps = steps_for_epochs(90, 0.04)
    event = DpsgdSchedule(noise_multiplier=1.5, sample_rate=0.04, steps=steps).event()
    assert epsilon(event, delta=1e-5, accountant="rdp") == pytest.approx(7.3291, abs=5e-4)


def test_prv_agrees_with_pld():
    event = DpsgdSchedule(noise_multiplier=1.1, sample_rate=256 / 60000, steps=14040).event()
    prv = epsilon(event, delta=1e-5, accountant="prv")
    pld = epsilon(event, delta=1e-5, accountant="pld")
    assert abs(prv - pld) < 0.05


@pytest.mark.parametrize("accountant", ["pld", "rdp"])
def test_calibrate_account_round_trip(accountant):
    q, steps = 512 / 60000, 2000
    sigma = calibrate_noise_multiplier(
        target_epsilon=2.0, delta=1e-5, sample_rate=q, steps=steps, accountant=accountant
    )
    schedule = DpsgdSchedule(noise_multiplier=sigma, sample_rate=q, steps=steps)
    eps = epsilon(schedule.event(), delta=1e-5, accountant=accountant)
    assert eps <= 2.0
    assert eps > 1.98  # the smallest such σ, not just any
    smaller = DpsgdSchedule(noise_multiplier=sigma * 0.99, sample_rate=q, steps=steps)
    assert epsilon(smaller.event(), delta=1e-5, accountant=accountant) > 2.0


def test_more_noise_less_epsilon_more_steps_more_epsilon():
    base = dict(sample_rate=0.01, steps=1000)
    e1 = epsilon(DpsgdSchedule(noise_multiplier=1.0, **base).event(), delta=1e-5)
    e2 = epsilon(DpsgdSchedule(noise_multiplier=2.0, **base).event(), delta=1e-5)
    e3 = epsilon(
        DpsgdSchedule(noise_multiplier=1.0, sample_rate=0.01, steps=2000).event(), delta=1e-5
    )
    assert e2 < e1 < e3


def test_pld_matches_direct_dp_accounting():
    event = DpsgdSchedule(noise_multiplier=1.3, sample_rate=0.02, steps=500).event()
    acc = pld_privacy_accountant.PLDAccountant()
    acc.compose(
        dp_event.SelfComposedDpEvent(
            dp_event.PoissonSampledDpEvent(0.02, dp_event.GaussianDpEvent(1.3)), 500
        )
    )
    assert epsilon(event, delta=1e-6) == pytest.approx(acc.get_epsilon(1e-6), rel=1e-9)


def test_no_noise_is_infinite_epsilon():
    event = DpsgdSchedule(noise_multiplier=0.0, sample_rate=0.1, steps=10).event()
    assert math.isinf(epsilon(event, delta=1e-5))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(target_epsilon=0.0, delta=1e-5, sample_rate=0.1, steps=10), "positive"),
        (dict(target_epsilon=-1.0, delta=1e-5, sample_rate=0.1, steps=10), "positive"),
        (dict(target_epsilon=1.0, delta=1.0, sample_rate=0.1, steps=10), "delta"),
        (dict(target_epsilon=1.0, delta=0.0, sample_rate=0.1, steps=10), "delta"),
        (dict(target_epsilon=1.0, delta=1e-5, sample_rate=0.0, steps=10), "sample rate"),
        (dict(target_epsilon=1.0, delta=1e-5, sample_rate=1.5, steps=10), "sample rate"),
        (dict(target_epsilon=1.0, delta=1e-5, sample_rate=0.1, steps=0), "steps"),
    ],
)
def test_bad_privacy_parameters(kwargs, message):
    with pytest.raises(DpalError, match=message):
        calibrate_noise_multiplier(**kwargs)


def test_bad_schedule_and_accountant():
    with pytest.raises(DpalError, match="sample rate"):
        DpsgdSchedule(noise_multiplier=1.0, sample_rate=-0.1, steps=1)
    with pytest.raises(DpalError, match="noise_multiplier"):
        DpsgdSchedule(noise_multiplier=-1.0, sample_rate=0.1, steps=1)
    event = DpsgdSchedule(noise_multiplier=1.0, sample_rate=0.1, steps=1).event()
    with pytest.raises(DpalError, match="accountant"):
        epsilon(event, delta=1e-5, accountant="moments")  # type: ignore[arg-type]
