"""How much of the private gradient does AdaMix's public subspace hold, along a run? For the
few-shot model and the first and last checkpoints of some arms of a `dpal adamix run` folder
(seed 0): ‖UUᵀḡ‖²/‖ḡ‖², ḡ the mean clipped gradient of 1,024 private examples, U the public
top-k subspace, k ∈ {16, 64, 99}. A diagnostic that reads private data without noise: reported,
never released.

    python scripts/adamix_capture.py --run runs/acc/adamix-mnist-lr4 \\
        dp-finetune-eps1.0 adamix-eps1.0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from dpal.data.tasks import load_task
from dpal.methods.adamix.runner import AdamixConfig, fewshot_split
from dpal.models.public_init import load_public_init
from dpal.models.registry import build_model
from dpal.training.adamix import subspace_capture
from dpal.training.checkpoint import list_checkpoints, load_checkpoint


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("cells", nargs="*", default=["dp-finetune-eps1.0", "adamix-eps1.0"])
    p.add_argument("--run", default="runs/acc/adamix-mnist-lr4")
    p.add_argument("--dataset", default="mnist-offline")
    p.add_argument("--public-per-class", type=int, default=10)
    p.add_argument("--model", default="cnn-tanh")
    a = p.parse_args()
    seed_dir = Path(a.run) / "seed0"
    task, public = fewshot_split(
        load_task(a.dataset), a.public_per_class, 0, AdamixConfig().public_holdout
    )
    px, py = public.tensors()
    pick = torch.randperm(len(task.private), generator=torch.Generator().manual_seed(0))[:1024]
    x, y = task.private.subset(pick.numpy()).tensors()

    def report(model: torch.nn.Module, label: str) -> None:
        ranks = (16, 64, 99)
        shares = [subspace_capture(model, x, y, px, py, rank=k, clip=1.0) for k in ranks]
        pairs = zip(ranks, shares, strict=True)
        print(f"{label}: " + ", ".join(f"k={k} {100 * s:.1f}%" for k, s in pairs))

    model = build_model(a.model, task.image_shape, task.num_classes)
    load_public_init(model, seed_dir / "fewshot.pt", a.model)
    report(model, "few-shot model")
    for cell in a.cells:
        checkpoints = list_checkpoints(seed_dir / cell / "run")
        for ckpt in (checkpoints[0], checkpoints[-1]):
            model = build_model(a.model, task.image_shape, task.num_classes)
            model.load_state_dict(load_checkpoint(ckpt["path"])["model"])
            report(model, f"{cell}, {Path(ckpt['path']).stem}")


if __name__ == "__main__":
    main()
