"""Budget planning (Zhao et al. 2019, §5.2): which checkpoint of a DP training run leaves room
for NearPrivate's two mechanisms (density histogram or DP-PCA, then the support counts) under a
total limit, composed tightly (PLD)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dp_accounting import dp_event

from dpal.core.errors import DpalError
from dpal.privacy.accounting import DpsgdSchedule, check_epsilon, epsilon
from dpal.selection.near_private import NearPrivateConfig, selection_events
from dpal.training.checkpoint import list_checkpoints


@dataclass(frozen=True)
class BudgetRow:
    epoch: int
    path: str
    epsilon_dp: float
    epsilon_total: float  # DP-SGD lineage ∘ NearPrivate's two mechanisms, PLD at δ
    epsilon_naive: float  # ε_dp + ε of each NearPrivate mechanism
    test_accuracy: float
    fits: bool


def plan_budget(
    run_dir: str | Path,
    *,
    epsilon_limit: float,
    near_private: NearPrivateConfig | None = None,
) -> tuple[list[BudgetRow], BudgetRow | None]:
    """Every checkpoint with its total ε after NearPrivate (``near_private``: its mechanisms;
    the default configuration if None); recommends the latest that fits.

    For the paper's variant, ε_pca is the DP-PCA step's ε alone at the run's δ (as NearPrivate
    calibrates it).
    """
    near_private = near_private or NearPrivateConfig(k=1)
    check_epsilon(epsilon_limit, "--epsilon-limit")
    checkpoints = [c for c in list_checkpoints(run_dir) if c.get("noise_multiplier")]
    if not checkpoints:
        raise DpalError(f"{run_dir}: no DP checkpoints found (is it a `dpal train` run dir?).")
    delta = checkpoints[0]["delta"]
    selection = selection_events(near_private, delta)
    epsilon_selection = near_private.epsilon_first + near_private.epsilon_support
    rows = []
    for c in checkpoints:
        dpsgd = DpsgdSchedule(
            noise_multiplier=c["noise_multiplier"], sample_rate=c["sample_rate"], steps=c["steps"]
        ).event()
        total = epsilon(dp_event.ComposedDpEvent([dpsgd, *selection]), delta=delta)
        rows.append(
            BudgetRow(
                c["epoch"],
                c["path"],
                c["epsilon"],
                total,
                c["epsilon"] + epsilon_selection,
                c["test_accuracy"],
                total <= epsilon_limit,
            )
        )
    fitting = [r for r in rows if r.fits]
    return rows, (fitting[-1] if fitting else None)
