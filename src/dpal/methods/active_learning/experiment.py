"""``dpal run mnist``: the active-learning experiment of Zhao et al. (2019), Figure 1, on the
offline MNIST protocol — a DP baseline, then every strategy at several label budgets.

Resumable: each cell (seed × method × n_labeled) is a :class:`~dpal.runs.cells.Cell`; a
finished one is not run again. Everything lands in one directory: ``results.json``,
``results.md`` and ``accuracy_vs_labels.png``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from dpal.core.atomic import atomic_write_text
from dpal.core.errors import DpalError
from dpal.data.tasks import Task, load_task
from dpal.labeling.oracle import Oracle
from dpal.methods.active_learning.budget import plan_budget
from dpal.methods.active_learning.guard import GuardConfig
from dpal.methods.active_learning.improve import SelectConfig, improve
from dpal.methods.active_learning.tables import markdown_table, method_slug, plot
from dpal.runs.cells import Cell, dp_model, run_cells
from dpal.selection.strategies import STRATEGIES
from dpal.training.config import TrainConfig
from dpal.training.finetune import FinetuneConfig

EQUAL_EPSILON = "near-private (equal ε)"


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    dataset: str = "mnist-offline"
    epsilon_dp: float = 3.2
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(dataset="mnist-offline", epsilon=3.2)
    )
    n_labeled: tuple[int, ...] = (500, 1000, 2000, 4000, 7000)
    methods: tuple[str, ...] = STRATEGIES
    seeds: int = 1
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    epsilon_pca: float = 0.4
    epsilon_density: float = 0.4
    epsilon_support: float = 0.6
    pool_filter: str = "density"  # NearPrivate's; "none" is the paper's Algorithm 2
    extra_candidates: int = 2000  # k = n_labeled + this
    # The guard: this share of the bought labels decides between the fine-tuned and the DP model
    # (dpal.methods.active_learning.guard); 0 switches it off.
    validation_fraction: float = 0.2
    n_each: int = 10
    # Polluted pools: None, the annotator rejects non-digits; a class, the harsher case of an
    # annotator who gives every image that class.
    label_polluted_as: int | None = None
    # NearPrivate starts from the final checkpoint (its ε_total exceeds ε_dp), from the
    # checkpoint `dpal budget` picks so that ε_total ≤ epsilon_dp ("equal"), or both.
    near_private_from: str = "both"

    def __post_init__(self) -> None:
        if self.near_private_from not in ("final", "equal", "both"):
            raise DpalError(
                f"near_private_from must be final, equal or both, not {self.near_private_from!r}."
            )


QUICK = ExperimentConfig(
    train=TrainConfig(dataset="mnist-offline", epsilon=3.2, epochs=4),
    n_labeled=(200, 500),
    finetune=FinetuneConfig(epochs=20),
)

# Issue #13's protocol on a pretrained backbone: the DP model is a DP linear probe of
# EfficientNet-Lite0 at 160 px (the probe's recipe, chosen on a held-out split of CIFAR-10's
# training set: docs/RESULTS.md), and the bought labels fine-tune its head on the cached features.
CIFAR10_OFFLINE = ExperimentConfig(
    dataset="cifar10-offline",
    train=TrainConfig(
        dataset="cifar10-offline",
        model="efficientnet-lite0",
        finetune="linear-probe",
        image_size=160,
        batch_size=4096,
        lr=4.0,
        epochs=30,
        ema=0.0,
        epsilon=3.2,
    ),
    n_labeled=(500, 1000, 2000, 4000),
    finetune=FinetuneConfig(augment="none"),
)
CIFAR10_OFFLINE_QUICK = replace(
    CIFAR10_OFFLINE,
    train=replace(CIFAR10_OFFLINE.train, epochs=5),
    n_labeled=(500,),
    finetune=FinetuneConfig(augment="none", epochs=20),
)

ROW_KEYS = (
    "test_accuracy",
    "epsilon_dp",
    "epsilon_total",
    "epsilon_naive",
    "n_rejected",
    "n_polluted",
    "kept",
)


def run_experiment(
    config: ExperimentConfig,
    out_dir: str | Path,
    *,
    data_dir: str | None = None,
    progress: bool = True,
    dp_root: str | Path | None = None,
    task: Task | None = None,
) -> list[dict[str, Any]]:
    """Every cell of ``config`` (skipping finished ones), then ``results.json``, ``results.md``
    and ``accuracy_vs_labels.png`` in ``out_dir``. DP models live in ``dp_root`` (default
    ``out_dir/dp``) so that other experiments can share them."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.json", json.dumps(asdict(config), indent=1, default=str))
    task = task or load_task(config.dataset, data_dir=data_dir)
    if task.public is None:
        raise DpalError(f"task {config.dataset!r} has no public pool to buy labels from.")
    rows = run_cells(
        out,
        experiment_cells(config, task, Path(dp_root or out / "dp"), progress=progress),
        progress=progress,
    )
    atomic_write_text(out / "results.json", json.dumps(rows, indent=1))
    atomic_write_text(out / "results.md", markdown_table(rows))
    plot(rows, out / "accuracy_vs_labels.png")
    return rows


def experiment_cells(
    config: ExperimentConfig, task: Task, dp_root: Path, *, progress: bool = True
) -> Iterator[Cell]:
    """The cells of one experiment: per seed, the DP baseline, then method × n_labeled."""
    for seed in range(config.seeds):
        train_config = replace(
            config.train, dataset=config.dataset, epsilon=config.epsilon_dp, seed=seed
        )

        def trained(tc: TrainConfig = train_config) -> tuple[Path, dict[str, Any]]:
            return dp_model(dp_root, tc, task, progress=progress)

        def baseline(_: Path, trained: Any = trained) -> tuple[dict[str, Any], dict[str, Any]]:
            _, final = trained()
            eps = final["epsilon"]
            row = {"method": "DP baseline", "n_labeled": 0, "test_accuracy": final["test_accuracy"]}
            row |= {"epsilon_dp": eps, "epsilon_total": eps, "epsilon_naive": eps}
            row |= {"n_rejected": 0, "n_polluted": 0}
            return row, {"checkpoint": final["path"], "delta": final["delta"]}

        yield Cell(seed, "dp-baseline", baseline)
        methods = [m for m in config.methods if m != "near-private"]
        if "near-private" in config.methods:
            if config.near_private_from in ("final", "both"):
                methods.append("near-private")
            if config.near_private_from in ("equal", "both"):
                methods.append(EQUAL_EPSILON)
        for method in methods:
            for n in config.n_labeled:
                yield Cell(
                    seed,
                    f"{method_slug(method)}-{n}",
                    functools.partial(_improve_cell, config, task, trained, method, n, seed),
                )


def _improve_cell(
    config: ExperimentConfig,
    task: Task,
    trained: Callable[[], tuple[Path, dict[str, Any]]],
    method: str,
    n: int,
    seed: int,
    cell_dir: Path,
) -> tuple[dict[str, Any], dict[str, Any]]:
    dp_dir, final = trained()
    start = final["path"]
    select = SelectConfig(
        strategy="near-private" if method == EQUAL_EPSILON else method,
        n_labeled=n,
        k=n + config.extra_candidates,
        n_each=config.n_each,
        epsilon_pca=config.epsilon_pca,
        epsilon_density=config.epsilon_density,
        epsilon_support=config.epsilon_support,
        pool_filter=config.pool_filter,
        delta=final["delta"],
        seed=seed,
        deterministic_noise=config.train.deterministic_noise,
        secure_noise=config.train.secure_noise,
    )
    if method == EQUAL_EPSILON:
        _, fit = plan_budget(
            dp_dir, epsilon_limit=config.epsilon_dp, near_private=select.near_private()
        )
        if fit is None:
            raise DpalError(
                f"no checkpoint of {dp_dir} leaves room for NearPrivate's ε under "
                f"ε = {config.epsilon_dp}; lower its --epsilon-* values."
            )
        start = fit.path
    result, resolved = improve_cell(
        start,
        cell_dir,
        select,
        replace(config.finetune, seed=seed),
        task=task,
        label_polluted_as=config.label_polluted_as,
        guard=GuardConfig(validation_fraction=config.validation_fraction, seed=seed),
    )
    return {"method": method, "n_labeled": n, **{k: result[k] for k in ROW_KEYS}}, resolved


def improve_cell(
    start: str | Path,
    cell_dir: Path,
    select: SelectConfig,
    finetune_config: FinetuneConfig,
    *,
    task: Task,
    label_polluted_as: int | None = None,
    guard: GuardConfig | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One improvement (select, label with the pool's labels, fine-tune behind the guard) as an
    experiment cell: its result and the configuration it resolved to."""
    assert task.public is not None
    oracle = Oracle(task.public.y, task.public_valid, label_polluted_as)
    guard = guard or GuardConfig(seed=finetune_config.seed)
    result = improve(
        start, cell_dir, select, finetune_config, task=task, oracle=oracle, guard=guard
    )
    resolved = {
        "checkpoint": str(start),
        "select": asdict(select),
        "finetune": asdict(finetune_config),
        "guard": asdict(guard),
        "label_polluted_as": label_polluted_as,
        "delta": select.delta,
    }
    return result.to_dict(), resolved
