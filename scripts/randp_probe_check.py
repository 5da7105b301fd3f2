"""Is DP-RandP's Phase I prior worth anything? A non-private linear probe (logistic regression) on
the features of (a) the prior learned from random-process images and (b) a randomly initialised
network of the same shape, on a subset of the real training set, scored on the test set.

Non-private by design (issue #5's check of the representation, not a released model).

    python scripts/randp_probe_check.py --dataset cifar10 --steps 2000 --lr 0.1 --pool 30000
    python scripts/randp_probe_check.py --dataset cifar10 --prior runs/randp-cifar10/prior/seed0.pt
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from dpal.data.tasks import load_task
from dpal.methods.randp.prior import PriorConfig, learn_prior
from dpal.methods.randp.probe import linear_probe_accuracy
from dpal.models.public_init import load_public_init
from dpal.models.registry import build_model


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=PriorConfig.lr)
    p.add_argument("--pool", type=int, help="images drawn once and revisited (default: stream)")
    p.add_argument("--kind", default="mixture")
    p.add_argument("--prior", help="an existing prior (.pt from `dpal randp run`): no Phase I")
    p.add_argument("--model", default="cnn-gn")
    p.add_argument("--train-images", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir")
    p.add_argument("--out", default="runs/randp-probe")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    task = load_task(a.dataset, data_dir=a.data_dir)
    assert task.test is not None
    c, h, _ = task.image_shape
    rng = np.random.default_rng(a.seed)
    train = task.private.subset(np.sort(rng.choice(len(task.private), a.train_images, False)))
    started = time.time()
    tag = f"{a.dataset}-{a.kind}-{a.steps}steps-lr{a.lr}-seed{a.seed}"
    prior_path = out / f"prior-{tag}.pt"
    config = PriorConfig(
        model=a.model,
        kind=a.kind,
        size=h,
        channels=c,
        steps=a.steps,
        batch_size=a.batch_size,
        lr=a.lr,
        pool=a.pool,
        seed=a.seed,
    )
    if a.prior:  # e.g. OUT/prior/seed0.pt of `dpal randp run`
        prior_path = Path(a.prior)
        payload = torch.load(prior_path, map_location="cpu", weights_only=True)
        tag = f"{a.dataset}-{prior_path.parent.parent.name}-{prior_path.stem}"
    else:
        payload = learn_prior(config, prior_path, progress=True)
    prior_seconds = time.time() - started
    torch.manual_seed(a.seed)
    random_init = build_model(a.model, task.image_shape, task.num_classes)
    prior = build_model(a.model, task.image_shape, task.num_classes)
    load_public_init(prior, prior_path, a.model)
    result = {
        "dataset": a.dataset,
        "model": a.model,
        "prior_config": payload["config"],
        "prior": str(prior_path),
        "prior_seconds": round(prior_seconds) if not a.prior else None,
        "train_images": a.train_images,
        "probe_random_init": linear_probe_accuracy(random_init, train, task.test),
        "probe_randp_prior": linear_probe_accuracy(prior, train, task.test),
        "last_losses": payload["history"][-1],
    }
    print(json.dumps(result, indent=1))
    (out / f"probe-{tag}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
