"""How much of the private gradient does AdaMix's public subspace hold, along a run? For the
few-shot model and the first and last checkpoints of some arms of a `dpal adamix run` folder
(seed 0): ‖UUᵀḡ‖²/‖ḡ‖², ḡ the mean clipped gradient of 1,024 private examples, U the public
top-k subspace, k ∈ {16, 64, |P| − 1}; and the public projected gradient norms' median (the
adaptive clip threshold). Works for any network the run trained (a small CNN on images, a head on
a backbone's cached features): it rebuilds the network from the cells' own run.json. A
diagnostic that reads private data without noise: reported, never released.

    python scripts/adamix_capture.py --run runs/acc/adamix-mnist-lr4 --dataset mnist-offline \\
        dp-finetune-eps1.0 adamix-eps1.0
    python scripts/adamix_capture.py --run runs/adamix-backbone/cifar10-offline-k10-random \\
        --dataset cifar10-offline dp-finetune-eps1.0 adamix-eps1.0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from dpal.data.tasks import load_task
from dpal.methods.adamix.runner import AdamixConfig, fewshot_split
from dpal.models.public_init import load_public_init
from dpal.training.adamix import _flat, _per_example, public_subspace, subspace_capture
from dpal.training.checkpoint import list_checkpoints, load_checkpoint
from dpal.training.config import TrainConfig
from dpal.training.network import network_for


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("cells", nargs="*", default=["dp-finetune-eps1.0", "adamix-eps1.0"])
    p.add_argument("--run", default="runs/acc/adamix-mnist-lr4")
    p.add_argument("--dataset", default="mnist-offline")
    p.add_argument("--public-per-class", type=int, default=10)
    a = p.parse_args()
    seed_dir = Path(a.run) / "seed0"
    config = TrainConfig.from_dict(
        json.loads((seed_dir / a.cells[0] / "run" / "run.json").read_text())["config"]
    )
    task, public = fewshot_split(
        load_task(a.dataset), a.public_per_class, 0, AdamixConfig().public_holdout
    )

    def network() -> torch.nn.Module:
        return network_for(
            config, task.image_shape, task.num_classes, fit_statistics=False
        ).trainable

    net = network_for(config, task.image_shape, task.num_classes, fit_statistics=False)
    px, py = net.inputs(public), torch.from_numpy(public.y)
    pick = torch.randperm(len(task.private), generator=torch.Generator().manual_seed(0))[:1024]
    x, y = net.inputs(task.private)[pick], torch.from_numpy(task.private.y)[pick]
    ranks = (16, 64, len(public) - 1)

    def report(model: torch.nn.Module, label: str) -> None:
        shares = [subspace_capture(model, x, y, px, py, rank=k, clip=1.0) for k in ranks]
        basis = public_subspace(_flat(_per_example(model, px, py)), 16)
        norms = (_flat(_per_example(model, px, py)) @ basis).norm(dim=1)
        pairs = zip(ranks, shares, strict=True)
        print(f"{label}: " + ", ".join(f"k={k} {100 * s:.1f}%" for k, s in pairs)
              + f"; median public projected norm (k=16) {float(norms.median()):.4f}",
              flush=True)  # fmt: skip

    model = net.trainable
    load_public_init(model, seed_dir / "fewshot.pt", config.model)
    report(model, "few-shot model")
    for cell in a.cells:
        checkpoints = list_checkpoints(seed_dir / cell / "run")
        for ckpt in (checkpoints[0], checkpoints[-1]):
            model = network()
            model.load_state_dict(load_checkpoint(ckpt["path"])["model"])
            report(model, f"{cell}, {Path(ckpt['path']).stem}")


if __name__ == "__main__":
    main()
