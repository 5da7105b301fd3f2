"""Linear probes of learned features, *without* privacy: a check of Phase I's representation
(DP-RandP's features against a randomly initialised network of the same shape), never a
released model. Logistic regression from scikit-learn on standardised features."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from dpal.data.arrays import ImageArrays


@torch.no_grad()
def features(model: nn.Module, images: ImageArrays, batch_size: int = 512) -> np.ndarray:
    """``model.embed`` of every image (dpal models have one: the input of the head)."""
    model.eval()
    embed: Any = model.embed
    x, _ = images.tensors()
    return torch.cat([embed(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]).numpy()


def linear_probe_accuracy(
    model: nn.Module, train: ImageArrays, test: ImageArrays, *, max_iter: int = 1000
) -> float:
    """Test accuracy of a logistic regression on ``model``'s features of ``train``. Non-private:
    it reads ``train`` freely, so it only measures how good the features are."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    probe.fit(features(model, train), train.y)
    return float(probe.score(features(model, test), test.y))
