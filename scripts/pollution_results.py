"""Collect `dpal run` folders of the pollution study (issue #15) into one JSON and one table.

    python scripts/pollution_results.py OUT.json LABEL=RUN_DIR [LABEL=RUN_DIR ...]

LABEL names the setting (e.g. ``cifar10/rejects``); each RUN_DIR is a finished ``dpal run``
folder (its ``results.json``). The table pairs the methods per seed: NearPrivate minus
DiversePublic, mean ± std over seeds, and the polluted images each bought (mean over seeds).
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

KEYS = ("method", "n_labeled", "seed", "test_accuracy", "epsilon_dp", "epsilon_total",
        "epsilon_naive", "n_polluted", "n_rejected", "kept")  # fmt: skip


def rows_of(label: str, run_dir: Path) -> list[dict]:
    config = json.loads((run_dir / "config.json").read_text())
    out = []
    for row in json.loads((run_dir / "results.json").read_text()):
        plain = {"setting": label, "dataset": config["dataset"]}
        plain |= {k: row.get(k) for k in KEYS}
        cell = run_dir / f"seed{row['seed']}" / row["cell"] / "result.json"
        if cell.exists():  # the guard's view: accuracy of both models on the random labels
            result = json.loads(cell.read_text())
            for key in ("n_validation", "validation_start", "validation_tuned"):
                plain[key] = result.get(key)
        out.append(plain)
    return out


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def table(rows: list[dict]) -> str:
    by = defaultdict(dict)  # (setting, n) → method → seed → row
    base = defaultdict(dict)  # setting → seed → DP baseline accuracy
    for r in rows:
        if r["method"] == "DP baseline":
            base[r["setting"]][r["seed"]] = 100 * r["test_accuracy"]
        else:
            by[(r["setting"], r["n_labeled"])].setdefault(r["method"], {})[r["seed"]] = r
    lines = [
        "| setting | labels | DP model | DiversePublic | NearPrivate (equal ε) | gap, points "
        "| polluted bought DP / NP | DP model kept DP / NP (seeds) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (setting, n), methods in sorted(by.items()):
        dp, near = methods.get("diverse-public", {}), methods.get("near-private (equal ε)", {})
        seeds = sorted(set(dp) & set(near))
        if not seeds:
            continue
        acc_dp = [100 * dp[s]["test_accuracy"] for s in seeds]
        acc_np = [100 * near[s]["test_accuracy"] for s in seeds]
        gaps = [b - a for a, b in zip(acc_dp, acc_np, strict=True)]
        polluted = [statistics.mean(m[s]["n_polluted"] for s in seeds) for m in (dp, near)]
        kept = [sum(m[s]["kept"] == "start" for s in seeds) for m in (dp, near)]
        lines.append(
            f"| {setting} | {n} | {mean_std([base[setting][s] for s in seeds])} "
            f"| {mean_std(acc_dp)} | {mean_std(acc_np)} "
            f"| {gaps[0] if len(gaps) == 1 else statistics.mean(gaps):+.2f}"
            f"{'' if len(gaps) == 1 else f' ± {statistics.stdev(gaps):.2f}'} ({len(seeds)} seeds) "
            f"| {polluted[0]:.0f} / {polluted[1]:.0f} | {kept[0]} / {kept[1]} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    out, specs = Path(argv[0]), argv[1:]
    rows = [r for spec in specs for r in rows_of(*_split(spec))]
    out.write_text(json.dumps(rows, indent=1) + "\n")
    print(table(rows))


def _split(spec: str) -> tuple[str, Path]:
    label, _, path = spec.partition("=")
    return label, Path(path)


if __name__ == "__main__":
    main(sys.argv[1:])
