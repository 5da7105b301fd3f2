"""ε of a mechanism, and σ for a target ε — pure functions over ``dp_accounting`` events.

Adjacency is add/remove-one example throughout (``NeighborRel.ADD_OR_REMOVE_ONE``).

DP-SGD with Poisson sampling of rate ``q`` and Gaussian noise of multiplier ``σ`` (noise standard
deviation σ·C on a sum of per-example gradients clipped to norm C, whose add/remove sensitivity is
C) for ``steps`` steps is the event ``SelfComposed(PoissonSampled(q, Gaussian(σ)), steps)``.
The training loop builds that event from the same :class:`DpsgdSchedule` that drives its sampler
and its noise, so the three cannot drift apart.

Example:
    >>> s = DpsgdSchedule(noise_multiplier=1.1, sample_rate=256 / 60000, steps=60 * 234)
    >>> round(epsilon(s.event(), delta=1e-5, accountant="rdp"), 3)
    2.594
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import dp_accounting
from dp_accounting import dp_event
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

from dpal.core.errors import DpalError

Accountant = Literal["pld", "rdp", "prv"]
ACCOUNTANTS: tuple[Accountant, ...] = ("pld", "rdp", "prv")

# PLD discretisation: 1e-4 is dp_accounting's default and is pessimistic (an upper bound).
PLD_DISCRETIZATION = 1e-4
_ADD_REMOVE = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE


def check_delta(delta: float) -> None:
    if not 0.0 < delta < 1.0:
        raise DpalError(f"delta must be in (0, 1), got {delta}; the usual choice is 1e-5 or 1/n.")


def check_epsilon(eps: float, name: str = "epsilon") -> None:
    if not (eps > 0.0 and math.isfinite(eps)):
        raise DpalError(f"{name} must be a positive finite number, got {eps}.")


def check_sample_rate(q: float) -> None:
    if not 0.0 < q <= 1.0:
        raise DpalError(f"sample rate must be in (0, 1], got {q}; it is batch_size / dataset_size.")


@dataclass(frozen=True, kw_only=True)
class DpsgdSchedule:
    """What DP-SGD runs: Poisson sampling at ``sample_rate``, noise ``noise_multiplier``·C."""

    noise_multiplier: float
    sample_rate: float
    steps: int

    def __post_init__(self) -> None:
        if not (self.noise_multiplier >= 0 and math.isfinite(self.noise_multiplier)):
            raise DpalError(
                f"noise_multiplier must be a finite number ≥ 0, got {self.noise_multiplier}."
            )
        check_sample_rate(self.sample_rate)
        if self.steps < 0 or int(self.steps) != self.steps:
            raise DpalError(f"steps must be a whole number ≥ 0, got {self.steps}.")

    def event(self) -> dp_event.DpEvent:
        if self.steps == 0:
            return dp_event.NoOpDpEvent()
        if self.noise_multiplier == 0:
            return dp_event.NonPrivateDpEvent()
        step = dp_event.PoissonSampledDpEvent(
            self.sample_rate, dp_event.GaussianDpEvent(self.noise_multiplier)
        )
        return dp_event.SelfComposedDpEvent(step, int(self.steps))


def steps_per_epoch(sample_rate: float) -> int:
    """Steps in one pass: ⌊1/q⌋ (Opacus's and TF Privacy's convention, ⌊N/B⌋)."""
    check_sample_rate(sample_rate)
    return max(1, int(1.0 / sample_rate))


def steps_for_epochs(epochs: int, sample_rate: float) -> int:
    """Steps in ``epochs`` passes of ⌊1/q⌋ Poisson-sampled steps each."""
    if epochs <= 0 or int(epochs) != epochs:
        raise DpalError(f"epochs must be a whole number > 0, got {epochs}.")
    return int(epochs) * steps_per_epoch(sample_rate)


def _pld_epsilon(event: dp_event.DpEvent, delta: float) -> float:
    acc = pld_privacy_accountant.PLDAccountant(
        neighboring_relation=_ADD_REMOVE, value_discretization_interval=PLD_DISCRETIZATION
    )
    acc.compose(event)
    return float(acc.get_epsilon(delta))


def _for_rdp(event: dp_event.DpEvent) -> dp_event.DpEvent:
    """``event`` with each discrete Laplace (which dp_accounting's RDP accountant does not know)
    replaced by a zCDP event that bounds it: a mechanism that is ε-DP is ½ε²-zCDP (Bun & Steinke
    2016, Prop. 1.4), and the discrete Laplace of parameter a on sensitivity Δ is (aΔ)-DP."""
    if isinstance(event, dp_event.DiscreteLaplaceDpEvent):
        pure = event.noise_parameter * event.sensitivity
        return dp_event.ZCDpEvent(0.5 * pure**2)
    if isinstance(event, dp_event.ComposedDpEvent):
        return dp_event.ComposedDpEvent([_for_rdp(e) for e in event.events])
    if isinstance(event, dp_event.SelfComposedDpEvent):
        return dp_event.SelfComposedDpEvent(_for_rdp(event.event), event.count)
    return event


def _rdp_epsilon(event: dp_event.DpEvent, delta: float) -> float:
    acc = rdp_privacy_accountant.RdpAccountant(neighboring_relation=_ADD_REMOVE)
    acc.compose(_for_rdp(event))
    return float(acc.get_epsilon(delta))


def _prv_epsilon(event: dp_event.DpEvent, delta: float) -> float:
    """PRV accountant (Gopi et al. 2021): upper end of its error bracket, for DP-SGD only."""
    from prv_accountant import PRVAccountant
    from prv_accountant.privacy_random_variables import PoissonSubsampledGaussianMechanism

    if not isinstance(event, dp_event.SelfComposedDpEvent) or not isinstance(
        event.event, dp_event.PoissonSampledDpEvent
    ):
        raise DpalError("the prv accountant here handles one DP-SGD schedule; use pld or rdp.")
    inner = event.event
    assert isinstance(inner.event, dp_event.GaussianDpEvent)
    prv = PoissonSubsampledGaussianMechanism(
        sampling_probability=inner.sampling_probability,
        noise_multiplier=inner.event.noise_multiplier,
    )
    acc = PRVAccountant(
        prvs=prv, max_self_compositions=event.count, eps_error=0.01, delta_error=delta / 1000
    )
    _low, _estimate, upper = acc.compute_epsilon(delta=delta, num_self_compositions=[event.count])
    return float(upper)


def epsilon(event: dp_event.DpEvent, *, delta: float, accountant: Accountant = "pld") -> float:
    """ε at ``delta`` of ``event`` under add/remove-one adjacency (``inf`` if non-private)."""
    check_delta(delta)
    if accountant not in ACCOUNTANTS:
        raise DpalError(
            f"unknown accountant {accountant!r}; choose one of {', '.join(ACCOUNTANTS)}."
        )
    if isinstance(event, dp_event.NoOpDpEvent):
        return 0.0
    if _contains_nonprivate(event):
        return math.inf
    return {"pld": _pld_epsilon, "rdp": _rdp_epsilon, "prv": _prv_epsilon}[accountant](event, delta)


def _contains_nonprivate(event: dp_event.DpEvent) -> bool:
    if isinstance(event, dp_event.NonPrivateDpEvent):
        return True
    if isinstance(event, dp_event.ComposedDpEvent):
        return any(_contains_nonprivate(e) for e in event.events)
    if isinstance(event, dp_event.SelfComposedDpEvent | dp_event.PoissonSampledDpEvent):
        return _contains_nonprivate(event.event)
    return False


def calibrate_noise_multiplier(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: Accountant = "pld",
    tolerance: float = 1e-3,
) -> float:
    """Smallest σ (to ``tolerance``) whose DP-SGD schedule has ε ≤ ``target_epsilon`` at δ."""
    check_epsilon(target_epsilon, "target epsilon")
    check_delta(delta)
    check_sample_rate(sample_rate)
    if steps <= 0:
        raise DpalError(f"steps must be > 0, got {steps}.")
    if accountant == "prv":
        raise DpalError("calibrate with the pld or rdp accountant; prv is for checking.")

    def make_event(sigma: float) -> dp_event.DpEvent:
        return DpsgdSchedule(noise_multiplier=sigma, sample_rate=sample_rate, steps=steps).event()

    def make_accountant() -> dp_accounting.PrivacyAccountant:
        if accountant == "rdp":
            return rdp_privacy_accountant.RdpAccountant(neighboring_relation=_ADD_REMOVE)
        return pld_privacy_accountant.PLDAccountant(
            neighboring_relation=_ADD_REMOVE, value_discretization_interval=PLD_DISCRETIZATION
        )

    def rdp_accountant() -> dp_accounting.PrivacyAccountant:
        return rdp_privacy_accountant.RdpAccountant(neighboring_relation=_ADD_REMOVE)

    # RDP is cheap at every σ; PLD is slow (and memory-hungry) at tiny σ. So bracket with RDP
    # first: RDP's ε upper-bounds PLD's, hence σ_pld ≤ σ_rdp, and the PLD search stays near it.
    sigma_rdp = dp_accounting.calibrate_dp_mechanism(
        rdp_accountant,
        make_event,
        target_epsilon,
        delta,
        bracket_interval=dp_accounting.LowerEndpointAndGuess(1e-3, 1.0),
        tol=tolerance,
    )
    if accountant == "rdp":
        return float(sigma_rdp)
    lower = 0.5 * sigma_rdp
    while epsilon(make_event(lower), delta=delta, accountant="pld") <= target_epsilon:
        lower *= 0.5
    sigma = dp_accounting.calibrate_dp_mechanism(
        make_accountant,
        make_event,
        target_epsilon,
        delta,
        bracket_interval=dp_accounting.ExplicitBracketInterval(lower, sigma_rdp),
        tol=tolerance,
    )
    return float(sigma)
