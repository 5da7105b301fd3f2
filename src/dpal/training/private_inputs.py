"""The private examples one training process reads, by position in its shard: held in memory
as the network's inputs, or — for a ``stream:`` folder on a network that takes images — read
from disk one Poisson batch at a time (``dpal.data.streaming``), so the process never holds
more than a batch of private images."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from dpal.data.arrays import ImageArrays
from dpal.data.streaming import LazyPixels
from dpal.training.network import image_inputs


class PrivateInputs:
    """``batch(positions)`` → (inputs, labels) on ``device``; ``local``: the global indices this
    rank holds (None: all of them, one process)."""

    def __init__(
        self,
        arrays: ImageArrays,
        inputs: Callable[[ImageArrays], torch.Tensor],
        local: torch.Tensor | None,
        device: str,
    ) -> None:
        self.rows = np.arange(len(arrays)) if local is None else local.numpy()
        self.device = device
        # A frozen backbone's inputs are its cached features (small): those stay in memory.
        self.streamed = isinstance(arrays.x, LazyPixels) and inputs is image_inputs
        self.arrays, self.inputs = arrays, inputs
        self.y = torch.from_numpy(arrays.y[self.rows]).to(device)
        if not self.streamed:
            x = inputs(arrays)
            self.x = (x if local is None else x[local]).to(device)

    def batch(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        on_device = positions.to(self.device)
        if self.streamed:
            picked = self.arrays.subset(self.rows[positions.cpu().numpy()])
            x = self.inputs(picked).to(self.device)
        else:
            x = self.x[on_device]
        return x, self.y[on_device]
