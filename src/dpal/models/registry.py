"""Models by name, so a checkpoint can record how to rebuild its network."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from dpal.core.errors import DpalError
from dpal.models.cnn import TFPrivacyCNN
from dpal.models.groupnorm import SmallGNCNN, WideResNet

MODELS: dict[str, Callable[[tuple[int, int, int], int], nn.Module]] = {
    "cnn-tanh": lambda shape, k: TFPrivacyCNN(shape, k, activation="tanh"),
    "cnn-relu": lambda shape, k: TFPrivacyCNN(shape, k, activation="relu"),
    "cnn-gn": lambda shape, k: SmallGNCNN(shape, k),
    "wrn-16-4": lambda shape, k: WideResNet(shape, k, depth=16, widen=4),
}


def build_model(name: str, image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    if name not in MODELS:
        raise DpalError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}.")
    return MODELS[name](image_shape, num_classes)
