"""Figure 5: accuracy against the label budget at several privacy budgets."""

from __future__ import annotations

import functools
import statistics
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from dpal.core.errors import DpalError
from dpal.data.tasks import Task
from dpal.methods.active_learning.budget import plan_budget
from dpal.methods.active_learning.experiment import (
    ROW_KEYS,
    improve_cell,
)
from dpal.methods.active_learning.improve import SelectConfig
from dpal.reproduce.configs import (
    Fig5Config,
)
from dpal.reproduce.figure_run import FigureRun, group_by, mean_std, write_results
from dpal.runs.cells import Cell, dp_model
from dpal.selection.near_private import NearPrivateConfig
from dpal.training.checkpoint import list_checkpoints


def _fig5_cells(config: Fig5Config, task: Task, run: FigureRun) -> Iterator[Cell]:
    for seed in range(config.seeds):
        tc = replace(config.train, dataset=config.dataset, epsilon=config.epsilon_dp, seed=seed)
        trained = functools.partial(dp_model, run.dp_root, tc, task, progress=run.progress)

        def near_private_cell(
            cell_dir: Path,
            *,
            pick: Callable[[Path], dict[str, Any]],
            n: int,
            eps_support: float,
            seed: int = seed,
            trained: Any = trained,
        ) -> tuple[dict[str, Any], dict[str, Any]]:
            dp_dir, final = trained()
            start = pick(dp_dir)
            select = SelectConfig(
                strategy="near-private",
                n_labeled=n,
                k=n + config.extra_candidates,
                epsilon_pca=config.epsilon_pca,
                epsilon_support=eps_support,
                pool_filter="none",  # the paper's Algorithm 2: DP-PCA, then support counts
                delta=final["delta"],
                seed=seed,
                deterministic_noise=config.train.deterministic_noise,
                secure_noise=config.train.secure_noise,
            )
            ft = replace(config.finetune, seed=seed)
            result, resolved = improve_cell(start["path"], cell_dir, select, ft, task=task)
            row = {"method": "near-private", "n_labeled": n, "epoch": start["epoch"]}
            row |= {"epsilon_support": eps_support, **{k: result[k] for k in ROW_KEYS}}
            row["start_accuracy"] = result["start_accuracy"]
            return row, resolved

        for epoch in config.checkpoint_epochs:

            def at_epoch(dp_dir: Path, epoch: int = epoch) -> dict[str, Any]:
                match = [c for c in list_checkpoints(dp_dir) if c["epoch"] == epoch]
                if not match:
                    raise DpalError(f"{dp_dir} has no checkpoint of epoch {epoch}.")
                return match[0]

            for n in config.n_labeled:
                yield Cell(
                    seed,
                    f"epoch{epoch}-n{n}",
                    functools.partial(
                        near_private_cell, pick=at_epoch, n=n, eps_support=config.epsilon_support
                    ),
                )
        for eps_support in config.support_sweep:

            def budgeted(dp_dir: Path, eps_support: float = eps_support) -> dict[str, Any]:
                paper = NearPrivateConfig(
                    k=1,
                    epsilon_pca=config.epsilon_pca,
                    epsilon_support=eps_support,
                    pool_filter="none",
                )
                _, fit = plan_budget(dp_dir, epsilon_limit=config.epsilon_limit, near_private=paper)
                if fit is None:
                    raise DpalError(
                        f"fig5: no checkpoint fits ε_limit {config.epsilon_limit} with "
                        f"ε_support {eps_support}; raise epsilon_limit or drop that value."
                    )
                return {"path": fit.path, "epoch": fit.epoch}

            yield Cell(
                seed,
                f"support{eps_support}-n{config.sweep_n_labeled}",
                functools.partial(
                    near_private_cell,
                    pick=budgeted,
                    n=config.sweep_n_labeled,
                    eps_support=eps_support,
                ),
            )


def fig5(config: Fig5Config, run: FigureRun) -> list[dict[str, Any]]:
    task = run.task_for(config.dataset)
    cells = _fig5_cells(config, task, run)
    rows = run.rows(cells)
    write_results(run.fig_dir, rows, fig5_table(rows, config))
    plot_fig5(rows, config, run.fig_dir / "fig5.png")
    return rows


def fig5_table(rows: list[dict[str, Any]], config: Fig5Config) -> str:
    lines = [
        "| panel | start epoch | ε_dp | ε_support | labels | DP model acc. | after NearPrivate "
        "(mean ± std) | ε_total (PLD) | naive sum | seeds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    sweep_names = {f"support{e}-n{config.sweep_n_labeled}" for e in config.support_sweep}
    for r_key, rs in group_by(
        rows, lambda r: (r["cell"] in sweep_names, r["epsilon_support"], r["epoch"], r["n_labeled"])
    ).items():
        is_sweep = r_key[0]
        acc, sd = mean_std([100 * r["test_accuracy"] for r in rs])
        start_acc = statistics.fmean(100 * r["start_accuracy"] for r in rs)
        lines.append(
            f"| {'ε_support sweep' if is_sweep else 'checkpoints'} | {rs[0]['epoch']} "
            f"| {statistics.fmean(r['epsilon_dp'] for r in rs):.3f} | {rs[0]['epsilon_support']} "
            f"| {rs[0]['n_labeled']} | {start_acc:.2f}"
            f" | {acc:.2f} ± {sd:.2f} | {statistics.fmean(r['epsilon_total'] for r in rs):.3f} "
            f"| {statistics.fmean(r['epsilon_naive'] for r in rs):.3f} | {len(rs)} |"
        )
    return "\n".join(lines) + "\n"


def plot_fig5(rows: list[dict[str, Any]], config: Fig5Config, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep_names = {f"support{e}-n{config.sweep_n_labeled}" for e in config.support_sweep}
    fig, (left, right) = plt.subplots(1, 2, figsize=(12.8, 4.4))
    checkpoints = [r for r in rows if r["cell"] not in sweep_names]
    for n, rs in sorted(group_by(checkpoints, lambda r: r["n_labeled"]).items()):
        pts = sorted(group_by(rs, lambda r: r["epoch"]).items())
        x = [statistics.fmean(r["epsilon_dp"] for r in g) for _, g in pts]
        ms = [mean_std([100 * r["test_accuracy"] for r in g]) for _, g in pts]
        left.errorbar(
            x,
            [m for m, _ in ms],
            yerr=[s for _, s in ms],
            marker="o",
            capsize=3,
            label=f"NearPrivate, N = {n}",
        )
    if checkpoints:
        pts = sorted(group_by(checkpoints, lambda r: r["epoch"]).items())
        left.plot(
            [statistics.fmean(r["epsilon_dp"] for r in g) for _, g in pts],
            [statistics.fmean(100 * r["start_accuracy"] for r in g) for _, g in pts],
            "k--",
            label="DP model alone",
        )
    left.set_xlabel(
        f"ε_dp of the starting checkpoint (+ ε_pca {config.epsilon_pca}, "
        f"ε_support {config.epsilon_support})"
    )
    left.set_ylabel("test accuracy (%)")
    left.set_title("NearPrivate from checkpoints of different epochs")
    sweep = [r for r in rows if r["cell"] in sweep_names]
    pts = sorted(group_by(sweep, lambda r: r["epsilon_support"]).items())
    if pts:
        ms = [mean_std([100 * r["test_accuracy"] for r in g]) for _, g in pts]
        right.errorbar(
            [e for e, _ in pts],
            [m for m, _ in ms],
            yerr=[s for _, s in ms],
            marker="o",
            capsize=3,
            label=f"N = {config.sweep_n_labeled}",
        )
        for (e, g), (m, _) in zip(pts, ms, strict=True):
            right.annotate(
                f"ep {g[0]['epoch']}",
                (e, m),
                fontsize=7,
                xytext=(3, -10),
                textcoords="offset points",
            )
    right.set_xlabel(f"ε_support (checkpoint from `dpal budget`, ε_total ≤ {config.epsilon_limit})")
    right.set_ylabel("test accuracy (%)")
    right.set_title("Fixed ε_limit: spending more on support counts")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
