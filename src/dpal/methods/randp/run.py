"""``dpal randp run``: DP-RandP end to end, with its baselines in the same runner.

Per seed: Phase I learns a prior from random-process images (free; shared by every ε); then, for
each ε, one DP-SGD run whose first ``linear_probe_epochs`` train only the head (Phase II, DP linear
probing) and the rest every layer (Phase III) — one σ, one q, one ledger for both phases. Beside
it, on the same network and the same ε and number of epochs: DP-SGD from scratch, and the
non-private upper bound (same network, epochs and learning rate, per-example clipping kept but no
noise: ``TrainConfig.nonprivate_clip``). Each arm is a cell of
:mod:`dpal.runs.cells`: resumable, with provenance.

Recipes: ``cpu`` — a small GroupNorm CNN, a short prior and a short DP schedule that fit 2 CPU
cores; ``full`` — the paper's scale (WRN-16-4, batch 4096, augmentation multiplicity K = 16,
~875 steps at ε = 1 on CIFAR-10), meant for a GPU (``--device cuda``).
"""

from __future__ import annotations

import copy
import json
import statistics
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn

from dpal.core.atomic import atomic_write_text
from dpal.core.errors import DpalError
from dpal.data.tasks import Task, load_task
from dpal.methods.randp.prior import PriorConfig, learn_prior
from dpal.runs.cells import Cell, run_cells
from dpal.training.checkpoint import list_checkpoints
from dpal.training.config import TrainConfig
from dpal.training.network import instance_name
from dpal.training.trainer import train

ARMS = ("dp-randp", "dp-scratch", "non-private")


@dataclass(frozen=True, kw_only=True)
class RandpRecipe:
    prior: PriorConfig
    train: TrainConfig  # dataset, ε and seed are set per cell


RECIPES: dict[str, RandpRecipe] = {
    "cpu": RandpRecipe(
        prior=PriorConfig(model="cnn-gn", steps=2000, batch_size=128, lr=0.1, pool=30_000),
        train=TrainConfig(
            model="cnn-gn",
            epochs=3,
            linear_probe_epochs=1,
            batch_size=1024,
            lr=2.0,
            ema=0.99,
            # the head reads features centred and scaled on random-process images (free): without
            # it, DP linear probing of the prior reached 23% on CIFAR-10 after one epoch at ε = 1
            # instead of 30% (docs/RESULTS.md)
            standardize_features=True,
            epsilon=1.0,
        ),
    ),
    "full": RandpRecipe(
        prior=PriorConfig(model="wrn-16-4", steps=20_000, batch_size=512),
        train=TrainConfig(
            model="wrn-16-4",
            epochs=73,
            linear_probe_epochs=10,
            batch_size=4096,
            lr=4.0,
            ema=0.999,
            augment="shift-flip",
            augment_copies=16,
            max_shift=4,
            epsilon=1.0,
        ),
    ),
}


@dataclass(frozen=True, kw_only=True)
class RandpConfig:
    dataset: str = "cifar10"
    epsilons: tuple[float, ...] = (1.0, 3.0, 8.0)
    recipe: str = "cpu"
    seeds: int = 1
    # Seeds first_seed … first_seed + seeds − 1: two processes can share one --out folder (one
    # seed each); a later run over all the seeds finds every cell done and writes the table.
    first_seed: int = 0
    arms: tuple[str, ...] = ARMS
    prior: PriorConfig | None = None  # default: the recipe's
    train: TrainConfig | None = None

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise DpalError(f"unknown recipe {self.recipe!r}; choose one of {', '.join(RECIPES)}.")
        unknown = set(self.arms) - set(ARMS)
        if unknown:
            raise DpalError(f"unknown arms {sorted(unknown)}; choose from {', '.join(ARMS)}.")

    def resolved(self) -> tuple[PriorConfig, TrainConfig]:
        recipe = RECIPES[self.recipe]
        return self.prior or recipe.prior, self.train or recipe.train


def run_randp(
    config: RandpConfig,
    out: str | Path,
    *,
    data_dir: str | None = None,
    task: Task | None = None,
    device: str = "cpu",
    progress: bool = True,
    model: nn.Module | None = None,
) -> list[dict[str, Any]]:
    """Every cell of ``config`` into ``out`` (resumable). ``model``: your own ``nn.Module``
    instead of the recipe's network; the prior and each arm train fresh copies of it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.json", json.dumps(asdict(config), indent=1))
    task = task or load_task(config.dataset, data_dir=data_dir)
    prior_config, train_config = config.resolved()
    c, h, w = task.image_shape
    if h != w:
        raise DpalError(f"DP-RandP needs square images, {task.name} has {h}×{w}.")
    name = instance_name(model) if model is not None else train_config.model
    prior_config = replace(prior_config, size=h, channels=c, model=name)

    def cells() -> Iterator[Cell]:
        for seed in range(config.first_seed, config.first_seed + config.seeds):
            prior_path = out / "prior" / f"seed{seed}.pt"
            for eps in config.epsilons:
                for arm in config.arms:
                    if arm == "non-private" and eps != config.epsilons[0]:
                        continue  # one upper bound per seed: it does not depend on ε
                    yield Cell(
                        seed,
                        f"{arm}-eps{eps}" if arm != "non-private" else arm,
                        _arm(
                            arm,
                            eps,
                            seed,
                            prior_path,
                            prior_config,
                            train_config,
                            task,
                            device,
                            progress,
                            model,
                        ),
                    )

    rows = run_cells(out, cells(), progress=progress)
    atomic_write_text(out / "results.json", json.dumps(rows, indent=1))
    atomic_write_text(out / "results.md", randp_table(rows))
    plot_randp(rows, out / "accuracy_vs_epsilon.png", task.name)
    return rows


def _arm(
    arm: str,
    eps: float,
    seed: int,
    prior_path: Path,
    prior_config: PriorConfig,
    train_config: TrainConfig,
    task: Task,
    device: str,
    progress: bool,
    model: nn.Module | None = None,
) -> Callable[[Path], tuple[dict[str, Any], dict[str, Any]]]:
    def compute(cell_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        tc = replace(train_config, dataset=task.name, seed=seed, epsilon=eps)
        if arm == "dp-randp":
            _ensure_prior(replace(prior_config, seed=seed), prior_path, progress, model)
            tc = replace(tc, init=str(prior_path))
        elif arm == "dp-scratch":
            tc = replace(tc, linear_probe_epochs=0)
        else:
            tc = replace(
                tc,
                private=False,
                epsilon=None,
                noise_multiplier=None,
                linear_probe_epochs=0,
                nonprivate_clip=True,  # same update rule and lr as the DP arms, without noise
            )
        run_dir = cell_dir / "run"
        fresh = copy.deepcopy(model) if model is not None else None
        result = train(tc, run_dir, task=task, progress=progress, device=device, model=fresh)
        final = list_checkpoints(run_dir)[-1]
        row = {
            "arm": arm,
            "epsilon_target": eps if arm != "non-private" else None,
            "epsilon": result.epsilon,
            "test_accuracy": result.test_accuracy,
            "epochs": tc.epochs,
            "linear_probe_epochs": tc.linear_probe_epochs,
        }
        return row, {
            "train": tc.to_dict(),
            "prior": asdict(prior_config) if tc.init else None,
            "checkpoint": final["path"],
            "delta": tc.delta,
        }

    return compute


def _ensure_prior(
    config: PriorConfig, path: Path, progress: bool, model: nn.Module | None = None
) -> None:
    """Phase I (random-process images only, no ledger), once per seed; a prior already on disk
    is reused only if it was learned with the same configuration."""
    if path.exists():
        import torch

        stored = torch.load(path, map_location="cpu", weights_only=True).get("config")
        if stored != asdict(config):
            raise DpalError(
                f"{path} holds a prior learned with another Phase I configuration; "
                "use a new --out folder, or delete that file to learn it again."
            )
        return
    fresh = copy.deepcopy(model) if model is not None else None
    learn_prior(config, path, progress=progress, model=fresh)


def randp_table(rows: list[dict[str, Any]]) -> str:
    groups: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["arm"], r["epsilon_target"]), []).append(r)
    lines = [
        "| arm | target ε | ε (PLD) | test acc. (mean ± std) | seeds |",
        "|---|---|---|---|---|",
    ]
    for (arm, eps), rs in groups.items():
        accs = [100 * r["test_accuracy"] for r in rs]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        got = statistics.fmean(r["epsilon"] for r in rs)
        lines.append(
            f"| {arm} | {eps if eps is not None else '∞'} | {got:.3f} | "
            f"{statistics.fmean(accs):.2f} ± {sd:.2f} | {len(rs)} |"
        )
    return "\n".join(lines) + "\n"


def plot_randp(rows: list[dict[str, Any]], path: Path, dataset: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    for arm in ("dp-randp", "dp-scratch"):
        by_eps: dict[float, list[float]] = {}
        for r in rows:
            if r["arm"] == arm:
                by_eps.setdefault(r["epsilon_target"], []).append(100 * r["test_accuracy"])
        if by_eps:
            xs = sorted(by_eps)
            ax.errorbar(
                xs,
                [statistics.fmean(by_eps[e]) for e in xs],
                yerr=[statistics.stdev(by_eps[e]) if len(by_eps[e]) > 1 else 0 for e in xs],
                marker="o",
                capsize=3,
                label=arm,
            )
    upper = [100 * r["test_accuracy"] for r in rows if r["arm"] == "non-private"]
    if upper:
        ax.axhline(statistics.fmean(upper), color="grey", ls="--", label="non-private")
    ax.set_xlabel("ε (δ = 1e-5)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"DP-RandP on {dataset}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
