"""Tables and figure of a `dpal randp run` folder from its finished cells, whatever processes ran
them (e.g. one per seed with --first-seed), and the paired gain of the prior: DP-RandP minus
DP-SGD from scratch, seed by seed, at each ε.

    python scripts/randp_collect.py runs/randp-cifar10 --dataset cifar10
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from dpal.methods.randp.run import plot_randp, randp_table


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--dataset", default="cifar10", help="the figure's title")
    a = p.parse_args()
    cells = sorted(a.out.glob("seed*/*/cell.json"))
    rows = []
    for path in cells:
        cell = json.loads(path.read_text())
        rows.append({**cell["row"], "seed": cell["seed"]})
    order = {"dp-randp": 0, "dp-scratch": 1, "non-private": 2}
    rows.sort(key=lambda r: (r["epsilon_target"] or float("inf"), order[r["arm"]], r["seed"]))
    print(randp_table(rows))
    print("| target ε | DP-RandP − scratch, per seed (points) | mean |")
    print("|---|---|---|")
    by = {(r["arm"], r["epsilon_target"], r["seed"]): r["test_accuracy"] for r in rows}
    for eps in sorted({r["epsilon_target"] for r in rows if r["epsilon_target"] is not None}):
        seeds = sorted(
            s
            for (arm, e, s) in by
            if arm == "dp-randp" and e == eps and ("dp-scratch", eps, s) in by
        )
        gains = [100 * (by["dp-randp", eps, s] - by["dp-scratch", eps, s]) for s in seeds]
        if gains:
            per_seed = ", ".join(f"seed {s}: {g:+.2f}" for s, g in zip(seeds, gains, strict=True))
            print(f"| {eps} | {per_seed} | {statistics.fmean(gains):+.2f} |")
    plot_randp(rows, a.out / "accuracy_vs_epsilon.png", a.dataset)
    (a.out / "results.md").write_text(randp_table(rows))


if __name__ == "__main__":
    main()
