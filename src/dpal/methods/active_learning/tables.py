"""The experiment's table and figure: mean ± spread over seeds per method and label budget."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any


def method_slug(method: str) -> str:
    """Plain-ASCII folder name: "near-private (equal ε)" → "near-private-equal-eps"."""
    return method.replace(" (equal ε)", "-equal-eps").replace(" ", "-")


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
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
                # the guard (dpal.methods.active_learning.guard) shipped the DP model unchanged
                "kept_start": sum(r.get("kept") == "start" for r in rs),
            }
        )
    return out


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The results table; a column of polluted images bought appears when there were any, and
    one of how many seeds the guard kept the DP model for, when it ran."""
    summary = summarise(rows)
    polluted = any(s["n_polluted"] for s in summary)
    guarded = any("kept" in r for r in rows)
    extra = (" polluted bought |", "---|") if polluted else ("", "")
    if guarded:
        extra = (extra[0] + " DP model kept (seeds) |", extra[1] + "---|")
    lines = [
        "| method | labels | test acc. (mean ± std) | seeds | ε_dp | ε_total (PLD) | naive sum |"
        + extra[0],
        "|---|---|---|---|---|---|---|" + extra[1],
    ]
    for s in summary:
        lines.append(
            f"| {s['method']} | {s['n_labeled']} | {100 * s['mean']:.2f} ± {100 * s['std']:.2f} "
            f"| {s['seeds']} | {s['epsilon_dp']:.3f} | {s['epsilon_total']:.3f} "
            f"| {s['epsilon_naive']:.3f} |"
            + (f" {s['n_polluted']:.0f} |" if polluted else "")
            + (_kept(s) if guarded else "")
        )
    return "\n".join(lines) + "\n"


def _kept(s: dict[str, Any]) -> str:
    return f" {s['kept_start']} |" if s["n_labeled"] else " — |"


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

    summary = summarise(rows)
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
