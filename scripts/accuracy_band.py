"""Measure the accuracy band that tests/test_privacy_in_the_loop.py asserts: 2 DP epochs on the
first 6,000 MNIST training images (2,000 test images), batch 256, lr 2, no EMA, deterministic
noise, at ε = 0.5 over several seeds — and the same run at σ = 0.3 (almost no noise), which a
silently disabled noise would look like. Writes the rows as JSON.

    python scripts/accuracy_band.py --seeds 8 --out docs/results/accuracy_band.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--low-noise-seeds", type=int, default=3)
    parser.add_argument("--data-dir", default=str(Path(__file__).parents[2] / "shared/datasets"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(2)
    from dpal.data.registry import load_split
    from dpal.data.tasks import Task
    from dpal.training.config import TrainConfig
    from dpal.training.trainer import train

    train_split = load_split("mnist", "train", data_dir=args.data_dir)
    test_split = load_split("mnist", "test", data_dir=args.data_dir)
    task = Task(name="mnist-6k", private=train_split.subset(np.arange(6000)),
                test=test_split.subset(np.arange(2000)))  # fmt: skip
    arms = [("epsilon", {"epsilon": 0.5}, args.seeds),
            ("sigma-0.3", {"noise_multiplier": 0.3}, args.low_noise_seeds)]  # fmt: skip
    rows = []
    for arm, noise, seeds in arms:
        for seed in range(seeds):
            cfg = TrainConfig(dataset="mnist-6k", epochs=2, batch_size=256, lr=2.0, ema=0.0,
                              seed=seed, deterministic_noise=True, **noise)  # fmt: skip
            result = train(cfg, tempfile.mkdtemp(), task=task, progress=False)
            row = {"dataset": "mnist (first 6,000 / 2,000 test)", "model": cfg.model, "arm": arm,
                   "seed": seed, "epsilon": result.epsilon, "noise_multiplier":
                   result.noise_multiplier, "test_accuracy": result.test_accuracy}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
