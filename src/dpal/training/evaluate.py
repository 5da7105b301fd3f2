"""Accuracy and predicted probabilities, in batches, without gradients; and the held-out
accuracy, recorded in the ledger as the non-private read it is."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from dpal.data.arrays import ImageArrays
from dpal.data.tasks import Task
from dpal.privacy.ledger import Ledger
from dpal.training.network import image_inputs

# Chunks of 256: a chunk's activations are what evaluation adds to a run's peak memory (2,048
# images of cnn-gn at 32 px take 134 MB per feature map, which broke a memory-limited streamed
# run); on CPU larger chunks are not faster.
EVAL_BATCH = 256


@torch.no_grad()
def logits_of(model: nn.Module, x: torch.Tensor, *, batch_size: int = EVAL_BATCH) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(chunk) for chunk in x.split(batch_size)]) if len(x) else x
    finally:
        model.train(was_training)


def accuracy(
    model: nn.Module,
    data: ImageArrays | tuple[torch.Tensor, torch.Tensor],
    device: str | torch.device = "cpu",
) -> float:
    """Images are turned into tensors one chunk at a time: a ``stream:`` test set is read from
    disk chunk by chunk, so evaluation never holds it whole (10,000 CIFAR-10 images as floats are
    123 MB — the allocation that stopped a memory-limited streamed run)."""
    if isinstance(data, ImageArrays):
        if len(data) == 0:
            return float("nan")
        correct = 0
        for start in range(0, len(data), EVAL_BATCH):
            x, y = data.subset(slice(start, start + EVAL_BATCH)).tensors()
            correct += int((logits_of(model, x.to(device)).argmax(1) == y.to(device)).sum())
        return correct / len(data)
    x, y = data[0].to(device), data[1].to(device)
    if len(x) == 0:
        return float("nan")
    return (logits_of(model, x).argmax(1) == y).float().mean().item()


def evaluation_data(
    arrays: ImageArrays, inputs: Callable[[ImageArrays], torch.Tensor] | None
) -> ImageArrays | tuple[torch.Tensor, torch.Tensor]:
    """What :func:`accuracy` reads for ``arrays`` on a network with these ``inputs``: the images
    themselves for a network that takes images (turned into tensors chunk by chunk there), else
    the network's inputs for all of them at once (cached backbone features, small)."""
    if inputs is None or inputs is image_inputs:
        return arrays
    return inputs(arrays), torch.from_numpy(arrays.y)


def holdout_accuracy(
    model: nn.Module,
    task: Task,
    ledger: Ledger,
    epoch: int,
    device: str,
    inputs: Callable[[ImageArrays], torch.Tensor] | None = None,
) -> tuple[float | None, int | None]:
    """Accuracy on the held-out private images, recorded first as what it is: a noiseless
    statistic of private data (ε = ∞). The model never read those images, so the released
    checkpoint's own ε is unchanged; the run's total ε is ∞ (the ledger says why)."""
    if task.validation is None:
        return None, None
    entry = ledger.record(
        "nonprivate",
        mechanism="holdout:validation-accuracy",
        params={},
        note=f"epoch {epoch}: accuracy on {len(task.validation)} held-out private images, "
        "no noise (for tuning; not DP)",
        output="metrics.jsonl",
    )
    return accuracy(model, evaluation_data(task.validation, inputs), device), entry
