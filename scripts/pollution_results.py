"""Collect `dpal run` folders of the pollution study (issue #15) into one JSON and one table.

    python scripts/pollution_results.py OUT.json LABEL=RUN_DIR [LABEL=RUN_DIR ...]
    python scripts/pollution_results.py --clean OUT.json new=RUN_DIR old=RUN_DIR

LABEL names the setting (e.g. ``cifar10/rejects``); each RUN_DIR is a finished ``dpal run``
folder (its ``results.json``). The table pairs the methods per seed: NearPrivate minus
DiversePublic, mean ± std over seeds, and the polluted images each bought (mean over seeds);
random sampling beside them where the run has it. ``--clean`` compares NearPrivate's new
default with the old one (``--pool-filter none --validation-fraction 0``) on a clean pool,
paired by seed (the two runs share their DP models through ``--dp-root``).
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


def mean_std(values: list[float], sign: str = "") -> str:
    if len(values) == 1:
        return f"{values[0]:{sign}.2f}"
    return f"{statistics.mean(values):{sign}.2f} ± {statistics.stdev(values):.2f}"


def table(rows: list[dict]) -> str:
    by = defaultdict(dict)  # (setting, n) → method → seed → row
    base = defaultdict(dict)  # setting → seed → DP baseline accuracy
    for r in rows:
        if r["method"] == "DP baseline":
            base[r["setting"]][r["seed"]] = 100 * r["test_accuracy"]
        else:
            by[(r["setting"], r["n_labeled"])].setdefault(r["method"], {})[r["seed"]] = r
    lines = [
        "| setting | labels | DP model | random | DiversePublic | NearPrivate (equal ε) "
        "| gap NP − DiversePublic | polluted bought random / DiversePublic / NP "
        "| DP model kept random / DiversePublic / NP (seeds) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (setting, n), methods in sorted(by.items()):
        dp, near = methods.get("diverse-public", {}), methods.get("near-private (equal ε)", {})
        rnd = methods.get("random", {})
        seeds = sorted(set(dp) & set(near))
        if not seeds:
            continue
        acc = {name: [100 * m[s]["test_accuracy"] for s in seeds] if set(seeds) <= set(m) else []
               for name, m in (("random", rnd), ("dp", dp), ("np", near))}  # fmt: skip
        gaps = [b - a for a, b in zip(acc["dp"], acc["np"], strict=True)]
        arms = [m for m in (rnd, dp, near) if set(seeds) <= set(m)]
        polluted = " / ".join(f"{statistics.mean(m[s]['n_polluted'] for s in seeds):.0f}"
                              for m in arms)  # fmt: skip
        kept = " / ".join(str(sum(m[s]["kept"] == "start" for s in seeds)) for m in arms)
        lines.append(
            f"| {setting} | {n} | {mean_std([base[setting][s] for s in seeds])} "
            f"| {mean_std(acc['random']) if acc['random'] else '—'} "
            f"| {mean_std(acc['dp'])} | {mean_std(acc['np'])} "
            f"| {mean_std(gaps, '+')} ({len(seeds)} seeds) "
            f"| {polluted} | {kept} |"
        )
    return "\n".join(lines)


def clean_table(rows: list[dict]) -> str:
    """New default against old NearPrivate on a clean pool, paired by seed; DiversePublic and
    the DP model (shared by both runs) beside them."""
    cells = defaultdict(dict)  # (label, method, n) → seed → row
    for r in rows:
        cells[(r["setting"], r["method"], r["n_labeled"])][r["seed"]] = r
    near = "near-private (equal ε)"
    lines = [
        "| labels | DP model | DiversePublic (new) | NearPrivate new default | NearPrivate old "
        "| new − old, paired | seeds | ε_dp new / old | ε_total new / old | DP model kept new |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in sorted({n for (_, m, n) in cells if m == near}):
        new, old = cells.get(("new", near, n), {}), cells.get(("old", near, n), {})
        seeds = sorted(set(new) & set(old))
        if not seeds:
            continue
        base = cells.get(("new", "DP baseline", 0), {})
        dpub = cells.get(("new", "diverse-public", n), {})

        def acc(m: dict, seeds: list[int] = seeds) -> list[float]:
            return [100 * m[s]["test_accuracy"] for s in seeds]

        diff = [b - a for a, b in zip(acc(old), acc(new), strict=True)]
        lines.append(
            f"| {n} | {mean_std(acc(base)) if set(seeds) <= set(base) else '—'} "
            f"| {mean_std(acc(dpub)) if set(seeds) <= set(dpub) else '—'} "
            f"| {mean_std(acc(new))} | {mean_std(acc(old))} "
            f"| {mean_std(diff, '+')} | {len(seeds)} "
            f"| {new[seeds[0]]['epsilon_dp']:.3f} / {old[seeds[0]]['epsilon_dp']:.3f} "
            f"| {new[seeds[0]]['epsilon_total']:.3f} / {old[seeds[0]]['epsilon_total']:.3f} "
            f"| {sum(new[s]['kept'] == 'start' for s in seeds)} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    clean = argv[:1] == ["--clean"]
    argv = argv[1:] if clean else argv
    out, specs = Path(argv[0]), argv[1:]
    rows = [r for spec in specs for r in rows_of(*_split(spec))]
    out.write_text(json.dumps(rows, indent=1) + "\n")
    print(clean_table(rows) if clean else table(rows))


def _split(spec: str) -> tuple[str, Path]:
    label, _, path = spec.partition("=")
    return label, Path(path)


if __name__ == "__main__":
    main(sys.argv[1:])
