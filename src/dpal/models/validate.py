"""Is a model fit for DP-SGD? In the spirit of Opacus's ``ModuleValidator``.

Per-example clipping bounds each example's influence only if each example's output depends on
that example alone. BatchNorm in training mode normalises with the *batch's* mean and variance:
one example's gradient then depends on every other example in the batch, the clipped norm no
longer bounds its influence, and the accounted ε does not hold. (Its running statistics are
also a noiseless average of private data.) So every BatchNorm is refused, with two fixes:

* :func:`replace_batchnorm` — GroupNorm with the same channels (for training from scratch);
* :func:`freeze_batchnorm` — a fixed affine map (``torchvision.ops.FrozenBatchNorm2d``) holding
  the statistics the network was pretrained with on public data: no batch statistic, no
  running update, each example alone (for fine-tuning a pretrained network).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from dpal.core.errors import DpalError

_BATCHNORM = nn.modules.batchnorm._BatchNorm


def batchnorm_layers(model: nn.Module) -> list[str]:
    return [name or "(the model)" for name, m in model.named_modules() if isinstance(m, _BATCHNORM)]


def validate(model: nn.Module) -> None:
    """Raise a one-line :class:`DpalError` naming what makes ``model`` unfit for DP-SGD."""
    found = batchnorm_layers(model)
    if found:
        shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        raise DpalError(
            f"the model has BatchNorm ({shown}): in training mode it mixes the examples of a "
            "batch and breaks per-example clipping. Replace it with GroupNorm "
            "(dpal.models.validate.replace_batchnorm(model)) or, for a pretrained network, "
            "freeze it into a fixed affine map (dpal.models.validate.freeze_batchnorm(model))."
        )
    if not any(p.requires_grad for p in model.parameters()):
        raise DpalError("the model has no trainable parameter (all have requires_grad=False).")


def _swap(model: nn.Module, convert: Callable[[nn.Module], nn.Module]) -> nn.Module:
    if isinstance(model, _BATCHNORM):
        return convert(model)
    for name, child in model.named_children():
        setattr(model, name, _swap(child, convert))
    return model


def freeze_batchnorm(model: nn.Module) -> nn.Module:
    """Every BatchNorm → ``FrozenBatchNorm2d`` with its running mean/var and affine weights
    (buffers: never trained, never updated). In place; returns ``model``."""

    def convert(bn: Any) -> nn.Module:
        if bn.running_mean is None:
            raise DpalError(f"{bn}: BatchNorm without running statistics cannot be frozen.")
        frozen = FrozenBatchNorm2d(bn.num_features, eps=bn.eps)
        frozen.running_mean.copy_(bn.running_mean)
        frozen.running_var.copy_(bn.running_var)
        if bn.affine:
            frozen.weight.copy_(bn.weight.detach())
            frozen.bias.copy_(bn.bias.detach())
        return frozen

    return _swap(model, convert)


def replace_batchnorm(model: nn.Module, groups: int = 8) -> nn.Module:
    """Every BatchNorm → GroupNorm over the same channels (``groups`` or fewer, dividing them);
    freshly initialised. In place; returns ``model``."""

    def convert(bn: Any) -> nn.Module:
        c = bn.num_features
        g = max(d for d in range(1, min(groups, c) + 1) if c % d == 0)
        return nn.GroupNorm(g, c, eps=bn.eps, affine=bn.affine)

    return _swap(model, convert)
