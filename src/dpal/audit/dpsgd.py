"""``dpal audit dpsgd``: a one-run audit (Steinke, Nasr & Jagielski 2023) of DP-SGD as dpal runs
it — its Poisson sampler, per-example clipping, noise source and noise scale — with a run's own
σ, q, steps and clip bound.

The canaries are *gradient-space* canaries made of real examples, so they go through the
trainer unchanged: m images of width m, canary i all black but pixel i; a parameter-free layer
turns pixel i into the one-hot feature 10·C·e_i, and a bias-free linear layer W (2 × m, zero at
the start) maps it to two logits, every canary labelled 0. Each canary's gradient therefore
lives in column i of W alone, in the fixed direction (−1, 1)/√2 (the gradient of the
cross-entropy in the logits is (p₀ − 1, p₁) = p₁·(−1, 1)), with norm 10·√2·C·p₁ ≫ C while p₁
stays near ½ — so the clip always bites and a sampled canary adds exactly C·(−1, 1)/√2 to the
clipped sum. Blank images (gradient 0) fill the set to the run's size, so q and the number of
steps are the run's. Half of the canaries, chosen at random, are in the set.

With plain SGD (no momentum, no EMA, constant learning rate) the final W is −lr·Σ_t g̃_t: the sum
of every released noisy gradient — the white-box view the accountant allows the adversary. The
score of canary i, W[0, i] − W[1, i], is ∝ C·(times i was sampled) + N(0, T·σ²C²) if i is in,
and the noise alone if not: the auditor guesses in for the highest scores and out for the lowest.

What this audits and what not: the mechanism (sampling, clipping, noise) with the run's
parameters, not the run's network or data — by design, since an audit that trained on the
private data would itself spend privacy. The network's per-example gradients are checked
against a per-example loop in the tests.
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dpal.core.atomic import atomic_write_text
from dpal.core.errors import DpalError
from dpal.data.arrays import ImageArrays
from dpal.data.tasks import Task
from dpal.privacy import noise_source
from dpal.privacy.accounting import DpsgdSchedule, epsilon
from dpal.privacy.audit import one_run_audit
from dpal.training.config import TrainConfig
from dpal.training.trainer import train

NOT_A_RELEASE = (
    "audit run: synthetic canaries and blank images only, no private data read; "
    "not part of any released model"
)
MAGNITUDE = 10.0  # the canary feature is MAGNITUDE·C·e_i: its gradient norm ≫ C, always clipped


class CanaryFeatures(nn.Module):
    """[-1, 1] pixels → ``scale``·(x + 1)/2: a canary's one lit pixel becomes ``scale``·e_i."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * (x.flatten(1) + 1) / 2


def canary_model(canaries: int, clip: float) -> nn.Sequential:
    linear = nn.Linear(canaries, 2, bias=False)
    nn.init.zeros_(linear.weight)
    return nn.Sequential(CanaryFeatures(MAGNITUDE * clip), linear)


def canary_task(canaries: int, included: np.ndarray, dataset_size: int) -> Task:
    """The included canaries, then blank images up to ``dataset_size``; every label 0."""
    rows = np.flatnonzero(included)
    if len(rows) > dataset_size:
        raise DpalError(f"{len(rows)} canaries do not fit a set of {dataset_size}: use fewer.")
    x = np.zeros((dataset_size, 1, canaries, 1), dtype=np.uint8)
    x[np.arange(len(rows)), 0, rows, 0] = 255
    labels = np.zeros(dataset_size, dtype=np.int64)
    return Task("audit-canaries", ImageArrays.create(x, labels, num_classes=2), test=None)


@dataclass(frozen=True)
class DpsgdAuditConfig:
    noise_multiplier: float
    sample_rate: float
    dataset_size: int
    epochs: int
    clip: float = 1.0
    delta: float = 1e-5
    secure_noise: bool = False
    canaries: int = 1000
    confidence: float = 0.95
    seed: int = 0  # which canaries are in (the noise is fresh: OS entropy or the CSPRNG)

    @classmethod
    def from_run(cls, run_dir: Path, **overrides: Any) -> DpsgdAuditConfig:
        """The σ, q, N, epochs, clip, δ and noise mode of a finished ``dpal train`` run."""
        try:
            run = json.loads((Path(run_dir) / "run.json").read_text())
        except FileNotFoundError:
            raise DpalError(f"{run_dir} has no run.json: give a `dpal train` run folder.") from None
        cfg = run["config"]
        if run.get("noise_multiplier") is None:
            raise DpalError(f"{run_dir} trained without privacy: there is no ε to audit.")
        values = dict(
            noise_multiplier=run["noise_multiplier"], sample_rate=run["sample_rate"],
            dataset_size=run["n_private"], epochs=cfg["epochs"], clip=cfg.get("clip", 1.0),
            delta=cfg.get("delta", 1e-5), secure_noise=cfg.get("secure_noise", False),
        )  # fmt: skip
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def audit_dpsgd(config: DpsgdAuditConfig, out: Path) -> dict[str, Any]:
    """Run the canary audit into ``out`` (its own training folder and ledger) → audit.json."""
    if config.canaries < 10:
        raise DpalError(f"--canaries must be ≥ 10, got {config.canaries}.")
    out = Path(out)
    included = np.random.default_rng(config.seed).random(config.canaries) < 0.5
    task = canary_task(config.canaries, included, config.dataset_size)
    batch = config.sample_rate * config.dataset_size
    if abs(batch - round(batch)) > 1e-6 * batch:
        raise DpalError(f"q·N = {batch} is not a whole batch size; audit with another N.")
    schedule = DpsgdSchedule(
        noise_multiplier=config.noise_multiplier, sample_rate=config.sample_rate,
        steps=config.epochs * max(1, int(1.0 / config.sample_rate)),
    )  # fmt: skip
    # Small steps keep p₁ ≈ ½ (the clip always bites); the ranking does not depend on lr.
    lr = 0.1 * batch / (MAGNITUDE * config.clip**2 * max(config.noise_multiplier, 0.1))
    lr /= math.sqrt(schedule.steps)
    train_config = TrainConfig(
        dataset="audit-canaries", epochs=config.epochs, batch_size=round(batch), lr=lr,
        momentum=0.0, clip=config.clip, noise_multiplier=config.noise_multiplier,
        delta=config.delta, ema=0.0, seed=config.seed, secure_noise=config.secure_noise,
    )  # fmt: skip
    training = out / "training"
    if training.exists() and (out / "NOT_A_RELEASE.txt").exists():
        shutil.rmtree(training)  # an earlier audit's own synthetic run: a rerun replaces it
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "NOT_A_RELEASE.txt", NOT_A_RELEASE + "\n")
    with warnings.catch_warnings():  # the canary set has no test split, by design
        warnings.filterwarnings("ignore", message="dataset 'audit-canaries' has no test split")
        model = canary_model(config.canaries, config.clip)
        result = train(train_config, training, task=task, model=model, progress=False)
    linear = next(m for m in result.model.modules() if isinstance(m, nn.Linear))
    weight = linear.weight.detach().double()
    scores = (weight[0] - weight[1]).numpy()
    found = one_run_audit(scores, included, delta=config.delta, confidence=config.confidence)
    claimed = epsilon(schedule.event(), delta=config.delta)
    report = {
        "mechanism": "dpsgd",
        "method": "one-run audit, white-box gradient canaries (Steinke, Nasr & Jagielski 2023)",
        "claimed_epsilon": claimed,
        "epsilon_lower": found["epsilon_lower"],
        "confidence": config.confidence,
        "delta": config.delta,
        "canaries": config.canaries,
        "guesses": found["guesses"],
        "correct": found["correct"],
        "noise_multiplier": config.noise_multiplier,
        "sample_rate": config.sample_rate,
        "steps": schedule.steps,
        "noise": noise_source.source(False, config.secure_noise),
        "note": NOT_A_RELEASE,
    }
    atomic_write_text(out / "audit.json", json.dumps(report, indent=1))
    return report
