"""Budget planning (Zhao et al. 2019, §5.2): which checkpoint of a DP training run leaves room
for NearPrivate's ε_pca + ε_support under a total limit, composed tightly (PLD)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dp_accounting import dp_event

from dpal.core.errors import DpalError
from dpal.privacy.accounting import DpsgdSchedule, check_epsilon, epsilon
from dpal.privacy.mechanisms import calibrate_gaussian
from dpal.training.checkpoint import list_checkpoints


@dataclass(frozen=True)
class BudgetRow:
    epoch: int
    path: str
    epsilon_dp: float
    epsilon_total: float  # DP-SGD lineage ∘ DP-PCA ∘ Laplace counts, PLD at δ
    epsilon_naive: float  # ε_dp + ε_pca + ε_support
    test_accuracy: float
    fits: bool


def plan_budget(
    run_dir: str | Path,
    *,
    epsilon_limit: float,
    epsilon_pca: float = 0.4,
    epsilon_support: float = 0.6,
) -> tuple[list[BudgetRow], BudgetRow | None]:
    """Every checkpoint with its total ε after NearPrivate; recommends the latest that fits.

    ε_pca is the DP-PCA step's ε alone at the run's δ (as NearPrivate calibrates it).
    """
    check_epsilon(epsilon_limit, "--epsilon-limit")
    checkpoints = [c for c in list_checkpoints(run_dir) if c.get("noise_multiplier")]
    if not checkpoints:
        raise DpalError(f"{run_dir}: no DP checkpoints found (is it a `dpal train` run dir?).")
    delta = checkpoints[0]["delta"]
    pca = dp_event.GaussianDpEvent(calibrate_gaussian(epsilon=epsilon_pca, delta=delta))
    counts = dp_event.LaplaceDpEvent(1.0 / epsilon_support)
    rows = []
    for c in checkpoints:
        dpsgd = DpsgdSchedule(
            noise_multiplier=c["noise_multiplier"], sample_rate=c["sample_rate"], steps=c["steps"]
        ).event()
        total = epsilon(dp_event.ComposedDpEvent([dpsgd, pca, counts]), delta=delta)
        rows.append(
            BudgetRow(
                c["epoch"],
                c["path"],
                c["epsilon"],
                total,
                c["epsilon"] + epsilon_pca + epsilon_support,
                c["test_accuracy"],
                total <= epsilon_limit,
            )
        )
    fitting = [r for r in rows if r.fits]
    return rows, (fitting[-1] if fitting else None)
