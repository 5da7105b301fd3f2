"""Non-private fine-tuning of a released DP model on labelled *public* points: no ledger cost
(the model is a released DP output; the data are public)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dpal.data.arrays import ImageArrays
from dpal.errors import DpalError
from dpal.training.augment import augment_copies
from dpal.training.sampling import shuffled_batches


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig:
    """Defaults are the paper's code's (SGD, lr 0.1, batch 256, 100 epochs)."""

    epochs: int = 100
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    augment: str = "none"  # "shift": random ±max_shift px shifts (public data: free)
    max_shift: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or not self.lr > 0:
            raise DpalError(
                "fine-tuning needs epochs ≥ 0, batch_size ≥ 1 and lr > 0; got "
                f"{self.epochs}, {self.batch_size}, {self.lr}."
            )


def finetune(model: nn.Module, labelled: ImageArrays, config: FinetuneConfig) -> nn.Module:
    """A fine-tuned copy of ``model`` (the original is left as it is)."""
    tuned = copy.deepcopy(model)
    if len(labelled) == 0 or config.epochs == 0:
        return tuned
    x, y = labelled.tensors()
    gen = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.SGD(
        tuned.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    tuned.train()
    for _ in range(config.epochs):
        for idx in shuffled_batches(len(x), batch_size=config.batch_size, generator=gen):
            xb = x[idx]
            if config.augment != "none":
                xb = augment_copies(
                    xb, copies=1, kind=config.augment, max_shift=config.max_shift, generator=gen
                )
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(tuned(xb), y[idx]).backward()
            opt.step()
    tuned.eval()
    return tuned
