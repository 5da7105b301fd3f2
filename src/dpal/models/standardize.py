"""Standardise the head's input with statistics of random-process images: free in privacy.

A network's features after ReLU and average pooling share a large common offset; under DP-SGD's
per-example clipping the head's gradient then mostly points along that offset, and the noise,
whose norm does not depend on it, drowns the class-separating part (see
:class:`dpal.models.groupnorm.FeatureStandardization`). Private statistics would centre the
features best but must not be used without noise (PITFALLS #6); the features of synthetic images
from :mod:`dpal.data.random_process` cost nothing, because no private example is read.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dpal.core.errors import DpalError
from dpal.data.arrays import ImageArrays
from dpal.data.random_process import sample
from dpal.models.groupnorm import FeatureStandardization

# Features are averages over the image, so a few thousand images pin their mean and spread down
# to a few per cent; more only costs time.
N_IMAGES = 4096


def random_process_inputs(
    n: int, image_shape: tuple[int, int, int], *, seed: int = 0
) -> torch.Tensor:
    """``n`` mixture random-process images of ``image_shape`` (``c, h, w``; square) as model
    inputs: float ``[n, c, h, w]`` in [-1, 1], exactly as :meth:`ImageArrays.tensors` maps data."""
    c, h, w = image_shape
    if h != w:
        raise DpalError(f"random-process images are square; this task's are {h}×{w}.")
    images = sample("mixture", n, size=h, channels=c, seed=seed)
    labels = np.zeros(n, dtype=np.int64)  # unused: ImageArrays wants labels
    return ImageArrays.create(images, labels, num_classes=1).tensors()[0]


@torch.no_grad()
def standardize_from_random_process(
    model: nn.Module,
    image_shape: tuple[int, int, int],
    *,
    n: int = N_IMAGES,
    seed: int = 0,
    min_scale: float = 1e-3,
) -> None:
    """Set ``model.standardize`` to the per-feature mean and standard deviation of ``model.embed``
    over ``n`` mixture random-process images of ``image_shape`` (``c, h, w``; square).

    Reads no private data, so DP-SGD's guarantee is unchanged (the ledger records nothing).
    Scales below ``min_scale`` (features that barely vary on synthetic images) are raised to it,
    so that a feature dead on synthetic images is not blown up on real ones.
    """
    module = getattr(model, "standardize", None)
    embed = getattr(model, "embed", None)
    if not isinstance(module, FeatureStandardization) or not callable(embed):
        raise DpalError(
            "feature standardisation needs a model with embed() and a FeatureStandardization "
            "before its head: use cnn-gn or wrn-16-4."
        )
    x = random_process_inputs(n, image_shape, seed=seed)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    features = torch.cat([embed(chunk.to(device)) for chunk in x.split(512)])
    model.train(was_training)
    module.shift.copy_(features.mean(0))
    module.scale.copy_(features.std(0).clamp_min(min_scale))
