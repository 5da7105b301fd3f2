"""``dpal run mnist``: the active-learning experiment of Zhao et al. (2019), Figure 1, on the
offline MNIST protocol — a DP baseline, then every strategy at several label budgets.

Resumable: each cell (seed × method × n_labeled) writes its ``result.json``; a cell that has one
is not run again. Everything lands in one directory: ``results.json``, ``results.md`` and
``accuracy_vs_labels.png``.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from dpal.data.tasks import load_task
from dpal.errors import DpalError
from dpal.labeling.oracle import Oracle
from dpal.methods.active_learning import SelectConfig, improve
from dpal.methods.budget import plan_budget
from dpal.privacy.ledger import atomic_write_text
from dpal.selection.strategies import STRATEGIES
from dpal.training.checkpoint import list_checkpoints
from dpal.training.config import TrainConfig
from dpal.training.finetune import FinetuneConfig
from dpal.training.trainer import train

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


QUICK = ExperimentConfig(
    train=TrainConfig(dataset="mnist-offline", epsilon=3.2, epochs=4),
    n_labeled=(200, 500),
    finetune=FinetuneConfig(epochs=20),
)


def run_experiment(
    config: ExperimentConfig,
    out_dir: str | Path,
    *,
    data_dir: str | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.json", json.dumps(asdict(config), indent=1, default=str))
    task = load_task(config.dataset, data_dir=data_dir)
    if task.public is None:
        raise DpalError(f"task {config.dataset!r} has no public pool to buy labels from.")
    rows: list[dict[str, Any]] = []
    for seed in range(config.seeds):
        seed_dir = out / f"seed{seed}"
        dp_dir = seed_dir / "dp"
        final = _trained(config, dp_dir, seed, task, progress)
        rows.append(
            {
                "method": "DP baseline",
                "n_labeled": 0,
                "seed": seed,
                "test_accuracy": final["test_accuracy"],
                "epsilon_dp": final["epsilon"],
                "epsilon_total": final["epsilon"],
                "epsilon_naive": final["epsilon"],
                "n_rejected": 0,
                "n_polluted": 0,
            }
        )
        equal_ckpt: str | None = None
        if "near-private" in config.methods:
            _, fit = plan_budget(
                dp_dir,
                epsilon_limit=config.epsilon_dp,
                epsilon_pca=config.epsilon_pca,
                epsilon_support=config.epsilon_support,
            )
            equal_ckpt = fit.path if fit else None
        for method in [*config.methods, *([EQUAL_EPSILON] if equal_ckpt else [])]:
            for n in config.n_labeled:
                cell = seed_dir / f"{_slug(method)}-{n}"
                if not (cell / "result.json").exists():
                    strategy = "near-private" if method == EQUAL_EPSILON else method
                    start = equal_ckpt if method == EQUAL_EPSILON else final["path"]
                    assert start is not None
                    improve(
                        start,
                        cell,
                        SelectConfig(
                            strategy=strategy,
                            n_labeled=n,
                            k=n + config.extra_candidates,
                            n_each=config.n_each,
                            epsilon_pca=config.epsilon_pca,
                            epsilon_support=config.epsilon_support,
                            seed=seed,
                        ),
                        replace(config.finetune, seed=seed),
                        task=task,
                        oracle=Oracle(task.public.y, task.public_valid, config.label_polluted_as),
                    )
                result = json.loads((cell / "result.json").read_text())
                rows.append(
                    {
                        "method": method,
                        "n_labeled": n,
                        "seed": seed,
                        **{
                            k: result[k]
                            for k in (
                                "test_accuracy",
                                "epsilon_dp",
                                "epsilon_total",
                                "epsilon_naive",
                                "n_rejected",
                                "n_polluted",
                            )
                        },
                    }
                )
                if progress:
                    print(
                        f"seed {seed}  {method:<24} N={n:<5} acc={result['test_accuracy']:.4f}"
                        f"  ε_total={result['epsilon_total']:.3f}",
                        flush=True,
                    )
    atomic_write_text(out / "results.json", json.dumps(rows, indent=1))
    atomic_write_text(out / "results.md", markdown_table(rows))
    plot(rows, out / "accuracy_vs_labels.png")
    return rows


def _slug(method: str) -> str:
    """Plain-ASCII folder name: "near-private (equal ε)" → "near-private-equal-eps"."""
    return method.replace(" (equal ε)", "-equal-eps").replace(" ", "-")


def _trained(
    config: ExperimentConfig, dp_dir: Path, seed: int, task: Any, progress: bool
) -> dict[str, Any]:
    """The DP baseline of one seed: trained once, resumed after an interruption, reused."""
    train_config = replace(
        config.train, dataset=config.dataset, epsilon=config.epsilon_dp, seed=seed
    )
    done = list_checkpoints(dp_dir)
    if not done:
        if dp_dir.exists():  # started but no epoch finished: start again cleanly
            import shutil

            shutil.rmtree(dp_dir)
        train(train_config, dp_dir, task=task, progress=progress)
    elif done[-1]["epoch"] < train_config.epochs:
        train(None, dp_dir, task=task, resume=done[-1]["path"], progress=progress)
    return list_checkpoints(dp_dir)[-1]


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


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = _summary(rows)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    base = [s for s in summary if s["n_labeled"] == 0]
    for method in dict.fromkeys(s["method"] for s in summary if s["n_labeled"] > 0):
        pts = sorted((s for s in summary if s["method"] == method), key=lambda s: s["n_labeled"])
        ax.errorbar(
            [s["n_labeled"] for s in pts],
            [100 * s["mean"] for s in pts],
            yerr=[100 * s["std"] for s in pts],
            marker="o",
            capsize=3,
            label=f"{method} (ε≈{pts[0]['epsilon_total']:.2f})",
        )
    if base:
        ax.axhline(
            100 * base[0]["mean"],
            color="grey",
            ls="--",
            label=f"DP baseline (ε={base[0]['epsilon_dp']:.2f})",
        )
    ax.set_xlabel("public labels bought (N_labeled)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Improving a DP model with public labels")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
