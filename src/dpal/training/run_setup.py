"""A training run's set-up: its noise and sampling rate, the checks of its input, its record
(``run.json``) and the ε of its steps so far."""

from __future__ import annotations

import json
import math
from pathlib import Path

from dpal.core.atomic import atomic_write_text
from dpal.core.errors import DpalError, warn
from dpal.data.tasks import Task
from dpal.privacy.accounting import (
    DpsgdSchedule,
    calibrate_noise_multiplier,
    epsilon,
    steps_for_epochs,
)
from dpal.training.config import TrainConfig


def resolve_noise(config: TrainConfig, n_private: int) -> tuple[float, float]:
    """(σ, q) for ``config`` on ``n_private`` examples; σ calibrated when ε is the target."""
    q = min(1.0, config.batch_size / n_private)
    if config.noise_multiplier is not None:
        return config.noise_multiplier, q
    assert config.epsilon is not None
    steps = steps_for_epochs(config.epochs, q)
    sigma = calibrate_noise_multiplier(
        target_epsilon=config.epsilon, delta=config.delta, sample_rate=q, steps=steps
    )
    return sigma, q


def check_task(config: TrainConfig, task: Task) -> None:
    """Refuse what cannot be private; warn about what is private only in name."""
    n = len(task.private)
    if n == 0:
        raise DpalError(f"dataset {task.name!r} has no training images.")
    if config.private and config.batch_size > n:
        raise DpalError(
            f"--batch-size {config.batch_size} is larger than the {n} private training images: "
            f"Poisson sampling would take every image at every step (q = 1, no amplification "
            f"by sampling); choose --batch-size < {n}."
        )
    if config.private and config.batch_size == n:
        warn(
            f"--batch-size equals the {n} training images: q = 1, every image every step "
            "(no amplification by sampling); a smaller --batch-size is usual."
        )
    if config.private and config.delta >= 1 / n:
        warn(
            f"δ = {config.delta:g} ≥ 1/N = {1 / n:.3g}: a mechanism that publishes one "
            f"of the {n} training images at random meets it; choose --delta < {1 / n:.1g}."
        )
    if task.test is None:
        warn(f"dataset {task.name!r} has no test split: test accuracy will not be measured.")


def lineage_epsilon(config: TrainConfig, sigma: float, q: float, steps: int) -> float:
    """ε of the steps behind one checkpoint (its own lineage), PLD."""
    if not config.private:
        return math.inf
    schedule = DpsgdSchedule(noise_multiplier=sigma, sample_rate=q, steps=steps)
    return epsilon(schedule.event(), delta=config.delta, accountant="pld")


def write_run_config(
    out: Path, config: TrainConfig, task: Task, sigma: float, q: float, per_epoch: int
) -> None:
    from dpal import __version__

    payload = {
        "config": config.to_dict(),
        "dataset": task.name,
        "n_private": len(task.private),
        "noise_multiplier": sigma if config.private else None,
        "sample_rate": q,
        "steps_per_epoch": per_epoch,
        "dpal_version": __version__,
        "note": "hyper-parameter choices are not privacy-accounted",
    }
    atomic_write_text(out / "run.json", json.dumps(payload, indent=1))
