"""Fine-tuning recipes for active learning, compared on a *public* validation split.

2,000 random pool points are set aside as validation (their labels are used only to compare
recipes — 2,000 extra public labels of tuning cost, never the test set); selection runs on the
rest of the pool; each recipe fine-tunes the same DP checkpoint on the same bought points.

    python scripts/finetune_research.py CHECKPOINT --n 2000 7000 --out research.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace

import numpy as np

from dpal.data.arrays import ImageArrays
from dpal.data.tasks import load_task
from dpal.methods.active_learning.improve import SelectConfig, load_released_model, select
from dpal.privacy.ledger import Ledger
from dpal.training.evaluate import accuracy
from dpal.training.finetune import FinetuneConfig, finetune

PAPER = FinetuneConfig(augment="none", lr_schedule="constant", epochs=100)
RECIPES = {
    "paper (SGD 0.1, 100 ep)": PAPER,
    "+ shift augmentation": replace(PAPER, augment="shift"),
    "+ distillation w=1": replace(PAPER, distill_weight=1.0),
    "+ shift + distillation w=1": replace(PAPER, augment="shift", distill_weight=1.0),
    "+ shift + distillation w=3": replace(PAPER, augment="shift", distill_weight=3.0),
    "lr 0.03 + shift + distillation w=1": replace(
        PAPER, lr=0.03, augment="shift", distill_weight=1.0
    ),
    "+ shift, seed 1": replace(PAPER, augment="shift", seed=1),
    "+ shift, 200 epochs": replace(PAPER, augment="shift", epochs=200),
    "+ shift, momentum 0.9, lr 0.02": replace(PAPER, augment="shift", momentum=0.9, lr=0.02),
    "+ shift, cosine": replace(PAPER, augment="shift", lr_schedule="cosine"),
    "+ shift, cosine, seed 1": replace(PAPER, augment="shift", lr_schedule="cosine", seed=1),
    "+ shift, cosine, 200 epochs": FinetuneConfig(
        augment="shift", lr_schedule="cosine", epochs=200
    ),
    "paper, seed 1": replace(PAPER, seed=1),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("checkpoint")
    p.add_argument("--n", type=int, nargs="+", default=[2000, 7000])
    p.add_argument("--strategy", default="diverse-public")
    p.add_argument("--recipes", nargs="*", default=list(RECIPES))
    p.add_argument("--out", required=True)
    p.add_argument("--data-dir")
    a = p.parse_args()
    ckpt = load_released_model(a.checkpoint)
    task = load_task(ckpt.summary["config"]["dataset"], data_dir=a.data_dir)
    assert task.public is not None
    rng = np.random.default_rng(0)
    order = rng.permutation(len(task.public))
    val_idx, pool_idx = order[:2000], order[2000:]
    validation = task.public.subset(val_idx, name="public-validation")
    pool = task.public.subset(pool_idx, name="pool")
    sub_task = replace(task, public=pool)
    rows = []
    for n in a.n:
        import tempfile

        ledger = Ledger(tempfile.mkdtemp() + "/ledger.json")
        picked, _ = select(
            ckpt.model, sub_task, SelectConfig(strategy=a.strategy, n_labeled=n), ledger
        )
        bought = ImageArrays(pool.x[picked], pool.y[picked], task.num_classes, "bought")
        for name in a.recipes:
            start = time.perf_counter()
            tuned = finetune(ckpt.model, bought, RECIPES[name], unlabelled=pool)
            row = {
                "n": n,
                "recipe": name,
                "config": asdict(RECIPES[name]),
                "validation_accuracy": accuracy(tuned, validation),
                "seconds": time.perf_counter() - start,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
            with open(a.out, "w") as f:
                json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
