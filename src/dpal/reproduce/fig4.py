"""Figure 4: ablations of NearPrivate (support, candidates, DP-PCA), and the centre grid."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from dpal.core.atomic import atomic_write_text
from dpal.core.errors import DpalError
from dpal.data.tasks import Task
from dpal.methods.active_learning.experiment import (
    ROW_KEYS,
    improve_cell,
    markdown_table,
    plot,
)
from dpal.methods.active_learning.improve import SelectConfig, load_released_model
from dpal.reproduce.configs import (
    Fig4Config,
)
from dpal.reproduce.figure_run import FigureRun, write_results
from dpal.runs.cells import Cell, dp_model
from dpal.selection.scores import uncertainty
from dpal.selection.strategies import diverse_public


def _fig4_cells(config: Fig4Config, task: Task, run: FigureRun) -> Iterator[Cell]:
    for seed in range(config.seeds):
        tc = replace(config.train, dataset=config.dataset, epsilon=config.epsilon_dp, seed=seed)
        trained = functools.partial(dp_model, run.dp_root, tc, task, progress=run.progress)
        for n_each in config.n_each:
            for n in config.n_labeled:
                if n % n_each:
                    raise DpalError(f"fig4: n_labeled {n} is not a multiple of n_each {n_each}.")

                def compute(
                    cell_dir: Path,
                    n: int = n,
                    n_each: int = n_each,
                    seed: int = seed,
                    trained: Any = trained,
                ) -> tuple[dict[str, Any], dict[str, Any]]:
                    _, final = trained()
                    select = SelectConfig(
                        strategy="diverse-public",
                        n_labeled=n,
                        k=n + config.extra_candidates,
                        n_each=n_each,
                        delta=final["delta"],
                        seed=seed,
                        deterministic_noise=config.train.deterministic_noise,
                        secure_noise=config.train.secure_noise,
                    )
                    ft = replace(config.finetune, seed=seed)
                    result, resolved = improve_cell(final["path"], cell_dir, select, ft, task=task)
                    row = {"method": "diverse-public", "n_labeled": n, "n_each": n_each}
                    row |= {"n_clusters": n // n_each, **{k: result[k] for k in ROW_KEYS}}
                    return row, resolved

                yield Cell(seed, f"each{n_each}-n{n}", compute)
        if seed == 0:
            yield Cell(
                seed,
                "centre-grid",
                functools.partial(_centre_grid, config, task, trained),
            )


def _centre_grid(
    config: Fig4Config,
    task: Task,
    trained: Callable[[], tuple[Path, dict[str, Any]]],
    cell_dir: Path,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Figure 4b: DiversePublic with N_each = 1 picks the pool point nearest each k-means
    centre; whether the starting model gets it right shows what the clusters are made of."""
    import torch

    from dpal.models.embedding import logits_and_embeddings

    assert task.public is not None
    _, final = trained()
    model = load_released_model(final["path"]).model
    pool_x, _ = task.public.tensors()
    with torch.no_grad():
        logits, emb = logits_and_embeddings(model, pool_x)
    n = config.grid_clusters
    picked = diverse_public(
        emb.numpy(),
        uncertainty(logits.numpy(), "margin"),
        n,
        k=n + config.extra_candidates,
        n_clusters=n,
        n_each=1,
        rng=np.random.default_rng(0),
    )
    predicted = logits[torch.as_tensor(picked)].argmax(1).numpy()
    truth = task.public.y[picked]
    valid = np.ones(len(picked), bool) if task.public_valid is None else task.public_valid[picked]
    grid = {
        "pool_indices": picked.tolist(),
        "predicted": predicted.tolist(),
        "label": truth.tolist(),
        "in_classes": valid.tolist(),
    }
    atomic_write_text(cell_dir / "grid.json", json.dumps(grid))
    correct = (predicted == truth) & valid
    row = {"method": "centre-grid", "n_clusters": n, "n_correct": int(correct.sum())}
    return row, {"checkpoint": final["path"], "grid_clusters": n, "score": "margin"}


def fig4(config: Fig4Config, run: FigureRun) -> list[dict[str, Any]]:
    task = run.task_for(config.dataset)
    cells = _fig4_cells(config, task, run)
    rows = run.rows(cells)
    curves = [r for r in rows if r["method"] == "diverse-public"]
    table = markdown_table(
        [{**r, "method": f"diverse-public, N_each={r['n_each']}"} for r in curves]
    )
    write_results(run.fig_dir, rows, table)
    plot(
        [{**r, "method": f"N_each = {r['n_each']}"} for r in curves],
        run.fig_dir / "fig4a.png",
        panels=[
            (
                "DiversePublic: N_clusters = N_labeled / N_each",
                [f"N_each = {e}" for e in config.n_each],
            )
        ],
    )
    grid = run.fig_dir / "seed0" / "centre-grid" / "grid.json"
    if grid.exists():
        plot_centre_grid(json.loads(grid.read_text()), task, run.fig_dir / "fig4b.png")
    return rows


def plot_centre_grid(grid: dict[str, Any], task: Task, path: Path) -> None:
    """The cluster-central pool images, green border: the DP model is right, red: wrong."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assert task.public is not None
    idx = grid["pool_indices"]
    cols = int(np.ceil(np.sqrt(len(idx))))
    rows = int(np.ceil(len(idx) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.7, rows * 0.7), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i, p, y, ok in zip(
        axes.flat, idx, grid["predicted"], grid["label"], grid["in_classes"], strict=False
    ):
        img = task.public.x[i]
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255)
        ax.axis("on")
        ax.set_xticks([])
        ax.set_yticks([])
        colour = "tab:green" if ok and p == y else "tab:red"
        for spine in ax.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(3)
    n_right = sum(
        ok and p == y
        for p, y, ok in zip(grid["predicted"], grid["label"], grid["in_classes"], strict=True)
    )
    fig.suptitle(
        f"Most central pool image of each of {len(idx)} clusters — green: DP model right "
        f"({n_right}), red: wrong ({len(idx) - n_right})",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
