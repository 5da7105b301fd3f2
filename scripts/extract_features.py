"""Fill the feature cache for a task's splits (private, public pool, test) with a frozen
backbone, so that the runs that follow read features instead of images (models/features.py).

    python scripts/extract_features.py --dataset cifar10 --image-size 160
    python scripts/extract_features.py --dataset mnist --image-size 96

The cache holds features of private images: private data (its README says so). Nothing here is
released or accounted: the DP runs that read the features record their own ledgers.
"""

from __future__ import annotations

import argparse
import time

from dpal.data.tasks import load_task
from dpal.models.backbones import load_backbone
from dpal.models.features import cached_features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--image-size", type=int, required=True)
    parser.add_argument("--parts", nargs="+", default=["pooled"])
    args = parser.parse_args()
    backbone = load_backbone(args.model, image_size=args.image_size)
    task = load_task(args.dataset)
    for split in (task.private, task.public, task.test):
        if split is None:
            continue
        t = time.perf_counter()
        feats = cached_features(backbone, split, parts=tuple(args.parts))
        took = time.perf_counter() - t
        shapes = {k: tuple(v.shape) for k, v in feats.items()}
        print(
            f"{split.name}: {shapes} in {took:.0f} s ({len(split) / max(took, 1e-9):.0f} img/s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
