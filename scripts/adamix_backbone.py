"""AdaMix on a pretrained EfficientNet-Lite0 (issue #14): a linear head on frozen features,
few-shot public sets of 1, 5, 10 and 50 images per class, ε ∈ {1, 3, 8}, seeds 0–2, every arm.

Each setting is exactly one command (printed before it runs), e.g.

    dpal adamix run --dataset cifar10-offline --model efficientnet-lite0 --image-size 160 \\
        --public-per-class 10 --epsilon 1 3 8 --seeds 3 --batch-size 4096 --lr 4 --epochs 10 \\
        --ema 0 --fewshot-selection random --out runs/adamix-backbone/cifar10-offline-k10-random

The DP recipe (batch 4,096, lr 4, 10 epochs, constant, no EMA, clip 1) is the DP linear probe's
of issue #13, chosen on a held-out split of CIFAR-10's training set, with 10 epochs instead of 30
for CPU time (on that split: 74.80% against 75.58% at ε = 1); it is used unchanged for every arm,
both datasets and every shot count (nothing here is tuned on a test set).

    python scripts/adamix_backbone.py run --dataset cifar10-offline --shots 1 5 10 50
    python scripts/adamix_backbone.py run --dataset mnist-offline --shots 1 5 10 50
    python scripts/adamix_backbone.py run --dataset cifar10-offline --shots 1 10 \\
        --selection diverse-public --arms public-only dp-finetune adamix non-private
    python scripts/adamix_backbone.py collect --json docs/results/adamix_backbone.json

The second setting (the last MBConv block, head conv and head trained; issue #14) is collected
from its own folder (its runs are single `dpal adamix run` commands, listed in docs/RESULTS.md):

    python scripts/adamix_backbone.py collect --finetune last-blocks --keep-existing \\
        --json docs/results/adamix_lastblocks.json

(``--keep-existing``: the 10/class cell ran in an earlier checkout whose run folders are gone; its
rows are kept from the JSON, the new cells' rows added.)
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path("runs/adamix-backbone")
# the second setting's recipe differs (lr 1 chosen on a held-out split, 2 epochs): its own folder
ROOTS = {"linear-probe": ROOT, "last-blocks": Path("runs/adamix-lastblocks-e2")}
LABELS = {
    "linear-probe": "efficientnet-lite0 linear head",
    "last-blocks": "efficientnet-lite0 last blocks + head",
}
SIZE = {"cifar10-offline": 160, "mnist-offline": 96}
RECIPE = ["--batch-size", "4096", "--lr", "4", "--epochs", "10", "--ema", "0"]


def command(
    dataset: str, shots: int, selection: str, seeds: int, arms: list[str] | None
) -> list[str]:
    dpal = shutil.which("dpal") or str(Path(sys.executable).with_name("dpal"))
    cmd = [dpal, "adamix", "run", "--dataset", dataset, "--model", "efficientnet-lite0",
           "--image-size", str(SIZE[dataset]), "--public-per-class", str(shots),
           "--epsilon", "1", "3", "8", "--seeds", str(seeds), *RECIPE,
           "--fewshot-selection", selection,
           "--out", str(out_dir(dataset, shots, selection))]  # fmt: skip
    return cmd + (["--arms", *arms] if arms else [])


def out_dir(dataset: str, shots: int, selection: str) -> Path:
    return ROOT / f"{dataset}-k{shots}-{selection}"


def run(a: argparse.Namespace) -> None:
    for shots in a.shots:
        cmd = command(a.dataset, shots, a.selection, a.seeds, a.arms)
        print("dpal " + " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True)


def collect(a: argparse.Namespace) -> None:
    rows = []
    for folder in sorted(p for p in ROOTS[a.finetune].iterdir() if p.is_dir()):
        dataset, rest = folder.name.split("-k", 1)
        shots, selection = rest.split("-", 1)
        # finished cells only (a setting still running contributes what it has)
        cells = [json.loads(c.read_text())["row"] for c in sorted(folder.glob("seed*/*/cell.json"))]
        np_err = {r["seed"]: 1 - r["test_accuracy"] for r in cells if r["arm"] == "non-private"}
        for r in cells:
            row = {"dataset": dataset, "model": LABELS[a.finetune],
                   "image_size": SIZE[dataset], "shots": int(shots), "fewshot_selection": selection,
                   "arm": r["arm"], "epsilon": r["epsilon_target"], "seed": r["seed"],
                   "test_accuracy": r["test_accuracy"], "epsilon_total": r["epsilon"],
                   "machine": f"{platform.machine()}, 2 cores (CPU)"}  # fmt: skip
            if r["arm"] == "snr":
                row.update({k: r[k] for k in ("snr_full", "snr_projected", "captured", "rank")})
            elif np_err.get(r["seed"]):
                e = np_err[r["seed"]]
                row["error_increase"] = ((1 - r["test_accuracy"]) - e) / e
            if "n_public" in r:
                row.update(n_public=r["n_public"], public_classes=r.get("public_classes"))
            rows.append(row)
    if a.keep_existing and Path(a.json).exists():
        # cells collected earlier from run folders no longer on this machine (a new checkout)
        # stay; a cell found again in runs/ replaces its old row
        key = ("dataset", "shots", "fewshot_selection", "arm", "epsilon", "seed")
        found = {tuple(r[k] for k in key) for r in rows}
        old = json.loads(Path(a.json).read_text())
        rows = [r for r in old if tuple(r[k] for k in key) not in found] + rows
    Path(a.json).write_text(json.dumps(rows, indent=1) + "\n")
    print(f"{len(rows)} rows → {a.json}")
    print(markdown(rows))


def markdown(rows: list[dict]) -> str:
    """Per dataset and few-shot selection: accuracy (mean ± std over seeds) and the paper's error
    increase over the non-private model, per arm, ε and shots."""
    import statistics

    out = []
    keys = sorted({(r["dataset"], r["fewshot_selection"]) for r in rows})
    for dataset, selection in keys:
        mine = [r for r in rows if (r["dataset"], r["fewshot_selection"]) == (dataset, selection)]
        shots = sorted({r["shots"] for r in mine})
        out += [f"\n**{dataset}, D_pub {selection}** — test accuracy % (error increase)\n",
                "| arm | ε | " + " | ".join(f"{k}/class" for k in shots) + " |",
                "|---|---|" + "---|" * len(shots)]  # fmt: skip
        arms = [a for a in ("public-only", "dp-finetune", "adamix", "adamix-no-projection",
                            "adamix-no-adaptive-clip", "adamix-no-mixing", "non-private")
                if any(r["arm"] == a for r in mine)]  # fmt: skip
        for arm in arms:
            for eps in sorted({r["epsilon"] for r in mine if r["arm"] == arm}, key=str):
                cells = []
                for k in shots:
                    rs = [r for r in mine if (r["arm"], r["epsilon"], r["shots"]) == (arm, eps, k)]
                    if not rs:
                        cells.append("–")
                        continue
                    acc = [100 * r["test_accuracy"] for r in rs]
                    sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
                    inc = [r["error_increase"] for r in rs if "error_increase" in r]
                    tail = (
                        f" ({100 * statistics.fmean(inc):+.0f}%)"
                        if inc and arm != "non-private"
                        else ""
                    )
                    cells.append(f"{statistics.fmean(acc):.2f} ± {sd:.2f}{tail} [{len(rs)}]")
                label = "∞" if eps is None else ("–" if eps == 0 else f"{eps:g}")
                out.append(f"| {arm} | {label} | " + " | ".join(cells) + " |")
        snr = [r for r in mine if r["arm"] == "snr"]
        for k in shots:
            sk = [r for r in snr if r["shots"] == k]
            if sk:
                f = statistics.fmean
                out.append(f"\nSNR at the few-shot model, {k}/class, ε = {sk[0]['epsilon']:g}: "
                           f"{f(r['snr_full'] for r in sk):.3f} without projection, "
                           f"{f(r['snr_projected'] for r in sk):.2f} with it; the public top-k "
                           f"subspace holds {100 * f(r['captured'] for r in sk):.1f}% of the "
                           f"private mean clipped gradient (k = {sk[0]['rank']}, "
                           f"{len(sk)} seeds).")  # fmt: skip
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="phase", required=True)
    p = sub.add_parser("run")
    p.add_argument("--dataset", choices=sorted(SIZE), required=True)
    p.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10, 50])
    p.add_argument("--selection", default="random", choices=("random", "diverse-public"))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--arms", nargs="+")
    p.set_defaults(func=run)
    p = sub.add_parser("collect")
    p.add_argument("--json", default="docs/results/adamix_backbone.json")
    p.add_argument("--finetune", choices=sorted(ROOTS), default="linear-probe")
    p.add_argument(
        "--keep-existing",
        action="store_true",
        help="keep the rows already in --json for cells not found under runs/",
    )
    p.set_defaults(func=collect)
    a = parser.parse_args()
    a.func(a)


if __name__ == "__main__":
    main()
