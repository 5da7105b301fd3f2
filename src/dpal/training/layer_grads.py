"""Clipped sum of per-example gradients from layer inputs and output gradients (no vmap).

Why this exists beside ``torch.func``: on the small CNNs of this project, on CPU, ``vmap(grad)``
runs DP-SGD at 0.36–0.55× the speed of plain PyTorch training, this engine at 0.71–0.84×
(MNIST CNN and ``cnn-gn``, batch 256 and 1,024: ``benchmarks/dpsgd_throughput.py``): ``vmap``
recomputes the backward pass per example, while
the gradient of a ``Linear`` or ``Conv2d`` weight for example i only needs two tensors that one
ordinary batched forward and backward already hold: the layer's input and the gradient of the
summed per-example loss with respect to the layer's output (example i's loss depends only on
example i's outputs, so that gradient is exactly example i's).

Per layer, the cheaper of two ways (a cost rule, validated by ``benchmarks/dpsgd_throughput.py``):

* ghost norm, when T² < o·k for a layer applied at T positions with o outputs and k inputs per
  position (``A_i`` ``[T, k]``, ``D_i`` ``[T, o]``; ∇W_i = D_iᵀ A_i): ‖∇W_i‖² = ⟨D_i D_iᵀ,
  A_i A_iᵀ⟩ (T×T Gram matrices — Goodfellow 2015; mixed ghost clipping, Bu et al. 2022) and
  Σ_i f_i ∇W_i = (f⊙D)ᵀ A as one product over all (i, position), so ∇W_i is never formed.
  A ``Linear`` applied once per example is the case T = 1: ‖∇W_i‖ = ‖d_i‖‖a_i‖;
* otherwise ∇W_i is formed: for a ``Linear`` with one batched product, for a ``Conv2d`` without
  an unfolded patch copy where that is faster (:mod:`dpal.training.conv_grads`).

Augmented copies of an example are folded into T (ghost) or summed (formed). Only ``Linear``
and ``Conv2d`` (zero padding given as numbers) parameters are handled; a model with any other
trainable parameter, or a layer that mixes examples (BatchNorm), must use the ``torch.func``
path (``dpal.training.dpsgd``). ``supports(model)`` tells which.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dpal.training import conv_grads

Params = dict[str, torch.Tensor]
_BATCH_MIXING = (nn.modules.batchnorm._BatchNorm,)


def clip_factors(norms: torch.Tensor, max_grad_norm: float) -> torch.Tensor:
    """min(1, C/‖g_i‖) for each example (all ones when C is infinite: no clipping).

    Shared by both engines (``dpsgd.clipped_sum`` too), so they clip identically.
    """
    if math.isinf(max_grad_norm):
        return torch.ones_like(norms)
    return (max_grad_norm / (norms + 1e-12)).clamp(max=1.0)


def supports(model: nn.Module) -> bool:
    """True when every trainable parameter belongs to a Linear or Conv2d layer with zero
    padding given as numbers, whose ``forward`` is PyTorch's own.

    Why the ``forward`` check: the engine reads a layer's input from a forward hook, which sees
    what the *module* receives. A subclass that transforms it before the product — the "same"
    padding convolutions of EfficientNet ports and timm (``F.pad`` or a padding child inside
    ``forward``, ``padding=0`` on the module) — multiplies a different tensor, so the hooked
    input is not the layer's; such models take the ``torch.func`` engine, which handles any
    module."""
    covered: set[int] = set()
    for m in model.modules():
        if isinstance(m, _BATCH_MIXING):
            return False
        if (isinstance(m, nn.Linear) and type(m).forward is nn.Linear.forward) or (
            isinstance(m, nn.Conv2d)
            and type(m).forward is nn.Conv2d.forward
            and m.padding_mode == "zeros"
            and not isinstance(m.padding, str)
        ):
            covered.update(id(p) for p in m.parameters(recurse=False))
    return all(id(p) in covered for p in model.parameters() if p.requires_grad)


def _positions(a: torch.Tensor, d: torch.Tensor, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A ``[b, T, k]``, D ``[b, T, o]``) of a ``Linear``, copies of an example folded into T."""
    return a.reshape(b, -1, a.shape[-1]), d.reshape(b, -1, d.shape[-1])


def _uses_ghost_norm(m: nn.Linear | nn.Conv2d, a: torch.Tensor, d: torch.Tensor, b: int) -> bool:
    """The cost rule of the module docstring: T² < o·k (T with the copies folded in); for a
    convolution, :func:`conv_grads.uses_ghost_norm`."""
    if isinstance(m, nn.Conv2d):
        return conv_grads.uses_ghost_norm(m, a, d, b)
    o, k = m.weight.shape[0], m.weight[0].numel()
    t = d.numel() // (b * o)
    return t == 1 or t * t < o * k


def _weight_per_example(
    m: nn.Linear | nn.Conv2d, a: torch.Tensor, d: torch.Tensor, b: int
) -> torch.Tensor:
    """``[b, *weight.shape]``: ∇W_i, summed over example i's copies (module docstring)."""
    if isinstance(m, nn.Conv2d):
        return conv_grads.weight_per_example(m, a, d, b)
    A, D = _positions(a, d, b)
    return torch.bmm(D.transpose(1, 2), A).reshape(b, *m.weight.shape)


def _bias_per_example(m: nn.Linear | nn.Conv2d, d: torch.Tensor, b: int) -> torch.Tensor:
    """``[b, o]``: the bias gradient of each example, summed over positions and copies."""
    o = m.weight.shape[0]
    if isinstance(m, nn.Conv2d):
        return d.reshape(b, -1, o, d[0, 0].numel()).sum((1, 3))
    return d.reshape(b, -1, o).sum(1)


def _forward_backward(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, copies: int
) -> tuple[list[tuple[str, nn.Linear | nn.Conv2d]], dict[str, torch.Tensor],
           dict[str, torch.Tensor], torch.Tensor]:  # fmt: skip
    """One batched forward and backward: each trainable layer's input and the gradient of the
    summed per-example loss with respect to its output (module docstring), and the logits."""
    layers: list[tuple[str, nn.Linear | nn.Conv2d]] = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear | nn.Conv2d) and any(p.requires_grad for p in m.parameters())
    ]
    inputs: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    for name, m in layers:

        def hook(_m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor, name=name):
            inputs[name] = inp[0].detach()
            outputs[name] = out

        handles.append(m.register_forward_hook(hook))
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
    # Σ_i (1/copies) Σ_copies ℓ: the gradient w.r.t. each output row is that copy's own.
    loss = F.cross_entropy(logits, y, reduction="sum") / copies
    names = [n for n, _ in layers]
    deltas = dict(zip(names, torch.autograd.grad(loss, [outputs[n] for n in names]), strict=True))

    return layers, inputs, deltas, logits


def per_example(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Params:
    """``{name: [b, *param.shape]}``: every example's own gradient, formed from one batched
    forward and backward — equal to ``dpsgd.per_example_gradients`` (tested) and, for a linear
    head, 8× faster than its ``vmap`` on 2 CPU cores (4,096 examples of 1,280 features: 0.05
    against 0.4 s). For AdaMix, which projects the whole gradients."""
    layers, inputs, deltas, _ = _forward_backward(model, x, y, 1)
    out: Params = {}
    for name, m in layers:
        prefix = f"{name}." if name else ""
        if m.weight.requires_grad:
            out[f"{prefix}weight"] = _weight_per_example(m, inputs[name], deltas[name], len(x))
        if m.bias is not None and m.bias.requires_grad:
            out[f"{prefix}bias"] = _bias_per_example(m, deltas[name], len(x))
    return out


def projected(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, basis: torch.Tensor, *, copies: int = 1
) -> torch.Tensor:
    """``[b, k]``: Uᵀg_i for every example, with ``basis`` U ``[d, k]`` over the parameters in
    :func:`per_example`'s order and g_i as in :func:`clipped_sum` (the mean over example i's
    copies). Where a layer is applied once per example (a ``Linear`` on features), g_i is never
    formed: (Uᵀg_i) = Σ_{o,j} U[(o,j)] D_io A_ij is one product of A with U, then a sum over the
    outputs — for AdaMix's projection of a linear head, 4,096 × 12,810 gradient entries not
    written per step. Equal to projecting :func:`per_example` (tested)."""
    layers, inputs, deltas, _ = _forward_backward(model, x, y, copies)
    b, k = len(x) // copies, basis.shape[1]
    out = torch.zeros(b, k, dtype=basis.dtype, device=basis.device)
    row = 0
    for name, m in layers:
        o, kin = m.weight.shape[0], m.weight[0].numel()
        if m.weight.requires_grad:
            u = basis[row : row + o * kin].reshape(o, kin, k)
            row += o * kin
            if isinstance(m, nn.Linear) and inputs[name].numel() == b * kin:  # once per example
                A, D = _positions(inputs[name], deltas[name], b)
                au = (A[:, 0] @ u.permute(1, 0, 2).reshape(kin, o * k)).reshape(b, o, k)
                out += (D[:, 0, :, None] * au).sum(1)
            else:
                gw = _weight_per_example(m, inputs[name], deltas[name], b)
                out += gw.flatten(1) @ u.reshape(o * kin, k)
        if m.bias is not None and m.bias.requires_grad:
            out += _bias_per_example(m, deltas[name], b) @ basis[row : row + o]
            row += o
    if row != basis.shape[0]:
        raise ValueError(f"basis has {basis.shape[0]} rows for {row} trainable parameters")
    return out


def clipped_sum(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, max_grad_norm: float, *, copies: int = 1
) -> tuple[Params, torch.Tensor]:
    """Σ_i min(1, C/‖g_i‖)·g_i for each parameter, and the per-example norms ‖g_i‖ ``[b]``.

    ``x`` holds ``copies`` augmented versions of each of b examples, example-major
    (``[b·copies, ...]``, ``y`` likewise); g_i is the gradient of the mean loss over example
    i's copies. Equal (to float rounding) to ``dpsgd.clipped_sum`` of ``torch.func`` per-example
    gradients, and to a per-example loop; tested so.
    """
    layers, inputs, deltas, logits = _forward_backward(model, x, y, copies)
    b = len(x) // copies
    sq_norms = torch.zeros(b, dtype=logits.dtype, device=logits.device)
    kept: dict[str, tuple[bool, torch.Tensor, torch.Tensor]] = {}
    for name, m in layers:
        a, d = inputs[name], deltas[name]
        if m.weight.requires_grad and isinstance(m, nn.Conv2d) and _uses_ghost_norm(m, a, d, b):
            D = d.reshape(b, -1, d.shape[1], d[0, 0].numel()).transpose(2, 3).flatten(1, 2)
            aa = conv_grads.patch_gram(m, a, b)
            sq_norms += (torch.bmm(D, D.transpose(1, 2)) * aa).sum((1, 2))
            kept[name] = (True, a, d)  # the sum: the conv's weight-gradient kernel, reweighted
        elif m.weight.requires_grad and _uses_ghost_norm(m, a, d, b):
            A, D = _positions(a, d, b)
            if A.shape[1] == 1:  # ‖d aᵀ‖ = ‖d‖‖a‖
                sq_norms += D[:, 0].square().sum(1) * A[:, 0].square().sum(1)
            else:
                dd, aa = torch.bmm(D, D.transpose(1, 2)), torch.bmm(A, A.transpose(1, 2))
                sq_norms += (dd * aa).sum((1, 2))
            kept[name] = (True, A, D)
        elif m.weight.requires_grad:
            gw = _weight_per_example(m, a, d, b)  # ∇W_i formed
            sq_norms += torch.linalg.vector_norm(gw.flatten(1), dim=1).square()
            kept[name] = (False, gw, d)
        if m.bias is not None and m.bias.requires_grad:
            sq_norms += _bias_per_example(m, d, b).square().sum(1)

    norms = sq_norms.sqrt()
    factor = clip_factors(norms, max_grad_norm)

    summed: Params = {}
    for name, m in layers:
        prefix = f"{name}." if name else ""  # "" when the model is the layer itself
        if m.weight.requires_grad:
            ghost, first, D = kept[name]
            if ghost and isinstance(m, nn.Conv2d):
                weight_grad = conv_grads.clipped_weight_sum(m, first, D, factor)
            elif ghost:  # Σ_i f_i D_iᵀ A_i as one product over every (i, position)
                fD = (D * factor[:, None, None]).reshape(-1, D.shape[2])
                weight_grad = fD.t() @ first.reshape(-1, first.shape[2])
            else:
                weight_grad = factor @ first.flatten(1)
            summed[f"{prefix}weight"] = weight_grad.reshape(m.weight.shape)
        if m.bias is not None and m.bias.requires_grad:
            summed[f"{prefix}bias"] = factor @ _bias_per_example(m, deltas[name], b)
    return summed, norms
