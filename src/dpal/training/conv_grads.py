"""Per-example pieces of a ``Conv2d``'s weight gradient, for :mod:`dpal.training.layer_grads`.

A convolution applied at T positions to example i has input patches ``A_i`` ``[T, k]`` and
output gradients ``D_i`` ``[T, o]``; ∇W_i = D_iᵀ A_i. Materialising ``A_i`` (the unfolded
patches) is what made the previous engine slow: the patch copy was 55% of the DP step on
``cnn-gn``. So each piece here reads the layer input as it is, unless measured faster otherwise:

* :func:`weight_per_example` forms ∇W_i by the convolution's own weight-gradient kernel run
  once with the batch folded into the groups (Rochette et al. 2019) — 13× faster than the patch
  copy and ``bmm`` on ``cnn-gn``'s 16→16 convolution at 32 px (16 against 214 ms, 256
  examples) — except on an image's first layer or a layer with few positions, where unfolded
  patches (channels innermost) and one ``bmm`` are 1.4–1.7× faster than that kernel;
* :func:`patch_gram` gives A_i A_iᵀ for the ghost norm (‖∇W_i‖² = ⟨D_i D_iᵀ, A_i A_iᵀ⟩) from the
  Gram matrix of the input's pixels, with no patch copied.

Only zero padding given as numbers is handled (``layer_grads.supports`` checks it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.grad import conv2d_weight


def _numeric_padding(m: nn.Conv2d) -> tuple[int, int]:
    padding = m.padding
    assert not isinstance(padding, str), "layer_grads.supports refuses string padding"
    return padding[0], padding[1]


def patch_gram(m: nn.Conv2d, a: torch.Tensor, b: int) -> torch.Tensor:
    """``[b, T, T]``: A_i A_iᵀ of a convolution's input patches (copies folded into T).

    A patch is the input at a kernel offset from its position, so ⟨A_t, A_t'⟩ is a sum over the
    kh·kw offsets of inner products of input pixels: the Gram matrix of the padded input's
    pixels (P×P, P = H·W) read at kh·kw shifted, strided windows — no patch is ever copied (on
    ``cnn-gn``'s 8 px convolutions the copy took 48 of 70 ms). Equal to ``bmm(A, Aᵀ)``
    (tested)."""
    (ph, pw), (kh, kw) = _numeric_padding(m), m.kernel_size
    (sh, sw), (dh, dw) = m.stride, m.dilation
    c, h, w = a.shape[1], a.shape[2] + 2 * ph, a.shape[3] + 2 * pw
    copies = len(a) // b
    oh, ow = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
    a = F.pad(a, (pw, pw, ph, ph)) if ph or pw else a
    pixels = a.reshape(b, copies, c, h * w).transpose(1, 2).reshape(b, c, copies * h * w)
    g = torch.bmm(pixels.transpose(1, 2), pixels).view(b, copies, h, w, copies, h, w)
    total = torch.zeros(b, copies, oh, ow, copies, oh, ow, dtype=a.dtype, device=a.device)
    for i in range(kh):
        rows = slice(i * dh, i * dh + sh * (oh - 1) + 1, sh)
        for j in range(kw):
            cols = slice(j * dw, j * dw + sw * (ow - 1) + 1, sw)
            total += g[:, :, rows, cols, :, rows, cols]
    t = copies * oh * ow
    return total.view(b, t, t)


def uses_ghost_norm(m: nn.Conv2d, a: torch.Tensor, d: torch.Tensor, b: int) -> bool:
    """T² < o·k (T with the copies folded in), and P ≤ T·√(kh·kw) (P padded input pixels),
    where the Gram of the pixels (:func:`patch_gram`) costs no more than the T×T Gram of the
    patches — when it does not (the MNIST CNN's stride-2 4×4 convolution), forming ∇W_i is the
    faster way (2.5× there). A 1×1 convolution of stride 1 is the equal case (P = T): its pixel
    Gram *is* the patch Gram, and forming its ∇W_i (o·k per example: 409,600 for
    EfficientNet-Lite0's 320 → 1,280 head convolution) made a last-blocks step 4× slower."""
    o, k = m.weight.shape[0], m.weight[0].numel()
    (ph, pw), (kh, kw) = _numeric_padding(m), m.kernel_size
    t = d[0, 0].numel()
    pixels = (a.shape[2] + 2 * ph) * (a.shape[3] + 2 * pw)
    folded = len(d) // b * t
    return m.groups == 1 and folded * folded < o * k and pixels**2 <= t * t * kh * kw


def clipped_weight_sum(m: nn.Conv2d, a: torch.Tensor, d: torch.Tensor,
                       factor: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """Σ_i f_i ∇W_i without forming ∇W_i: the weight gradient of the batch whose output
    gradients are reweighted by each example's factor (copies of example i share f_i)."""
    f = factor.repeat_interleave(len(d) // len(factor)).view(-1, 1, 1, 1)
    return conv2d_weight(a, m.weight.shape, d * f, stride=m.stride, padding=_numeric_padding(m),
                         dilation=m.dilation, groups=m.groups)  # fmt: skip


# ∇W_i is formed CHUNK examples at a time: the unfolded patches of a chunk stay in cache
# (MNIST CNN, first layer, 1,024 examples: 41 ms in one piece, 19 in four).
CHUNK = 256


def weight_per_example(m: nn.Conv2d, a: torch.Tensor, d: torch.Tensor, b: int) -> torch.Tensor:
    """``[b, *weight.shape]``: ∇W_i, summed over example i's copies (module docstring)."""
    copies = len(a) // b
    if b > CHUNK:
        step = CHUNK * copies
        chunks = zip(a.split(step), d.split(step), strict=True)
        return torch.cat([weight_per_example(m, ac, dc, len(ac) // copies) for ac, dc in chunks])
    few = a.shape[1] < 8 or d[0, 0].numel() <= 4 * d.shape[1]  # few channels, or positions
    if m.groups == 1 and m.dilation == (1, 1) and few:
        return _weight_from_patches(m, a, d, b)
    n, c = a.shape[:2]
    o = d.shape[1]
    gw = conv2d_weight(
        a.reshape(1, n * c, *a.shape[2:]),
        (n * o, c // m.groups, *m.kernel_size),
        d.reshape(1, n * o, *d.shape[2:]),
        stride=m.stride,
        padding=_numeric_padding(m),
        dilation=m.dilation,
        groups=n * m.groups,
    )
    return sum_copies(gw.view(n, *m.weight.shape), b, m.weight.shape)


def sum_copies(gw: torch.Tensor, b: int, shape: torch.Size) -> torch.Tensor:
    """``[b, *shape]`` from ``[b·copies, ...]`` (a view when there is one copy: a sum over a
    dimension of size 1 still copies, 20 ms a step for the MNIST CNN at batch 1,024)."""
    if len(gw) == b:
        return gw.view(b, *shape)
    return gw.reshape(b, len(gw) // b, *shape).sum(1)


def _weight_from_patches(m: nn.Conv2d, a: torch.Tensor, d: torch.Tensor, b: int) -> torch.Tensor:
    """:func:`weight_per_example` of a convolution with few input channels (an image's first
    layer) or few positions: unfolded patches, channels innermost, and one batched product —
    1.4–1.7× faster there than the grouped weight-gradient kernel, which is slow when each
    group has c < 8 input channels (MNIST CNN: 4.0 against 5.5 ms; ``cnn-gn``: 13.8 against
    23.2 ms)."""
    (ph, pw), (kh, kw), (sh, sw) = _numeric_padding(m), m.kernel_size, m.stride
    a = F.pad(a, (pw, pw, ph, ph)) if ph or pw else a
    n, c = a.shape[:2]
    if c > 1:  # channels innermost, so that the patch copy below reads runs of c
        a = a.contiguous(memory_format=torch.channels_last)
    v = a.unfold(2, kh, sh).unfold(3, kw, sw)  # [n, c, oh, ow, kh, kw]
    patches = v.permute(0, 2, 3, 4, 5, 1).reshape(n, -1, kh * kw * c)
    gw = torch.bmm(d.flatten(2), patches).view(n, -1, kh, kw, c).permute(0, 1, 4, 2, 3)
    return sum_copies(gw.contiguous(), b, m.weight.shape)
