"""Why the head's input is standardised: how much of the features is a common offset?

For a randomly initialised network and for a DP-RandP prior, on real training images: the mean
distance of each image's features from their mean (what separates images) over the norm of that
mean (what every image shares), before and after :func:`standardize_from_random_process`. Under
per-example clipping the shared part takes most of each clipped gradient of the head when this
ratio is small. Non-private diagnostic: it reads training images, and releases nothing.

    python scripts/randp_feature_offset.py --dataset cifar10 --prior runs/randp/prior/seed0.pt
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from dpal.data.tasks import load_task
from dpal.methods.randp.probe import features
from dpal.models.public_init import load_public_init
from dpal.models.registry import build_model
from dpal.models.standardize import standardize_from_random_process


def spread_over_offset(f: np.ndarray) -> float:
    mean = f.mean(0)
    return float(np.linalg.norm(f - mean, axis=1).mean() / np.linalg.norm(mean))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--prior", required=True, help="a prior .pt from `dpal randp run`")
    p.add_argument("--model", default="cnn-gn")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir")
    a = p.parse_args()
    task = load_task(a.dataset, data_dir=a.data_dir)
    images = task.private.subset(np.arange(a.images))
    print(f"{a.dataset}: spread between images / common offset of the head's input")
    print("| network | raw features | standardised (random-process statistics) |")
    print("|---|---|---|")
    for name in ("random init", "prior"):
        torch.manual_seed(a.seed)
        model = build_model(a.model, task.image_shape, task.num_classes)
        if name == "prior":
            load_public_init(model, a.prior, a.model)
        raw = features(model, images)
        standardize_from_random_process(model, task.image_shape, seed=a.seed)
        with torch.no_grad():
            std = model.standardize(torch.as_tensor(raw)).numpy()
        print(f"| {name} | {spread_over_offset(raw):.3f} | {spread_over_offset(std):.3f} |")


if __name__ == "__main__":
    main()
