"""AdaMix's table (accuracy and the paper's error increase per arm) and figure."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

DP_ARMS = (
    "dp-finetune",
    "adamix-no-projection",
    "adamix-no-adaptive-clip",
    "adamix-no-mixing",
    "adamix",
    "adamix-initial-subspace",
)
ARMS = ("public-only", *DP_ARMS, "non-private")
# Beyond the paper, run only when asked for (--arms): AdaMix with U fixed at the few-shot model.
DEFAULT_ARMS = tuple(a for a in ARMS if a != "adamix-initial-subspace")


def adamix_table(rows: list[dict[str, Any]]) -> str:
    np_err = {r["seed"]: 1 - r["test_accuracy"] for r in rows if r["arm"] == "non-private"}
    groups: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    for r in rows:
        if r["arm"] != "snr":
            groups.setdefault((r["arm"], r["epsilon_target"]), []).append(r)
    lines = [
        "| arm | target ε | ε (PLD) | test acc. (mean ± std) | error increase vs non-private "
        "| seeds |",
        "|---|---|---|---|---|---|",
    ]
    for (arm, eps), rs in groups.items():
        accs = [100 * r["test_accuracy"] for r in rs]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        inc = [
            ((1 - r["test_accuracy"]) - np_err[r["seed"]]) / np_err[r["seed"]]
            for r in rs
            if np_err.get(r["seed"])
        ]
        inc_s = f"{100 * statistics.fmean(inc):+.0f}%" if inc else "–"
        eps_s = "∞" if eps is None else ("0 (no private data)" if eps == 0 else f"{eps:g}")
        lines.append(
            f"| {arm} | {eps_s} | {statistics.fmean(r['epsilon'] for r in rs):.3f} | "
            f"{statistics.fmean(accs):.2f} ± {sd:.2f} | {inc_s} | {len(rs)} |"
        )
    snr = [r for r in rows if r["arm"] == "snr"]
    if snr:
        full = statistics.fmean(r["snr_full"] for r in snr)
        proj = statistics.fmean(r["snr_projected"] for r in snr)
        lines += [
            "",
            f"Gradient signal-to-noise at the few-shot model, ε = {snr[0]['epsilon_target']:g}: "
            f"{full:.4f} without projection, {proj:.4f} with it ({proj / full:.1f}×); "
            "‖clipped sum‖ / E‖noise‖ on one expected-size batch (a diagnostic, not released).",
        ]
        if all("captured" in r for r in snr):
            cap = statistics.fmean(r["captured"] for r in snr)
            lines.append(
                f"The public top-{snr[0].get('rank', 'k')} subspace holds {100 * cap:.1f}% of the "
                "squared norm of the private batch's mean clipped gradient (the signal that "
                "projection keeps)."
            )
    return "\n".join(lines) + "\n"


def plot_adamix(rows: list[dict[str, Any]], path: Path, dataset: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    np_err = {r["seed"]: 1 - r["test_accuracy"] for r in rows if r["arm"] == "non-private"}
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for arm in DP_ARMS:
        by_eps: dict[float, list[float]] = {}
        for r in rows:
            if r["arm"] == arm and np_err.get(r["seed"]):
                e = np_err[r["seed"]]
                by_eps.setdefault(r["epsilon_target"], []).append(
                    100 * ((1 - r["test_accuracy"]) - e) / e
                )
        if by_eps:
            xs = sorted(by_eps)
            ax.plot(xs, [statistics.fmean(by_eps[x]) for x in xs], marker="o", label=arm)
    ax.set_xlabel("ε (δ = 1e-5)")
    ax.set_ylabel("error increase over non-private (%)")
    ax.set_title(f"AdaMix ablations on {dataset}")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # none when the non-private error is 0
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
