"""What a run trains, what its inputs are, and how a release is rebuilt.

``TrainConfig.model`` names one of four kinds of network:

* a dpal network by name (``cnn-tanh``, ``wrn-16-4``, …; ``models/registry.py``): trained on
  images mapped to [-1, 1] with public constants;
* a pretrained backbone by name (``efficientnet-lite0``, ``resnet18``, …;
  ``models/backbones.py``) with a new linear head, in one of three fine-tuning modes
  (``config.finetune``): ``linear-probe`` trains the head on the frozen backbone's pooled
  features, ``last-blocks`` the tail and head on the frozen stem's output (its depthwise
  convolutions, 1% of EfficientNet-Lite0's tail, stay frozen: every other layer is a Linear or
  plain convolution, so the per-layer engine applies — 6.5× faster than ``torch.func`` on 2 CPU
  cores, 2.3 against 15 ms per example), ``full`` everything
  on the images (resized to ``image_size``, ImageNet-normalised). The two frozen modes read their
  inputs from the feature cache (``models/features.py``): a fixed function of the images, so
  the DP-SGD mechanism and its accounting are those of training on the images;
* your own network, by import path ``package.module:factory`` with ``config.model_args``
  (keyword arguments; ``num_classes`` and ``image_shape`` are passed too when the factory takes
  them): recorded in every checkpoint, so the release can be rebuilt;
* an ``nn.Module`` instance given to ``train(..., model=...)``: trained as it is; its release
  loads back into the same architecture (``load_released(path, model=...)``).

Every network is checked by ``models.validate.validate`` (no BatchNorm) before it trains.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from dpal.core.errors import DpalError
from dpal.data.arrays import PIXEL_CENTER, PIXEL_SCALE, ImageArrays
from dpal.data.random_process import sample
from dpal.models.backbones import Backbone, is_backbone, load_backbone, to_backbone_input
from dpal.models.features import cached_features
from dpal.models.groupnorm import FeatureStandardization
from dpal.models.registry import MODELS, build_model
from dpal.models.standardize import N_IMAGES
from dpal.models.validate import validate

FINETUNE_MODES = ("linear-probe", "last-blocks", "full")
INSTANCE = "instance:"  # config.model of a run given an nn.Module instance


def instance_name(model: nn.Module) -> str:
    return f"{INSTANCE}{type(model).__module__}:{type(model).__qualname__}"


class BackboneInput(nn.Module):
    """dpal's image tensors (``ImageArrays.tensors()``: [-1, 1], any size, 1 or 3 channels) →
    the backbone's input: 3 channels, ``size`` px, ImageNet normalisation. The first layer of a
    released backbone classifier, so it takes the same input as every other dpal model and
    ``eval``, ``select`` and ``improve`` work on it unchanged."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return to_backbone_input(x * PIXEL_SCALE + PIXEL_CENTER, self.size)


@dataclass
class Network:
    """``trainable`` is what DP-SGD trains and what a checkpoint releases; ``inputs`` turns a
    set of images into its inputs (cached features for the frozen modes); ``spec`` says how to
    rebuild it (stored in every checkpoint summary)."""

    trainable: nn.Module
    inputs: Callable[[ImageArrays], torch.Tensor]
    spec: dict[str, Any]
    backbone: Backbone | None = None


def finetune_mode(config: Any) -> str:
    mode = config.finetune or ("linear-probe" if is_backbone(config.model) else "full")
    if mode not in FINETUNE_MODES:
        raise DpalError(f"--finetune must be one of {', '.join(FINETUNE_MODES)}, got {mode!r}.")
    if mode != "full" and not is_backbone(config.model):
        raise DpalError(
            f"--finetune {mode} needs a pretrained backbone (--model efficientnet-lite0, …); "
            f"{config.model!r} trains in full."
        )
    return mode


def image_inputs(arrays: ImageArrays) -> torch.Tensor:
    """A set of images as a network takes them (``ImageArrays.tensors``: [-1, 1])."""
    return arrays.tensors()[0]


def import_factory(path: str) -> Callable[..., nn.Module]:
    module, _, name = path.partition(":")
    try:
        factory = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise DpalError(
            f"--model {path}: cannot import {name!r} from {module!r} ({err}); give "
            "package.module:factory, importable where dpal runs."
        ) from None
    if not callable(factory):
        raise DpalError(f"--model {path} is not callable.")
    return factory


def _from_factory(path: str, kwargs: dict[str, Any], shape: tuple[int, ...], k: int) -> nn.Module:
    factory = import_factory(path)
    params = inspect.signature(factory).parameters
    extra = {"num_classes": k, "image_shape": tuple(shape)}
    args = {**{n: v for n, v in extra.items() if n in params and n not in kwargs}, **kwargs}
    model = factory(**args)
    if not isinstance(model, nn.Module):
        raise DpalError(f"--model {path} returned {type(model).__name__}, not an nn.Module.")
    return model


def fit_standardization(
    module: FeatureStandardization,
    backbone: Backbone,
    image_shape: tuple[int, int, int],
    *,
    seed: int,
    cache_dir: str | None,
    device: str,
) -> None:
    """The pooled features' mean and spread over random-process images (``models/standardize``:
    no private data read), at the task's image size, resized as the task's images are."""
    c, h, _ = image_shape
    images = sample("mixture", N_IMAGES, size=h, channels=c, seed=seed)
    arrays = ImageArrays.create(images, np.zeros(len(images), np.int64), num_classes=1,
                                name=f"random-process-{seed}")  # fmt: skip
    feats = cached_features(backbone, arrays, cache_dir=cache_dir, device=device)["pooled"]
    module.shift.copy_(feats.mean(0))
    module.scale.copy_(feats.std(0).clamp_min(1e-3))


def backbone_network(
    config: Any, image_shape: tuple[int, int, int], num_classes: int, *, progress: bool,
    device: str, fit_statistics: bool = True
) -> Network:  # fmt: skip
    mode = finetune_mode(config)
    if mode != "full" and config.augment != "none":
        raise DpalError(
            f"--finetune {mode} trains on features computed once per image; augmentation needs "
            "--finetune full (or --augment none)."
        )
    backbone = load_backbone(
        config.model, image_size=config.image_size, tail_blocks=config.tail_blocks
    )
    linear = nn.Linear(backbone.feature_dim, num_classes)
    nn.init.zeros_(linear.weight)  # a zero head: the usual start of a (DP) linear probe
    nn.init.zeros_(linear.bias)
    head: nn.Module = linear
    if config.standardize_features:  # free: statistics of random-process images only
        standardize = FeatureStandardization(backbone.feature_dim)
        if fit_statistics:  # else they come with the weights (a resume, a release)
            fit_standardization(standardize, backbone, image_shape, seed=config.seed,
                                cache_dir=config.feature_cache, device=device)  # fmt: skip
        head = nn.Sequential(standardize, linear)
    spec = {"kind": "backbone", "backbone": backbone.name, "finetune": mode,
            "image_size": backbone.image_size, "tail_blocks": config.tail_blocks,
            "weights": backbone.weights_id, "num_classes": num_classes}  # fmt: skip

    def features(part: str) -> Callable[[ImageArrays], torch.Tensor]:
        def inputs(arrays: ImageArrays) -> torch.Tensor:
            found = cached_features(backbone, arrays, parts=(part,), cache_dir=config.feature_cache,
                                    device=device, progress=progress)  # fmt: skip
            return found[part]

        return inputs

    if mode == "linear-probe":
        return Network(head, features("pooled"), spec, backbone)
    if mode == "last-blocks":
        backbone.tail.requires_grad_(True)
        for m in backbone.tail.modules():  # depthwise convolutions stay frozen (see below)
            if isinstance(m, nn.Conv2d) and m.groups > 1:
                m.requires_grad_(False)
        return Network(nn.Sequential(backbone.tail, head), features("stem"), spec, backbone)
    backbone.stem.requires_grad_(True)
    backbone.tail.requires_grad_(True)
    trainable = nn.Sequential(
        BackboneInput(backbone.image_size), backbone.stem, backbone.tail, head
    )
    return Network(trainable, image_inputs, spec, backbone)


def network_for(
    config: Any,
    image_shape: tuple[int, int, int],
    num_classes: int,
    *,
    model: nn.Module | None = None,
    progress: bool = False,
    device: str = "cpu",
    fit_statistics: bool = True,
) -> Network:
    """The network ``config`` names (or ``model``, a user's instance), validated.
    ``fit_statistics=False``: weights (and buffers) will be loaded, so none are computed."""
    if model is not None:
        net = Network(model, image_inputs, {"kind": "instance", "class": instance_name(model)})
    elif config.model.startswith(INSTANCE):
        raise DpalError(
            f"this run trained your own nn.Module ({config.model[len(INSTANCE) :]}); pass the "
            "same architecture as model= to resume it or to load its release."
        )
    elif is_backbone(config.model):
        net = backbone_network(config, image_shape, num_classes, progress=progress,
                               device=device, fit_statistics=fit_statistics)  # fmt: skip
    elif config.model in MODELS:
        finetune_mode(config)  # refuses a frozen mode for a network without a backbone
        net = Network(build_model(config.model, image_shape, num_classes), image_inputs,
                      {"kind": "registry", "name": config.model})  # fmt: skip
    elif ":" in config.model:
        finetune_mode(config)
        built = _from_factory(config.model, dict(config.model_args or {}), image_shape, num_classes)
        net = Network(built, image_inputs, {"kind": "factory", "factory": config.model,
                                       "args": dict(config.model_args or {})})  # fmt: skip
    else:
        raise DpalError(
            f"unknown model {config.model!r}; choose one of {', '.join(MODELS)}, a pretrained "
            "backbone (efficientnet-lite0, resnet18, resnet50, vit_b_16), or your own as "
            "package.module:factory."
        )
    validate(net.trainable)
    return net


def released_classifier(net: Network) -> nn.Module:
    """The whole image classifier around a trained ``net``: for a backbone in a frozen mode,
    input → stem → tail → head (taking uint8 images); else the trainable itself."""
    if net.backbone is None or net.spec["finetune"] == "full":
        return net.trainable
    b = net.backbone
    head = (
        net.trainable
        if net.spec["finetune"] == "linear-probe"
        else net.trainable.get_submodule("1")
    )
    return nn.Sequential(BackboneInput(b.image_size), b.stem, b.tail, head).eval()


def trains_on_features(net: Network) -> bool:
    """Whether ``net`` trains on cached backbone features (a frozen mode) rather than images."""
    return net.spec.get("finetune") in ("linear-probe", "last-blocks")


def rebuild_network(
    summary: dict[str, Any], weights: dict[str, Any], *, model: nn.Module | None = None
) -> Network:
    """The network of a checkpoint (``summary`` and released ``weights``) as it was trained —
    its trainable part with the weights loaded, in eval mode, and its inputs (cached features
    for a frozen backbone): what selection and fine-tuning of a release work on. The network
    its summary records (checkpoints before 2026-12-02 record only a registry name, in their
    config)."""
    from dpal.training.config import TrainConfig

    config = TrainConfig.from_dict(summary["config"])
    shape, k = tuple(summary["image_shape"]), summary["num_classes"]
    net = network_for(config, shape, k, model=model, fit_statistics=False)
    net.trainable.load_state_dict(weights)
    net.trainable.eval()
    return net


def rebuild_release(
    summary: dict[str, Any], weights: dict[str, Any], *, model: nn.Module | None = None
) -> nn.Module:
    """The released image classifier of a checkpoint, in eval mode (:func:`rebuild_network`
    wrapped by :func:`released_classifier`)."""
    return released_classifier(rebuild_network(summary, weights, model=model)).eval()
