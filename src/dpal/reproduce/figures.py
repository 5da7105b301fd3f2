"""The paper's figures (Zhao et al. 2019) as typed, frozen configurations and their runners.

``fig1``  every strategy against labels bought (offline MNIST split);
``fig3``  pollution: a pool with 20% CIFAR-10 grayscale images — DiversePublic against the
          baselines, NearPrivate against DiversePublic at equal ε_total, and the harsher
          annotator who labels non-digits with a class instead of rejecting them;
``fig4``  (a) DiversePublic over N_cluster × N_each, (b) the most central pool example of each
          cluster, bordered by whether the starting DP model classifies it correctly;
``fig5``  NearPrivate from checkpoints of different epochs (their ε_dp), and, at a fixed
          ε_limit, accuracy as ε_support varies (the checkpoint chosen by ``dpal budget``).

Each figure's output is ``OUT/figN/``: ``config.json``, one folder per cell with its
``cell.json``, ``results.json``, ``results.md`` and the PNGs. DP models are shared under
``OUT/dp/`` by every figure that trains the same one.
"""

from __future__ import annotations

import functools
import json
import statistics
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from dpal.atomic import atomic_write_text
from dpal.data.tasks import Task, load_task
from dpal.errors import DpalError
from dpal.methods.active_learning import SelectConfig, load_released_model
from dpal.methods.budget import plan_budget
from dpal.methods.experiment import (
    EQUAL_EPSILON,
    ROW_KEYS,
    ExperimentConfig,
    experiment_cells,
    improve_cell,
    markdown_table,
    plot,
)
from dpal.reproduce.configs import (
    CONFIG_CLASSES,
    Fig1Config,
    Fig2Config,
    Fig3Config,
    Fig4Config,
    Fig5Config,
    FigureConfig,
    config_from_dict,
    config_to_dict,
)
from dpal.runs.cells import Cell, dp_model, run_cells, saved_rows
from dpal.selection.scores import uncertainty
from dpal.selection.strategies import diverse_public
from dpal.training.checkpoint import list_checkpoints
from dpal.training.rotation import rotation_pretrain

# --- running and plotting ----------------------------------------------------------------------


def reproduce(
    figure: str,
    config: FigureConfig,
    out: str | Path,
    *,
    data_dir: str | None = None,
    task: Task | None = None,
    plot_only: bool = False,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run (or, with ``plot_only``, only re-plot from saved cells) one figure under ``out``."""
    if figure not in CONFIG_CLASSES:
        raise DpalError(f"unknown figure {figure!r}; choose one of {', '.join(CONFIG_CLASSES)}.")
    if not isinstance(config, CONFIG_CLASSES[figure]):
        raise DpalError(f"{figure} takes a {CONFIG_CLASSES[figure].__name__}.")
    root = Path(out)
    fig_dir = root / figure
    fig_dir.mkdir(parents=True, exist_ok=True)
    config_path = fig_dir / "config.json"
    if plot_only and not any(fig_dir.rglob("cell.json")):
        raise DpalError(f"{fig_dir} has no finished cells to plot; run without --plot-only first.")
    if config_path.exists():
        saved = config_from_dict(type(config), json.loads(config_path.read_text()))
        if saved != config and plot_only:
            config = saved  # plot what was run
        elif saved != config and any(fig_dir.rglob("cell.json")):
            raise DpalError(
                f"{fig_dir} holds results of another configuration (see its config.json); "
                "use a new --out directory."
            )
    atomic_write_text(config_path, json.dumps(config_to_dict(config), indent=1))
    runner: dict[str, Callable[..., list[dict[str, Any]]]] = {
        "fig1": _fig1,
        "fig2": _fig2,
        "fig3": _fig3,
        "fig4": _fig4,
        "fig5": _fig5,
    }
    return runner[figure](
        config, FigureRun(fig_dir, root / "dp", data_dir, task, plot_only, progress)
    )


@dataclass(frozen=True)
class FigureRun:
    """Where one figure runs, and whether it trains or only re-plots finished cells."""

    fig_dir: Path
    dp_root: Path  # DP models shared by every figure under the same --out
    data_dir: str | None
    task: Task | None  # a task given directly (tests); else loaded by name
    plot_only: bool
    progress: bool

    def task_for(self, dataset: str) -> Task:
        task = self.task or load_task(dataset, data_dir=self.data_dir)
        if task.public is None:
            raise DpalError(f"task {dataset!r} has no public pool to buy labels from.")
        return task

    def rows(self, cells: Iterable[Cell], sub: str = "") -> list[dict[str, Any]]:
        where = self.fig_dir / sub if sub else self.fig_dir
        if self.plot_only:
            return saved_rows(where, cells)
        return run_cells(where, cells, progress=self.progress)

    def curves(self, experiment: ExperimentConfig, sub: str, task: Task) -> list[dict[str, Any]]:
        return self.rows(
            experiment_cells(experiment, task, self.dp_root, progress=self.progress), sub
        )


def _write(fig_dir: Path, rows: list[dict[str, Any]], table: str) -> None:
    atomic_write_text(fig_dir / "results.json", json.dumps(rows, indent=1))
    atomic_write_text(fig_dir / "results.md", table)


def _fig1(config: Fig1Config, run: FigureRun) -> list[dict[str, Any]]:
    ex = config.experiment
    task = run.task_for(ex.dataset)
    rows = run.curves(ex, "curves", task)
    _write(run.fig_dir, rows, markdown_table(rows))
    baselines: list[str] = [
        m for m in ("random", "entropy", "margin", "diverse-public") if m in ex.methods
    ]
    near = [
        m
        for m in ("diverse-public", "near-private", EQUAL_EPSILON)
        if m != "near-private" or ex.near_private_from != "equal"
    ]
    plot(
        rows,
        run.fig_dir / "fig1.png",
        panels=[
            ("DiversePublic and the baselines", baselines),
            ("NearPrivate: from the final checkpoint, and at equal ε_total", near),
        ],
    )
    return rows


def _fig2(config: Fig2Config, run: FigureRun) -> list[dict[str, Any]]:
    ex = config.experiment
    task = run.task_for(ex.dataset)
    assert task.public is not None
    rot = config.rotation
    weights = (
        run.dp_root.parent / "pretrain" / f"{task.name}-rotation-{rot.model}-seed{rot.seed}.pt"
    )
    if not weights.exists() and not run.plot_only:  # public images only: no ledger entry
        rotation_pretrain(task.public, rot, weights, progress=run.progress)
    ex = replace(ex, train=replace(ex.train, model=rot.model, init=str(weights)))
    rows = run.curves(ex, "curves", task)
    _write(run.fig_dir, rows, markdown_table(rows))
    plot(rows, run.fig_dir / "fig2.png")
    return rows


def _fig3(config: Fig3Config, run: FigureRun) -> list[dict[str, Any]]:
    ex = config.curves
    task = run.task_for(ex.dataset)
    rows = run.curves(ex, "curves", task)
    harsh: list[dict[str, Any]] = []
    if config.harsh_label is not None:
        harsh_ex = replace(ex, methods=config.harsh_methods, label_polluted_as=config.harsh_label)
        harsh = run.curves(harsh_ex, "harsh", task)
        harsh = [{**r, "method": f"{r['method']} [harsh]"} for r in harsh if r["n_labeled"] > 0]
    wide: list[dict[str, Any]] = []
    wide_tag = f" [k=N+{config.wide_extra_candidates}]"
    if config.wide_extra_candidates is not None:
        wide_ex = replace(
            ex, methods=config.harsh_methods, extra_candidates=config.wide_extra_candidates
        )
        wide = run.curves(wide_ex, "wide", task)
        wide = [{**r, "method": r["method"] + wide_tag} for r in wide if r["n_labeled"] > 0]
    rows = rows + harsh + wide
    table = markdown_table(rows)
    table += "\n" + pollution_gap_table(rows, wide_tag)
    _write(run.fig_dir, rows, table)
    baselines = [m for m in ("random", "entropy", "margin") if m in ex.methods]
    panels = [
        ("(a) pollution: DiversePublic vs baselines", [*baselines, "diverse-public"]),
        ("(b) NearPrivate vs DiversePublic, equal ε_total", ["diverse-public", EQUAL_EPSILON]),
    ]
    if harsh:
        panels.append(
            (
                f"(c) annotator labels non-digits as {config.harsh_label}",
                ["diverse-public [harsh]", f"{EQUAL_EPSILON} [harsh]"],
            )
        )
    if wide:
        panels.append(
            (
                f"({'d' if harsh else 'c'}) candidates k = N + {config.wide_extra_candidates}",
                ["diverse-public" + wide_tag, EQUAL_EPSILON + wide_tag],
            )
        )
    plot(rows, run.fig_dir / "fig3.png", panels=panels)
    return rows


def pollution_gap_table(rows: list[dict[str, Any]], wide_tag: str = "") -> str:
    """NearPrivate (equal ε) − DiversePublic per N, paired by seed, with the polluted images
    each bought — the numbers the paper's §4.3 reports."""
    lines = [
        "| annotator | labels | DiversePublic | NearPrivate (equal ε) | gap (points, mean ± std)"
        " | polluted bought: DiversePublic / NearPrivate |",
        "|---|---|---|---|---|---|",
    ]
    variants = [("", "rejects"), (" [harsh]", "labels as a class")]
    if wide_tag:
        variants.append((wide_tag, f"rejects; k = N + {wide_tag.split('+')[1].rstrip(']')}"))
    for suffix, who in variants:
        dp = {
            (r["seed"], r["n_labeled"]): r for r in rows if r["method"] == "diverse-public" + suffix
        }
        npv = {
            (r["seed"], r["n_labeled"]): r for r in rows if r["method"] == EQUAL_EPSILON + suffix
        }
        for n in sorted({n for _, n in dp.keys() & npv.keys()}):
            pairs = [(dp[k], npv[k]) for k in sorted(dp.keys() & npv.keys()) if k[1] == n]
            gaps = [100 * (b["test_accuracy"] - a["test_accuracy"]) for a, b in pairs]
            acc_a = statistics.fmean(100 * a["test_accuracy"] for a, _ in pairs)
            acc_b = statistics.fmean(100 * b["test_accuracy"] for _, b in pairs)
            sd = statistics.stdev(gaps) if len(gaps) > 1 else 0.0
            pol_a = statistics.fmean(a["n_polluted"] for a, _ in pairs)
            pol_b = statistics.fmean(b["n_polluted"] for _, b in pairs)
            lines.append(
                f"| {who} | {n} | {acc_a:.2f} | {acc_b:.2f} | {statistics.fmean(gaps):+.2f} ± "
                f"{sd:.2f} ({len(gaps)} seeds) | {pol_a:.0f} / {pol_b:.0f} |"
            )
    return "\n".join(lines) + "\n"


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


def _fig4(config: Fig4Config, run: FigureRun) -> list[dict[str, Any]]:
    task = run.task_for(config.dataset)
    cells = _fig4_cells(config, task, run)
    rows = run.rows(cells)
    curves = [r for r in rows if r["method"] == "diverse-public"]
    table = markdown_table(
        [{**r, "method": f"diverse-public, N_each={r['n_each']}"} for r in curves]
    )
    _write(run.fig_dir, rows, table)
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
                delta=final["delta"],
                seed=seed,
                deterministic_noise=config.train.deterministic_noise,
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
                _, fit = plan_budget(
                    dp_dir,
                    epsilon_limit=config.epsilon_limit,
                    epsilon_pca=config.epsilon_pca,
                    epsilon_support=eps_support,
                )
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


def _fig5(config: Fig5Config, run: FigureRun) -> list[dict[str, Any]]:
    task = run.task_for(config.dataset)
    cells = _fig5_cells(config, task, run)
    rows = run.rows(cells)
    _write(run.fig_dir, rows, fig5_table(rows, config))
    plot_fig5(rows, config, run.fig_dir / "fig5.png")
    return rows


def _by(rows: list[dict[str, Any]], key: Callable[[dict[str, Any]], Any]) -> dict[Any, list]:
    groups: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    return groups


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def fig5_table(rows: list[dict[str, Any]], config: Fig5Config) -> str:
    lines = [
        "| panel | start epoch | ε_dp | ε_support | labels | DP model acc. | after NearPrivate "
        "(mean ± std) | ε_total (PLD) | naive sum | seeds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    sweep_names = {f"support{e}-n{config.sweep_n_labeled}" for e in config.support_sweep}
    for r_key, rs in _by(
        rows, lambda r: (r["cell"] in sweep_names, r["epsilon_support"], r["epoch"], r["n_labeled"])
    ).items():
        is_sweep = r_key[0]
        acc, sd = _mean_std([100 * r["test_accuracy"] for r in rs])
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
    for n, rs in sorted(_by(checkpoints, lambda r: r["n_labeled"]).items()):
        pts = sorted(_by(rs, lambda r: r["epoch"]).items())
        x = [statistics.fmean(r["epsilon_dp"] for r in g) for _, g in pts]
        ms = [_mean_std([100 * r["test_accuracy"] for r in g]) for _, g in pts]
        left.errorbar(
            x,
            [m for m, _ in ms],
            yerr=[s for _, s in ms],
            marker="o",
            capsize=3,
            label=f"NearPrivate, N = {n}",
        )
    if checkpoints:
        pts = sorted(_by(checkpoints, lambda r: r["epoch"]).items())
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
    pts = sorted(_by(sweep, lambda r: r["epsilon_support"]).items())
    if pts:
        ms = [_mean_std([100 * r["test_accuracy"] for r in g]) for _, g in pts]
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
