"""One DP-SGD gradient: per-example gradients, clipped, summed, noised, divided by a constant.

For a Poisson-sampled batch B the released gradient is

    g̃ = ( Σ_{i∈B} clip_C(∇ℓ_i) + N(0, σ²C²·I) ) / (q·N)

Sensitivity (add/remove-one): adding or removing one example changes the clipped sum by one
term of norm ≤ C, so the L2 sensitivity of the sum is C and noise σ·C makes each step the
Gaussian mechanism of multiplier σ on the subsampled batch (``PoissonSampledDpEvent(q,
GaussianDpEvent(σ))``). The noise is added to the *sum*, the quantity it is calibrated to; the
division by the public constant q·N (the expected batch size) is post-processing.

ℓ_i is the loss of example i alone (cross-entropy summed over nothing else), so the clip bounds
the gradient we mean, not a gradient shrunk by averaging over a batch or over classes.

Two engines give the clipped sum: ``"torch.func"`` (``vmap`` of ``grad`` — any model) and
``"layers"`` (``dpal.training.layer_grads`` — Linear/Conv2d models, 1.4–2.1× faster on CPU);
``"auto"`` takes ``"layers"`` where it applies. Both are tested against a per-example loop.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from dpal.privacy.noise_source import TorchNoise, randn
from dpal.training import layer_grads
from dpal.training.distributed import Group

Params = dict[str, torch.Tensor]
ENGINES = ("auto", "layers", "torch.func")


def per_example_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Params:
    """``{name: [b, *param.shape]}``: the gradient of each example's own loss."""
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss_of_one(p: Params, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return F.cross_entropy(logits, yi.unsqueeze(0))

    return vmap(grad(loss_of_one), in_dims=(None, 0, 0))(params, x, y)


def clipped_sum(per_example: Params, max_grad_norm: float) -> tuple[Params, torch.Tensor]:
    """Σ_i min(1, C/‖g_i‖)·g_i per parameter, with ‖g_i‖ over all parameters; and the ‖g_i‖.

    ``max_grad_norm = inf`` disables clipping.
    """
    first = next(iter(per_example.values()))
    norms = torch.zeros(first.shape[0], dtype=first.dtype, device=first.device)
    for g in per_example.values():
        norms += g.flatten(1).pow(2).sum(1)
    norms = norms.sqrt()
    factor = layer_grads.clip_factors(norms, max_grad_norm)
    summed = {k: torch.einsum("b,b...->...", factor, g) for k, g in per_example.items()}
    return summed, norms


# The torch.func engine holds every example's whole gradient at once: a batch of 4,096 for a
# 1 M-parameter tail would need 16 GiB. Batches are cut into chunks of at most this many
# gradient entries (1 GiB in float32), like Opacus's BatchMemoryManager.
MAX_GRADIENT_ENTRIES = 1 << 28


def examples_per_chunk(model: nn.Module) -> int:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return max(1, MAX_GRADIENT_ENTRIES // max(1, trainable))


def clipped_sum_of(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    max_grad_norm: float,
    *,
    engine: str,
    copies: int = 1,
) -> tuple[Params, torch.Tensor]:
    """Clipped sum of per-example gradients and their norms, by the chosen engine.

    With ``copies`` > 1, ``x`` holds that many augmented versions of each example
    (example-major) and an example's gradient is the mean over its copies, clipped as one.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    by_layers = engine != "torch.func" and layer_grads.supports(model)
    if engine == "layers" and not by_layers:  # it would skip the parameters it does not cover
        raise ValueError(
            "engine='layers' covers models whose trainable parameters are all in Linear or Conv2d "
            "layers (and no BatchNorm); this one has others: use engine='auto' or 'torch.func'."
        )
    if by_layers:
        return layer_grads.clipped_sum(model, x, y, max_grad_norm, copies=copies)
    chunk = copies * examples_per_chunk(model)
    if len(x) > chunk:  # exact: each example is clipped alone, so the clipped sums add up
        parts = [
            clipped_sum_of(
                model,
                x[i : i + chunk],
                y[i : i + chunk],
                max_grad_norm,
                engine="torch.func",
                copies=copies,
            )
            for i in range(0, len(x), chunk)
        ]
        summed = {k: torch.stack([p[0][k] for p in parts]).sum(0) for k in parts[0][0]}
        return summed, torch.cat([p[1] for p in parts])
    per_copy = per_example_gradients(model, x, y)
    if copies > 1:
        per_copy = {k: g.reshape(-1, copies, *g.shape[1:]).mean(1) for k, g in per_copy.items()}
    return clipped_sum(per_copy, max_grad_norm)


def add_gaussian_noise(summed: Params, std: float, generator: TorchNoise) -> Params:
    """Each coordinate of each tensor gets its own independent N(0, std²) draw.

    All draws come from one generator *sequentially*, so tensors of equal shape get different
    noise (never one key reused per tensor).
    """
    if std == 0:
        return summed
    return {
        k: s + randn(generator, s.shape, dtype=s.dtype, device=s.device) * std
        for k, s in summed.items()
    }


def private_gradient(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    max_grad_norm: float,
    noise_multiplier: float,
    expected_batch_size: float,
    generator: TorchNoise,
    engine: str = "auto",
    copies: int = 1,
    group: Group | None = None,
) -> Params:
    """The released DP-SGD gradient g̃ of the module docstring for one Poisson batch.

    ``copies``: augmented versions per example in ``x`` (see :func:`clipped_sum_of`).
    ``group``: under torchrun, ``x`` is this rank's part of the batch; the clipped sums of all
    ranks are added up and the noise is added once, by rank 0 (``dpal.training.distributed``).
    """
    if len(x) == 0:  # an empty Poisson batch still releases noise
        summed = {k: torch.zeros_like(p) for k, p in model.named_parameters() if p.requires_grad}
    else:
        summed, _ = clipped_sum_of(model, x, y, max_grad_norm, engine=engine, copies=copies)
    if noise_multiplier > 0 and math.isinf(max_grad_norm):
        raise ValueError("noise needs a finite clip bound: the sensitivity is the clip bound C")
    std = noise_multiplier * max_grad_norm if noise_multiplier > 0 else 0.0
    adds_noise = group is None or group.adds_noise  # under torchrun: rank 0, once
    noisy = add_gaussian_noise(summed, std, generator) if adds_noise else summed
    if group is not None:
        noisy = group.sum(noisy)
    return {k: v / expected_batch_size for k, v in noisy.items()}
