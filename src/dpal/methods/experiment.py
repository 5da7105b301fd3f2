"""``dpal run mnist``: the active-learning experiment of Zhao et al. (2019), Figure 1, on the
offline MNIST protocol — a DP baseline, then every strategy at several label budgets.

Resumable: each cell (seed × method × n_labeled) is a :class:`~dpal.runs.cells.Cell`; a
finished one is not run again. Everything lands in one directory: ``results.json``,
``results.md`` and ``accuracy_vs_labels.png``.
"""

from __future__ import annotations

import functools
import json
import statistics
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from dpal.atomic import atomic_write_text
from dpal.data.tasks import Task, load_task
from dpal.errors import DpalError
from dpal.labeling.oracle import Oracle
from dpal.methods.active_learning import SelectConfig, improve
from dpal.methods.budget import plan_budget
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
    epsilon_support: float = 0.6
    extra_candidates: int = 2000  # k = n_labeled + this
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

ROW_KEYS = (
    "test_accuracy",
    "epsilon_dp",
    "epsilon_total",
    "epsilon_naive",
    "n_rejected",
    "n_polluted",
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
                    f"{_slug(method)}-{n}",
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
    if method == EQUAL_EPSILON:
        _, fit = plan_budget(
            dp_dir,
            epsilon_limit=config.epsilon_dp,
            epsilon_pca=config.epsilon_pca,
            epsilon_support=config.epsilon_support,
        )
        if fit is None:
            raise DpalError(
                f"no checkpoint of {dp_dir} leaves room for ε_pca + ε_support under "
                f"ε = {config.epsilon_dp}; lower --epsilon-pca / --epsilon-support."
            )
        start = fit.path
    select = SelectConfig(
        strategy="near-private" if method == EQUAL_EPSILON else method,
        n_labeled=n,
        k=n + config.extra_candidates,
        n_each=config.n_each,
        epsilon_pca=config.epsilon_pca,
        epsilon_support=config.epsilon_support,
        delta=final["delta"],
        seed=seed,
        deterministic_noise=config.train.deterministic_noise,
    )
    result, resolved = improve_cell(
        start,
        cell_dir,
        select,
        replace(config.finetune, seed=seed),
        task=task,
        label_polluted_as=config.label_polluted_as,
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
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One improvement (select, label with the pool's labels, fine-tune) as an experiment cell:
    its result and the configuration it resolved to."""
    assert task.public is not None
    oracle = Oracle(task.public.y, task.public_valid, label_polluted_as)
    result = improve(start, cell_dir, select, finetune_config, task=task, oracle=oracle)
    resolved = {
        "checkpoint": str(start),
        "select": asdict(select),
        "finetune": asdict(finetune_config),
        "label_polluted_as": label_polluted_as,
        "delta": select.delta,
    }
    return result.to_dict(), resolved


def _slug(method: str) -> str:
    """Plain-ASCII folder name: "near-private (equal ε)" → "near-private-equal-eps"."""
    return method.replace(" (equal ε)", "-equal-eps").replace(" ", "-")


def _summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["n_labeled"]), []).append(r)
    out = []
    for (method, n), rs in groups.items():
        accs = [r["test_accuracy"] for r in rs]
        out.append(
            {
                "method": method,
                "n_labeled": n,
                "seeds": len(rs),
                "mean": statistics.fmean(accs),
                "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                "epsilon_dp": statistics.fmean(r["epsilon_dp"] for r in rs),
                "epsilon_total": statistics.fmean(r["epsilon_total"] for r in rs),
                "epsilon_naive": statistics.fmean(r["epsilon_naive"] for r in rs),
                "n_polluted": statistics.fmean(r.get("n_polluted", 0) for r in rs),
            }
        )
    return out


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The results table; a column of polluted images bought appears when there were any."""
    summary = _summary(rows)
    polluted = any(s["n_polluted"] for s in summary)
    extra = (" polluted bought |", "---|") if polluted else ("", "")
    lines = [
        "| method | labels | test acc. (mean ± std) | seeds | ε_dp | ε_total (PLD) | naive sum |"
        + extra[0],
        "|---|---|---|---|---|---|---|" + extra[1],
    ]
    for s in summary:
        lines.append(
            f"| {s['method']} | {s['n_labeled']} | {100 * s['mean']:.2f} ± {100 * s['std']:.2f} "
            f"| {s['seeds']} | {s['epsilon_dp']:.3f} | {s['epsilon_total']:.3f} "
            f"| {s['epsilon_naive']:.3f} |" + (f" {s['n_polluted']:.0f} |" if polluted else "")
        )
    return "\n".join(lines) + "\n"


def plot(
    rows: list[dict[str, Any]],
    path: Path,
    *,
    panels: list[tuple[str, list[str]]] | None = None,
) -> None:
    """Accuracy against labels bought, mean ± std over seeds; one panel per (title, methods),
    by default a single panel with every method. The DP baseline is the dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = _summary(rows)
    every = list(dict.fromkeys(s["method"] for s in summary if s["n_labeled"] > 0))
    panels = panels or [("Improving a DP model with public labels", every)]
    colour = {m: f"C{i % 10}" for i, m in enumerate(every)}  # one colour per method, all panels
    cols = len(panels) if len(panels) <= 2 else 2
    rows_ = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(6.4 * cols, 4.4 * rows_), squeeze=False)
    base = [s for s in summary if s["n_labeled"] == 0]
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    for ax, (title, methods) in zip(axes.flat, panels, strict=False):
        for method in methods:
            pts = sorted(
                (s for s in summary if s["method"] == method and s["n_labeled"] > 0),
                key=lambda s: s["n_labeled"],
            )
            if not pts:
                continue
            ax.errorbar(
                [s["n_labeled"] for s in pts],
                [100 * s["mean"] for s in pts],
                yerr=[100 * s["std"] for s in pts],
                marker="o",
                capsize=3,
                color=colour.get(method),
                label=f"{method} (ε_total≈{pts[0]['epsilon_total']:.2f})",
            )
        if base:
            ax.axhline(
                100 * base[0]["mean"],
                color="grey",
                ls="--",
                label=f"DP baseline (ε={base[0]['epsilon_dp']:.2f})",
            )
        ax.set_xlabel("public labels bought (N_labeled)")
        ax.set_ylabel(
            f"test accuracy (%), mean ± std over {max(s['seeds'] for s in summary)} seeds"
        )
        ax.set_title(title)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
