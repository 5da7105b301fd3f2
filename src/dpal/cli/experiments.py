"""``dpal run`` (a whole experiment) and ``dpal reproduce`` (the paper's figures)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from dpal.cli.common import add_data_dir, add_deterministic_noise, noise_from_seed
from dpal.selection.strategies import STRATEGIES


def cmd_run(a: argparse.Namespace) -> None:
    from dpal.methods.active_learning.experiment import (
        CIFAR10_OFFLINE,
        CIFAR10_OFFLINE_QUICK,
        QUICK,
        ExperimentConfig,
        markdown_table,
        run_experiment,
    )

    if a.experiment == "cifar10-offline":
        config = CIFAR10_OFFLINE_QUICK if a.quick else CIFAR10_OFFLINE
    else:
        config = QUICK if a.quick else ExperimentConfig()
    config = replace(config, seeds=a.seeds, label_polluted_as=a.label_polluted_as)
    if a.experiment.startswith("mnist-polluted"):
        config = replace(config, dataset=a.experiment)
    chosen = {
        "methods": tuple(a.methods) if a.methods else None,
        "n_labeled": tuple(a.n_labeled) if a.n_labeled else None,
        "near_private_from": a.near_private_from,
        "pool_filter": a.pool_filter,
        "validation_fraction": a.validation_fraction,
    }
    config = replace(config, **{k: v for k, v in chosen.items() if v is not None})
    config = noise_from_seed(config, a)
    out = a.out or f"runs/{a.experiment}{'-quick' if a.quick else ''}"
    rows = run_experiment(config, out, data_dir=a.data_dir, dp_root=a.dp_root)

    print(markdown_table(rows))
    print(f"results, table and figure in {out}/")


def cmd_reproduce(a: argparse.Namespace) -> None:
    from dpal.reproduce.configs import FULL, QUICK, with_seeds
    from dpal.reproduce.figures import reproduce

    out = a.out or f"runs/reproduce{'-quick' if a.quick else ''}"
    # "all": the figures of the offline MNIST protocols; fig2 needs SVHN's files
    figures = ["fig1", "fig3", "fig4", "fig5"] if a.figure == "all" else [a.figure]
    for figure in figures:
        config = (QUICK if a.quick else FULL)[figure]
        if a.seeds is not None:
            config = with_seeds(config, a.seeds)
        config = noise_from_seed(config, a)
        reproduce(figure, config, out, data_dir=a.data_dir, plot_only=a.plot_only)
        print(f"{figure}: table, cells and figures in {out}/{figure}/")


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="a whole experiment: DP baseline, every method, table, plot")
    p.add_argument(
        "experiment",
        choices=("mnist", "mnist-polluted", "mnist-polluted-randp", "cifar10-offline"),
        help="mnist-polluted(-randp): 20%% of the pool CIFAR-10 (random-process) images; "
        "cifar10-offline: on a DP linear probe of a pretrained EfficientNet-Lite0",
    )
    p.add_argument(
        "--label-polluted-as",
        type=int,
        default=None,
        help="mnist-polluted(-randp): the annotator gives non-digits this class (harsher) "
        "instead of rejecting them",
    )
    p.add_argument("--quick", action="store_true", help="a small version (a few minutes)")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--methods", nargs="+", choices=STRATEGIES, help="default: every strategy")
    p.add_argument("--n-labeled", nargs="+", type=int, help="label budgets (default 500 … 7000)")
    p.add_argument(
        "--near-private-from",
        choices=("final", "equal", "both"),
        help="NearPrivate from the final checkpoint, from the one that keeps ε_total ≤ ε_dp "
        "(equal), or both (default)",
    )
    p.add_argument(
        "--pool-filter",
        choices=("density", "none"),
        help="NearPrivate: density (default) or none (the paper's Algorithm 2)",
    )
    p.add_argument(
        "--validation-fraction",
        type=float,
        help="bought labels the guard holds out (default 0.2; 0: no guard)",
    )
    p.add_argument("--dp-root", help="where the DP models live (default OUT/dp); shareable")
    p.add_argument("--out")
    add_data_dir(p)
    add_deterministic_noise(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "reproduce",
        help="the paper's figures (1, 2 SVHN, 3 pollution, 4 ablations, 5 budgets), resumable",
    )
    p.add_argument(
        "figure",
        choices=("fig1", "fig2", "fig3", "fig4", "fig5", "all"),
        help="fig2 is the SVHN path (needs SVHN); all = fig1, fig3, fig4, fig5 (MNIST)",
    )
    p.add_argument("--quick", action="store_true", help="a small version of the same shape")
    p.add_argument("--seeds", type=int, help="seeds (default 1; ≥ 3 for error bars)")
    p.add_argument("--out", help="default runs/reproduce[-quick]; DP models shared in OUT/dp")
    p.add_argument(
        "--plot-only",
        action="store_true",
        help="redraw tables and figures from the finished cells, training nothing",
    )
    add_data_dir(p)
    add_deterministic_noise(p)
    p.set_defaults(func=cmd_reproduce)
