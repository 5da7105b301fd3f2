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

import json
import statistics
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from dpal.core.atomic import atomic_write_text
from dpal.core.errors import DpalError
from dpal.data.tasks import Task
from dpal.methods.active_learning.experiment import (
    EQUAL_EPSILON,
    markdown_table,
    plot,
)
from dpal.reproduce.configs import (
    CONFIG_CLASSES,
    Fig1Config,
    Fig2Config,
    Fig3Config,
    FigureConfig,
    config_from_dict,
    config_to_dict,
)
from dpal.reproduce.fig4 import fig4
from dpal.reproduce.fig5 import fig5
from dpal.reproduce.figure_run import FigureRun, write_results
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
        "fig4": fig4,
        "fig5": fig5,
    }
    return runner[figure](
        config, FigureRun(fig_dir, root / "dp", data_dir, task, plot_only, progress)
    )


def _fig1(config: Fig1Config, run: FigureRun) -> list[dict[str, Any]]:
    ex = config.experiment
    task = run.task_for(ex.dataset)
    rows = run.curves(ex, "curves", task)
    write_results(run.fig_dir, rows, markdown_table(rows))
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
    write_results(run.fig_dir, rows, markdown_table(rows))
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
    write_results(run.fig_dir, rows, table)
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
