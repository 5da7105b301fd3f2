"""Exponential moving average of the weights — post-processing of the DP iterates, free."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class Ema:
    """Exponential moving average of the weights — post-processing of the DP iterates, free."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = (
            {k: v.detach().clone() for k, v in model.state_dict().items()} if decay > 0 else None
        )
        self._copy: nn.Module | None = None
        self.updates = 0

    def update(self, model: nn.Module) -> None:
        if self.shadow is None:
            return
        # Warm-up (as TensorFlow's ExponentialMovingAverage with num_updates): early on the
        # average would be dominated by the random initialisation.
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        with torch.no_grad():
            for k, v in model.state_dict().items():
                self.shadow[k].mul_(decay).add_(v, alpha=1 - decay)

    def model_for_release(self, model: nn.Module) -> nn.Module:
        if self.shadow is None:
            return model
        self._copy = copy.deepcopy(model)
        self._copy.load_state_dict(self.shadow)
        return self._copy

    def state(self) -> dict[str, Any] | None:
        return None if self.shadow is None else {"shadow": self.shadow, "updates": self.updates}

    def load(self, state: dict[str, Any] | None) -> None:
        if self.shadow is not None and state is not None:
            self.shadow = {k: v.clone() for k, v in state["shadow"].items()}
            self.updates = int(state["updates"])
