"""Clipped sum of per-example gradients from layer inputs and output gradients (no vmap).

Why this exists beside ``torch.func``: on the small CNNs of this project, on CPU, ``vmap(grad)``
runs DP-SGD at about 0.4× the speed of plain PyTorch training (``benchmarks/
dpsgd_throughput.py``), because it recomputes the whole backward pass per example. The gradient
of a ``Linear`` or ``Conv2d`` weight for example i is an outer product of two tensors that one
ordinary batched forward and backward already hold: the layer's input ``a_i`` and the gradient
``δ_i`` of the summed per-example loss with respect to the layer's output (example i's loss
depends only on example i's outputs, so that gradient is exactly example i's). So:

* ``Linear``: ∇W_i = δ_i a_iᵀ, ∇b_i = δ_i, hence ‖∇W_i‖² = ‖δ_i‖²‖a_i‖² without forming ∇W_i
  ("ghost norm", Goodfellow 2015), and Σ_i f_i ∇W_i = (f⊙δ)ᵀ a is one matrix product.
* ``Conv2d``: with ``U_i = unfold(a_i)`` ([c·k·k, T]), ∇W_i = δ_i U_iᵀ ([c_out, c·k·k]). When
  T² < c_out·c·k·k the norm is taken as ‖∇W_i‖² = ⟨δ_iᵀδ_i, U_iᵀU_i⟩ (T×T Gram matrices, "mixed
  ghost clipping", Bu et al. 2022) and the clipped sum as one product over all (i, position);
  otherwise ∇W_i is formed with one batched product.

Only ``Linear`` and ``Conv2d`` (groups=1, zero padding) parameters are handled; a model with any
other trainable parameter, or a layer that mixes examples (BatchNorm), must use the ``torch.func``
path (``dpal.training.dpsgd``). ``supports(model)`` tells which.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

Params = dict[str, torch.Tensor]
_BATCH_MIXING = (nn.modules.batchnorm._BatchNorm,)


def supports(model: nn.Module) -> bool:
    """True when every trainable parameter belongs to a Linear or plain Conv2d layer."""
    covered: set[int] = set()
    for m in model.modules():
        if isinstance(m, _BATCH_MIXING):
            return False
        if isinstance(m, nn.Linear) or (
            isinstance(m, nn.Conv2d)
            and m.groups == 1
            and m.padding_mode == "zeros"
            and not isinstance(m.padding, str)
        ):
            covered.update(id(p) for p in m.parameters(recurse=False))
    return all(id(p) in covered for p in model.parameters() if p.requires_grad)


def _row_sq_norms(t: torch.Tensor) -> torch.Tensor:
    """‖t_i‖² of each row of a 2-D tensor."""
    return t.square().sum(1)


def _patches(a: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``[b, T, c·kh·kw]`` input patches of ``conv`` (what ``F.unfold`` gives, transposed).

    Built from strided views, which on CPU is 2–4× faster than ``F.unfold`` here.
    """
    padding = conv.padding
    assert not isinstance(padding, str)  # supports() excludes 'same'/'valid' strings
    ph, pw = padding
    if ph or pw:
        a = F.pad(a, (pw, pw, ph, ph))
    (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
    if dh != 1 or dw != 1:  # rare here: fall back to unfold
        u = F.unfold(a, (kh, kw), dilation=(dh, dw), stride=(sh, sw))
        return u.transpose(1, 2)
    b, c = a.shape[:2]
    v = a.unfold(2, kh, sh).unfold(3, kw, sw)  # [b, c, oh, ow, kh, kw]
    return v.permute(0, 2, 3, 1, 4, 5).reshape(b, v.shape[2] * v.shape[3], c * kh * kw)


def clipped_sum(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, max_grad_norm: float
) -> tuple[Params, torch.Tensor]:
    """Σ_i min(1, C/‖g_i‖)·g_i for each parameter, and the per-example norms ‖g_i‖ ``[b]``.

    Equal (up to float rounding) to ``dpsgd.clipped_sum(per_example_gradients(...))``; tested so.
    """
    layers = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear | nn.Conv2d) and any(p.requires_grad for p in m.parameters())
    ]
    inputs: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    for name, m in layers:

        def hook(
            _m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor, name: str = name
        ) -> None:
            inputs[name] = inp[0].detach()
            outputs[name] = out

        handles.append(m.register_forward_hook(hook))
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
    loss = F.cross_entropy(logits, y, reduction="sum")  # Σ_i ℓ_i: ∂/∂out_i is example i's own
    names = [n for n, _ in layers]
    deltas = dict(zip(names, torch.autograd.grad(loss, [outputs[n] for n in names]), strict=True))

    b = len(x)
    sq_norms = torch.zeros(b, dtype=logits.dtype, device=logits.device)
    per_layer: dict[str, tuple[str, torch.Tensor, torch.Tensor]] = {}
    for name, m in layers:
        a, d = inputs[name], deltas[name]
        if isinstance(m, nn.Linear):
            a2, d2 = a.reshape(b, -1, a.shape[-1]), d.reshape(b, -1, d.shape[-1])
            if a2.shape[1] == 1:  # one position per example: ghost norm, nothing materialised
                a2, d2 = a2[:, 0], d2[:, 0]
                sq_norms += _row_sq_norms(d2) * _row_sq_norms(a2)
                per_layer[name] = ("linear", a2, d2)
            else:  # a sequence per example: form ∇W_i
                gw = torch.einsum("bto,bti->boi", d2, a2)
                sq_norms += gw.flatten(1).pow(2).sum(1)
                per_layer[name] = ("dense", gw, d2.sum(1))
        else:
            d2 = d.flatten(2)  # [b, c_out, T]
            u = _patches(a, m)  # [b, T, c_in·k·k]
            t, k = u.shape[1], u.shape[2]
            if t * t < d2.shape[1] * k:  # ghost norm is cheaper than forming ∇W_i
                dd = torch.bmm(d2.transpose(1, 2), d2)  # [b, T, T]
                uu = torch.bmm(u, u.transpose(1, 2))  # [b, T, T]
                sq_norms += (dd * uu).flatten(1).sum(1)
                per_layer[name] = ("conv-ghost", u, d2)
            else:
                gw = torch.bmm(d2, u)  # [b, c_out, c_in·k·k]
                sq_norms += _row_sq_norms(gw.flatten(1))
                per_layer[name] = ("dense", gw, d2.sum(2))
        if m.bias is not None and m.bias.requires_grad:
            kind = per_layer[name][0]
            bias_grad = {"dense": per_layer[name][2], "linear": d2}.get(kind)
            if bias_grad is None:  # conv-ghost: the bias gradient is Σ_t δ_t
                bias_grad = d2.sum(2)
            sq_norms += _row_sq_norms(bias_grad)

    norms = sq_norms.sqrt()
    if math.isinf(max_grad_norm):
        factor = torch.ones_like(norms)
    else:
        factor = (max_grad_norm / (norms + 1e-12)).clamp(max=1.0)

    summed: Params = {}
    for name, m in layers:
        kind, first, second = per_layer[name]
        if kind == "linear":
            fd = second * factor[:, None]  # [b, out]
            weight_grad, bias_grad = fd.t() @ first, fd.sum(0)
        elif kind == "conv-ghost":  # Σ_i f_i δ_i U_iᵀ as one product over all (i, position)
            fd = second * factor[:, None, None]  # [b, c_out, T]
            c_out = fd.shape[1]
            weight_grad = fd.transpose(0, 1).reshape(c_out, -1) @ first.reshape(-1, first.shape[2])
            weight_grad = weight_grad.reshape(m.weight.shape)
            bias_grad = fd.sum((0, 2))
        else:
            weight_grad = (factor @ first.flatten(1)).reshape(m.weight.shape)
            bias_grad = factor @ second
        if m.weight.requires_grad:
            summed[f"{name}.weight"] = weight_grad
        if m.bias is not None and m.bias.requires_grad:
            summed[f"{name}.bias"] = bias_grad
    return summed, norms
