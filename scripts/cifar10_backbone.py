"""CIFAR-10 on a pretrained EfficientNet-Lite0: DP linear probe (and last-blocks fine-tuning) at
ε ∈ {1, 3, 8}, beside the non-private linear probe of the same features (issue #13).

Hyper-parameters are chosen on a held-out split of the *training* set (the last 5,000 images;
``--phase tune``), never on the test set; the tuning runs read those images without noise (their
ledgers say ε = ∞) and are not part of any reported ε. The final runs (``--phase final``) train
on all 50,000 images with the chosen configuration; each is exactly

    dpal train --dataset cifar10 --model efficientnet-lite0 --finetune MODE --image-size 160 \\
        --epsilon EPS --seed SEED --batch-size B --epochs E --lr LR --ema EMA --lr-schedule S

Features are computed once (models/features.py) and read from the cache by every run.

    python scripts/cifar10_backbone.py --phase tune  --out runs/cifar10-backbone
    python scripts/cifar10_backbone.py --phase final --out runs/cifar10-backbone --seeds 0 1
    python scripts/cifar10_backbone.py --phase nonprivate --out runs/cifar10-backbone
    python scripts/cifar10_backbone.py --phase collect --out runs/cifar10-backbone

``--image-size`` changes the resolution the images are upsampled to (160 above; the features are
cached per resolution); ``--c`` fixes the non-private probe's C instead of choosing it on the
holdout.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

from dpal.data.tasks import load_task
from dpal.models.backbones import load_backbone
from dpal.models.features import cached_features
from dpal.training.config import TrainConfig
from dpal.training.trainer import VALIDATION_KEY, train

SIZE = 160
HOLDOUT = 5_000
BASE = TrainConfig(dataset="cifar10", model="efficientnet-lite0", finetune="linear-probe",
                   image_size=SIZE, batch_size=4096, clip=1.0, delta=1e-5, ema=0.0,
                   lr_schedule="constant", epochs=30, lr=4.0, epsilon=1.0)  # fmt: skip
# Round 1: learning rate × epochs × schedule at batch 4,096. Round 2: the head's input
# standardised with random-process statistics (free), and larger batches.
ROUNDS = {
    1: [
        dict(lr=lr, epochs=e, lr_schedule=s)
        for lr in (1.0, 4.0, 16.0)
        for e in (10, 30)
        for s in ("constant", "cosine")
    ],
    2: [dict(lr=lr, epochs=30, standardize_features=True) for lr in (0.25, 1.0, 4.0)]
    + [dict(lr=lr, epochs=e, batch_size=16384) for lr, e in ((4.0, 60), (16.0, 60), (16.0, 120))]
    + [dict(lr=lr, epochs=60, batch_size=16384, standardize_features=True) for lr in (1.0, 4.0)],
}


def _row(config: TrainConfig, result, arm: str, wall: float) -> dict:
    return {"dataset": "cifar10 (offline JPEG copy)", "model": "efficientnet-lite0",
            "arm": arm, "finetune": config.finetune, "image_size": config.image_size,
            "epsilon": config.epsilon, "delta": config.delta, "seed": config.seed,
            "epsilon_total": result.epsilon, "test_accuracy": result.test_accuracy,
            "lr": config.lr, "epochs": config.epochs, "batch_size": config.batch_size,
            "lr_schedule": config.lr_schedule, "ema": config.ema,
            "standardize_features": config.standardize_features,
            "wall_seconds": wall, "machine": f"{platform.machine()}, 2 cores (CPU)"}  # fmt: skip


def tune(out: Path, mode: str, round_: int) -> None:
    rows = []
    for pick in ROUNDS[round_]:
        config = replace(BASE, finetune=mode, holdout=HOLDOUT, **pick)
        name = f"tune-{mode}-" + "-".join(f"{k}{v}" for k, v in pick.items())
        t = time.perf_counter()
        result = train(config, out / name, progress=False)
        val = result.history[-1][VALIDATION_KEY]
        rows.append({**_row(config, result, "dp-tune", time.perf_counter() - t),
                     "validation_accuracy_nonprivate": val})  # fmt: skip
        print(f"{name}: held-out accuracy {val:.4f} (ε = {result.epsilon:.3f})", flush=True)
    (out / f"tuning-{mode}-round{round_}.json").write_text(json.dumps(rows, indent=1))


def final(out: Path, mode: str, seeds: list[int], epsilons: list[float], pick: dict) -> None:
    rows = []
    for eps, seed in itertools.product(epsilons, seeds):
        config = replace(BASE, finetune=mode, epsilon=eps, seed=seed, **pick)
        t = time.perf_counter()
        result = train(config, out / f"final-{mode}-eps{eps:g}-seed{seed}", progress=False)
        rows.append(_row(config, result, f"dp-{mode}", time.perf_counter() - t))
        print(json.dumps(rows[-1]), flush=True)
    path = out / f"final-{mode}.json"
    old = json.loads(path.read_text()) if path.exists() else []
    path.write_text(json.dumps(old + rows, indent=1))


def nonprivate(out: Path, cs: list[float]) -> None:
    """Logistic regression (L-BFGS) on the same cached features; C chosen on the holdout (or
    the one C given)."""
    from sklearn.linear_model import LogisticRegression

    task = load_task("cifar10")
    backbone = load_backbone("efficientnet-lite0", image_size=BASE.image_size)
    t = time.perf_counter()
    ftr = cached_features(backbone, task.private)["pooled"].numpy()
    fte = cached_features(backbone, task.test)["pooled"].numpy()
    ytr, yte = task.private.y, task.test.y
    fit, val = slice(0, len(ftr) - HOLDOUT), slice(len(ftr) - HOLDOUT, None)
    scores = {}
    for c in cs if len(cs) > 1 else ():
        clf = LogisticRegression(C=c, max_iter=1000).fit(ftr[fit], ytr[fit])
        scores[c] = float((clf.predict(ftr[val]) == ytr[val]).mean())
        print(f"C={c}: held-out {scores[c]:.4f}", flush=True)
    best = max(scores, key=lambda c: scores[c]) if scores else cs[0]
    clf = LogisticRegression(C=best, max_iter=1000).fit(ftr, ytr)
    acc = float((clf.predict(fte) == yte).mean())
    row = {"dataset": "cifar10 (offline JPEG copy)", "model": "efficientnet-lite0",
           "arm": "non-private linear probe (logistic regression)", "finetune": "linear-probe",
           "image_size": BASE.image_size, "epsilon": None, "epsilon_total": float("inf"), "seed": 0,
           "C": best, "holdout_scores": scores, "test_accuracy": acc,
           "wall_seconds": time.perf_counter() - t}  # fmt: skip
    print(json.dumps(row), flush=True)
    (out / "nonprivate.json").write_text(json.dumps([row], indent=1))


def collect(out: Path, dest: Path) -> None:
    """Every final, non-private and tuning row into one JSON list; the table as markdown."""
    import statistics

    rows = []
    for name in ("nonprivate.json", "final-linear-probe.json", "final-last-blocks.json",
                 "tuning-linear-probe-round1.json", "tuning-linear-probe-round2.json"):  # fmt: skip
        if (out / name).exists():
            rows += json.loads((out / name).read_text())
    dest.write_text(json.dumps(rows, indent=1) + "\n")
    print("| arm | ε | seeds | test accuracy (mean ± std) | wall time per run |")
    print("|---|---|---|---|---|")
    groups: dict[tuple, list] = {}
    for r in rows:
        if r["arm"] != "dp-tune":
            groups.setdefault((r["arm"], r["epsilon"]), []).append(r)
    for (arm, eps), rs in groups.items():
        accs = [100 * r["test_accuracy"] for r in rs]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        seeds = ", ".join(str(r["seed"]) for r in rs)
        wall = statistics.fmean(r["wall_seconds"] for r in rs)
        print(f"| {arm} | {eps if eps is not None else '∞'} | {seeds} | "
              f"{statistics.fmean(accs):.2f} ± {sd:.2f} | {wall:.0f} s |")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--phase", required=True, choices=("tune", "final", "nonprivate", "collect"))
    p.add_argument("--mode", default="linear-probe", choices=("linear-probe", "last-blocks"))
    p.add_argument("--out", default="runs/cifar10-backbone")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epsilon", type=float, nargs="+", default=[1.0, 3.0, 8.0])
    p.add_argument("--pick", default="{}", help="JSON: the tuned lr, epochs, lr_schedule")
    p.add_argument("--round", type=int, default=1, choices=sorted(ROUNDS))
    p.add_argument("--image-size", type=int, default=SIZE)
    p.add_argument("--c", type=float, nargs="+", default=[0.01, 0.1, 1.0], help="non-private C")
    p.add_argument("--dest", default="docs/results/cifar10_backbone.json", help="collect: JSON")
    a = p.parse_args()
    global BASE
    BASE = replace(BASE, image_size=a.image_size)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.phase == "tune":
        tune(out, a.mode, a.round)
    elif a.phase == "final":
        final(out, a.mode, a.seeds, a.epsilon, json.loads(a.pick))
    elif a.phase == "nonprivate":
        nonprivate(out, a.c)
    else:
        collect(out, Path(a.dest))


if __name__ == "__main__":
    main()
