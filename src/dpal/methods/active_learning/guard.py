"""The guard of an improvement: never ship a fine-tuned model that is worse than the DP model it
started from.

Fine-tuning on bought labels can make a model worse — a polluted pool leaves few usable labels,
a small skewed set makes the network forget (docs/RESULTS.md: both happen). The guard buys a
``validation_fraction`` of the label budget **uniformly at random from the pool** (the rest is
chosen by the strategy), fine-tunes on the strategy's labels, and compares the fine-tuned model
with the starting model on the random ones. The starting model is kept only when it scores
strictly higher: a tie is no evidence that fine-tuning hurt, and the labels were bought to be
used (four cells of the first issue-15 study tied, at 500–2,000 labels: 100–400 validation
labels are too few to tell two good models apart); when the fine-tuned recipe wins it is refitted on
*all* bought labels, the random ones included, so no label is wasted. Everything here reads
public data and released models only: post-processing, no ε.

Why random and not a held-out part of the strategy's own picks: every strategy but random buys
the points the model is *least* sure of, so the starting model scores 30–50% on them and almost
any fine-tuning looks better there, even when it makes the test accuracy fall (measured while
building this). Random pool points are an unbiased sample of the pool's images of the classes.
A rejected image is not a label; an annotator who labels foreign images as a class puts those
labels into the validation set too — the guard judges by the data the user paid for, which is
all it can see.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dpal.core.errors import DpalError
from dpal.data.arrays import ImageArrays
from dpal.training.evaluate import accuracy
from dpal.training.finetune import FinetuneConfig, finetune
from dpal.training.network import image_inputs

KEPT = ("fine-tuned", "start")


@dataclass(frozen=True)
class GuardConfig:
    validation_fraction: float = 0.2  # of the label budget, bought at random; 0: no guard
    refit: bool = True  # the winning recipe retrained on all bought labels
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.validation_fraction < 1.0:
            raise DpalError(
                f"validation_fraction must be in [0, 1), got {self.validation_fraction}; "
                "use 0 to switch the guard off."
            )


@dataclass(frozen=True)
class GuardResult:
    model: nn.Module
    kept: str  # "fine-tuned" or "start"
    n_validation: int
    validation_start: float  # accuracy on the held-out bought labels (nan without a guard)
    validation_tuned: float


def validation_size(n_labeled: int, fraction: float, multiple: int = 1) -> int:
    """How many of ``n_labeled`` labels the guard buys at random: about ``fraction`` of them,
    leaving the strategy a multiple of ``multiple`` (DiversePublic's n_each) and at least one."""
    if fraction == 0.0 or n_labeled < 2:
        return 0
    strategy = multiple * round(n_labeled * (1.0 - fraction) / multiple)
    strategy = min(n_labeled, max(strategy, min(multiple, n_labeled - 1)))
    return n_labeled - strategy


def random_validation(n_pool: int, chosen: np.ndarray, n_validation: int, seed: int) -> np.ndarray:
    """``n_validation`` pool indices drawn uniformly from those the strategy did not choose."""
    rest = np.setdiff1d(np.arange(n_pool), chosen)
    if n_validation > len(rest):
        raise DpalError(
            f"the pool has {len(rest)} points left for the guard's {n_validation} random labels; "
            "lower --validation-fraction or --n-labeled."
        )
    return np.sort(np.random.default_rng([seed, 1]).choice(rest, n_validation, replace=False))


def guarded_finetune(
    model: nn.Module,
    train: ImageArrays,
    validation: ImageArrays,
    finetune_config: FinetuneConfig,
    guard: GuardConfig,
    *,
    unlabelled: ImageArrays | None = None,
    inputs: Callable[[ImageArrays], torch.Tensor] | None = None,
) -> GuardResult:
    """Fine-tune ``model`` on ``train`` behind the guard, judged on ``validation`` (module
    docstring); ``model`` is left as it is. ``inputs``: images → the network's inputs
    (``Network.inputs``)."""
    to_inputs = inputs or image_inputs

    def tune(data: ImageArrays) -> nn.Module:
        return finetune(model, data, finetune_config, unlabelled=unlabelled, inputs=inputs)

    nan = float("nan")
    if len(validation) == 0:  # no guard (or every random label rejected): fine-tune on all
        if len(train) == 0:
            return GuardResult(copy.deepcopy(model), "start", 0, nan, nan)
        return GuardResult(tune(train), "fine-tuned", 0, nan, nan)
    everything = _concat(train, validation)
    tuned = tune(train) if len(train) else tune(validation)
    val_data = (to_inputs(validation), torch.from_numpy(validation.y))
    acc_start, acc_tuned = accuracy(model, val_data), accuracy(tuned, val_data)
    if len(train) and acc_tuned >= acc_start:
        shipped = tune(everything) if guard.refit else tuned
        return GuardResult(shipped, "fine-tuned", len(validation), acc_start, acc_tuned)
    return GuardResult(copy.deepcopy(model), "start", len(validation), acc_start, acc_tuned)


def _concat(a: ImageArrays, b: ImageArrays) -> ImageArrays:
    return ImageArrays(
        np.concatenate([a.x, b.x]), np.concatenate([a.y, b.y]), a.num_classes, a.name
    )
