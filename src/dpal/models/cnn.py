"""The small CNN of the TensorFlow Privacy MNIST tutorial (used by Zhao et al. 2019).

Conv 16 8×8 stride 2 'same' → MaxPool 2 stride 1 → Conv 32 4×4 stride 2 'valid' → MaxPool 2
stride 1 → Dense 32 → Dense 10. On 1×28×28 inputs it has 26,010 parameters; the same layers on
3×32×32 inputs (SVHN, CIFAR-10) have a wider first dense layer. No normalisation layers: batch
statistics would mix examples and break per-example clipping.
"""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding (left, right) for one spatial axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class TFPrivacyCNN(nn.Module):
    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int = 10,
        activation: str = "tanh",
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        c, h, w = image_shape
        act = ACTIVATIONS[activation]
        pad_h, pad_w = _same_padding(h, 8, 2), _same_padding(w, 8, 2)
        self.features = nn.Sequential(
            nn.ZeroPad2d((pad_w[0], pad_w[1], pad_h[0], pad_h[1])),
            nn.Conv2d(c, 16, 8, stride=2),
            act(),
            nn.MaxPool2d(2, stride=1),
            nn.Conv2d(16, 32, 4, stride=2),
            act(),
            nn.MaxPool2d(2, stride=1),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, c, h, w)).shape[1]
        self.hidden = nn.Sequential(nn.Linear(flat, 32), act())
        self.classifier = nn.Linear(32, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``[n, 32]`` activations before the logits."""
        return self.hidden(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))
