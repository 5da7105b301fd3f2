"""Which AdaMix ingredient costs accuracy? Each one alone, on the few-shot model and public set of
an existing `dpal adamix run` folder (seed 0), at one ε — beside the runner's ablations, which
leave one ingredient out at a time. Each run records its mean threshold and mix weight per epoch
in metrics.jsonl.

    python scripts/adamix_attribution.py --run runs/acc/adamix-mnist --epsilon 1 --lr 0.5 \\
        clip-only mix-only no-projection-traced
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from dpal.data.tasks import load_task
from dpal.methods.adamix.runner import AdamixConfig, fewshot_split
from dpal.training.trainer import train

ARMS = {
    "clip-only": dict(projection_rank=0, clip_quantile=0.5, public_mix=0.0),
    "mix-only": dict(projection_rank=0, clip_quantile=None, public_mix="inverse-variance"),
    "no-projection-traced": dict(
        projection_rank=0, clip_quantile=0.5, public_mix="inverse-variance"
    ),
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("arms", nargs="+", choices=list(ARMS))
    p.add_argument("--run", default="runs/acc/adamix-mnist", help="a `dpal adamix run` folder")
    p.add_argument("--dataset", default="mnist-offline")
    p.add_argument("--public-per-class", type=int, default=10)
    p.add_argument("--epsilon", type=float, default=1.0)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=AdamixConfig().train.lr)
    a = p.parse_args()
    config = AdamixConfig()
    seed_dir = Path(a.run) / "seed0"
    task, _ = fewshot_split(load_task(a.dataset), a.public_per_class, 0, config.public_holdout)
    base = replace(
        config.train,
        dataset=task.name,
        seed=0,
        epsilon=a.epsilon,
        epochs=a.epochs,
        lr=a.lr,
        init=str(seed_dir / "fewshot.pt"),
        public_set=str(seed_dir / "public.npz"),
    )
    for name in a.arms:
        out = Path(a.run) / "attribution" / f"{name}-eps{a.epsilon}"
        result = train(replace(base, **ARMS[name]), out, task=task, progress=False)  # type: ignore[arg-type]
        print(name, f"ε={result.epsilon:.3f}", f"test accuracy {result.test_accuracy:.4f}")


if __name__ == "__main__":
    main()
