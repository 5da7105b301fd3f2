"""Non-private fine-tuning of a released DP model on labelled *public* points: no ledger cost
(the model is a released DP output; the data are public)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dpal.core.errors import DpalError
from dpal.data.arrays import ImageArrays
from dpal.training.augment import augment_copies
from dpal.training.network import image_inputs
from dpal.training.sampling import shuffled_batches


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig:
    """Defaults: the paper's code's SGD (lr 0.1, batch 256) with ±2 px shift augmentation, a
    cosine learning-rate decay and 200 epochs — chosen on a public validation split
    (docs/RESULTS.md). The paper's own recipe is ``augment="none", lr_schedule="constant",
    epochs=100``."""

    epochs: int = 200
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"  # decays to 0, so the last epoch is not a random dip
    augment: str = "shift"  # random ±max_shift px shifts (public data: free)
    max_shift: int = 2
    # Distillation from the starting (DP) model on the unlabelled public pool, against forgetting
    # what DP training learned: loss = CE(bought) + w · KL(teacher ‖ student) on pool batches.
    # Free: the teacher is a released DP output and the pool is public.
    distill_weight: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.lr_schedule not in ("constant", "cosine"):
            raise DpalError(f"lr_schedule must be constant or cosine, got {self.lr_schedule!r}.")
        if self.epochs < 0 or self.batch_size < 1 or not self.lr > 0:
            raise DpalError(
                "fine-tuning needs epochs ≥ 0, batch_size ≥ 1 and lr > 0; got "
                f"{self.epochs}, {self.batch_size}, {self.lr}."
            )


def finetune(
    model: nn.Module,
    labelled: ImageArrays,
    config: FinetuneConfig,
    *,
    unlabelled: ImageArrays | None = None,
    inputs: Callable[[ImageArrays], torch.Tensor] | None = None,
) -> nn.Module:
    """A fine-tuned copy of ``model`` (the original is left as it is, and is the teacher when
    ``config.distill_weight`` > 0, on batches of ``unlabelled`` public images).

    ``inputs``: the network's map from images to its inputs (``Network.inputs``; a frozen
    backbone's cached features), for a head trained on features; augmentation then has no
    images to shift and is refused."""
    tuned = copy.deepcopy(model)
    if len(labelled) == 0 or config.epochs == 0:
        return tuned
    if inputs is not None and config.augment != "none":
        raise DpalError(
            f"fine-tuning on backbone features cannot augment images (augment={config.augment!r}); "
            "use augment='none', or fine-tune the backbone in full."
        )
    to_inputs = inputs or image_inputs
    distill = config.distill_weight > 0 and unlabelled is not None and len(unlabelled) > 0
    if distill:
        assert unlabelled is not None
        pool_x = to_inputs(unlabelled)
        model.eval()
    x, y = to_inputs(labelled), torch.from_numpy(labelled.y)
    gen = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.SGD(
        tuned.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    tuned.train()
    steps_per_epoch = -(-len(x) // config.batch_size)
    total, step = config.epochs * steps_per_epoch, 0
    for _ in range(config.epochs):
        for idx in shuffled_batches(len(x), batch_size=config.batch_size, generator=gen):
            if config.lr_schedule == "cosine":
                for group in opt.param_groups:
                    group["lr"] = 0.5 * config.lr * (1 + math.cos(math.pi * step / total))
            step += 1
            xb = x[idx]
            if config.augment != "none":
                xb = augment_copies(
                    xb, copies=1, kind=config.augment, max_shift=config.max_shift, generator=gen
                )
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(tuned(xb), y[idx])
            if distill:
                u = pool_x[torch.randint(0, len(pool_x), (len(idx),), generator=gen)]
                with torch.no_grad():
                    teacher = F.log_softmax(model(u), dim=1)
                student = F.log_softmax(tuned(u), dim=1)
                kl = F.kl_div(student, teacher, log_target=True, reduction="batchmean")
                loss = loss + config.distill_weight * kl
            loss.backward()
            opt.step()
    tuned.eval()
    return tuned
