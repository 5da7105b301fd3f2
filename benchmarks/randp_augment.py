"""Seconds for two augmented views of a batch of random-process images: torchvision's v2
transforms applied image by image (SimCLR's recipe) against dpal's batch-vectorised
:class:`dpal.methods.randp.prior.BatchAugment`, same augmentations, one run.

    python benchmarks/randp_augment.py [--batch-size 128] [--size 32] [--rounds 5]

Median over rounds; the ratio is per-image ÷ batched.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torchvision.transforms import v2

from dpal.data.random_process import sample
from dpal.methods.randp.prior import BatchAugment


def per_image_v2(size: int) -> v2.Compose:
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=(0.2, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    batch = torch.from_numpy(sample("mixture", a.batch_size, size=a.size, seed=0)).permute(
        0, 3, 1, 2
    )
    looped, batched = per_image_v2(a.size), BatchAugment(a.size, 3)
    times: dict[str, list[float]] = {"per-image v2": [], "batched": []}
    for _ in range(a.rounds):
        start = time.perf_counter()
        for _view in range(2):
            torch.stack([looped(img) for img in batch])
        times["per-image v2"].append(time.perf_counter() - start)
        start = time.perf_counter()
        for _view in range(2):
            batched(batch)
        times["batched"].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:>13}: {v:.4f} s for two views of {a.batch_size} images at {a.size}×{a.size}")
    print(f"ratio per-image / batched: {med['per-image v2'] / med['batched']:.1f}×")


if __name__ == "__main__":
    main()
