"""AdaMix's private gradient (Golatkar et al., CVPR 2022, "Mixed Differential Privacy in
Computer Vision"): DP-SGD that leans on a small labelled *public* set at every step.

At parameters θ (released by the previous steps), with public examples P and a Poisson batch B:

1. **Subspace.** U = the top-k right singular vectors of the public per-example gradient matrix
   G_P (|P| × d) at θ; U is d × k with orthonormal columns. (Or, ``fixed_basis``: U computed
   once at the run's starting weights θ₀ and kept — on a linear head the per-step U collapses
   as the run fits the public set, docs/RESULTS.md; θ₀ is public too, so nothing below changes.)
2. **Adaptive clip.** C = the ``clip_quantile`` quantile of the public projected gradient norms
   ‖Uᵀ∇ℓ_j(θ)‖, j ∈ P (or the fixed clip bound C₀ = ``clip`` when no quantile is given).
3. **Private step.** s = Σ_{i∈B} clip_C(Uᵀ∇ℓ_i(θ)) + N(0, σ²C²·I_k), then ĝ = (C₀/C)·s/(q·N).
   The factor C₀/C keeps the step size independent of C: the threshold decides which examples
   are clipped, the learning rate how far to step. Without it a small public quantile (the
   public set is the few-shot model's training set, so its gradients are small) would shrink
   every step by C/C₀ — and C keeps falling as training fits the public set (from 1.9 to 0.03
   over 5 epochs on MNIST, docs/RESULTS.md).
4. **Mixing.** The public examples are put in the same units — p_j = (C₀/C)·clip_C(Uᵀ∇ℓ_j) —
   so that ĝ and ḡ_P = mean_j p_j estimate the same thing (the mean clipped gradient) on private
   and on public data, and g = U[(1 − λ)·ĝ + λ·ḡ_P]; λ constant, or by inverse mean squared
   error *over the run*: λ = (v̂/T)/(v̂/T + v_P + b̂²). Here v̂ = k(σC₀/(qN))² is the variance of
   the noise in one ĝ; T the number of steps of the run, because SGD sums its T steps and their
   noises are independent — the noise in what the run moves is v̂/T per step — whereas the
   public set is the same at every step, so its error does not average out: v_P = tr Cov(p_j)/|P|
   (sampling) and b̂² (bias: the public set is small and was fitted by the few-shot model). b̂² =
   max(0, ‖ĝ − ḡ_P‖² − v̂ − v_P), averaged over steps (:class:`MixState`), computed from the
   released ĝ and public data only. More public weight when σ is larger (smaller ε), less when
   the public gradient disagrees with the private one. (A per-step rule, T = 1, put 90–96% of
   the weight on the public gradient on MNIST at ε = 1 and cost 5 points: docs/RESULTS.md.)

**Sensitivity (add/remove-one).** U and C are functions of θ and the public data only, and θ is
the output of the earlier (already accounted) steps, so they are fixed when the private batch is
read (adaptive composition); λ is a function of those and of the released, noisy ĝ. Adding or
removing one private example adds or removes one term clip_C(Uᵀ∇ℓ_i) of norm ≤ C from s: the L2
sensitivity of s is C, exactly as in DP-SGD, and the noise σC makes each step the subsampled
Gaussian mechanism with multiplier σ. Everything after the noise (U·, C₀/C, /(qN), b̂², the mix
with public quantities) is post-processing. The ledger therefore records the same
``DpsgdSchedule(σ, q, steps)`` as DP-SGD. The noise has k coordinates instead of d: its norm is
σC√k, not σC√d — the point of the projection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from dpal.privacy.noise_source import TorchNoise, randn
from dpal.training import layer_grads
from dpal.training.dpsgd import Params, examples_per_chunk, per_example_gradients


@dataclass(frozen=True)
class AdamixStep:
    """One step's public quantities (free) and the released gradient."""

    gradient: Params
    clip: float
    mix: float
    rank: int


@dataclass
class MixState:
    """The running estimate of the public gradient's squared bias b̂² (an exponential average
    over steps, ``decay`` per step). Post-processing state: it reads released gradients and
    public data only. Checkpointed with the run (``AdamixGradient.state``): a resume goes on."""

    decay: float = 0.9
    horizon: int = 1  # T, the run's number of steps
    bias_sq: float | None = None

    def update(self, estimate: float) -> float:
        if self.bias_sq is None:
            self.bias_sq = estimate
        else:
            self.bias_sq = self.decay * self.bias_sq + (1 - self.decay) * estimate
        return self.bias_sq


def _per_example(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Params:
    # From layer inputs and output gradients where every trainable layer is a Linear or a plain
    # Conv2d (8× faster than vmap on a linear head: layer_grads.per_example), else vmap.
    if layer_grads.supports(model):
        return layer_grads.per_example(model, x, y)
    return per_example_gradients(model, x, y)


def _flat(per_example: Params) -> torch.Tensor:
    return torch.cat([g.flatten(1) for g in per_example.values()], dim=1)


def _unflat(vector: torch.Tensor, like: Params) -> Params:
    out, start = {}, 0
    for name, g in like.items():
        size = g[0].numel()
        out[name] = vector[start : start + size].view(g.shape[1:])
        start += size
    return out


def _clipped_projected_sum(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    basis: torch.Tensor | None,
    clip: float,
    copies: int = 1,
) -> torch.Tensor:
    """Σ_i clip_C(Uᵀ∇ℓ_i) (or Σ_i clip_C(∇ℓ_i) without a basis): the sum whose sensitivity is C.

    With ``copies`` > 1, ``x`` holds that many augmented versions of each example
    (example-major) and ∇ℓ_i is the mean over example i's copies — clipped once, as one term.
    Clipping each copy would let one example add ``copies`` terms: sensitivity copies·C.
    """
    if copies < 1 or len(x) % copies:
        raise ValueError(f"{len(x)} inputs are not whole groups of {copies} copies per example")
    if layer_grads.supports(model):  # from layer inputs and output gradients: no vmap
        if basis is None:
            summed, _ = layer_grads.clipped_sum(model, x, y, clip, copies=copies)
            return torch.cat([g.flatten() for g in summed.values()])
        projected = layer_grads.projected(model, x, y, basis, copies=copies)
        return (layer_grads.clip_factors(projected.norm(dim=1), clip)[:, None] * projected).sum(0)
    chunk = copies * examples_per_chunk(model)
    if len(x) > chunk:  # bounded memory, exact: each example is clipped alone, so the sums add up
        parts = [_clipped_projected_sum(model, x[i : i + chunk], y[i : i + chunk], basis, clip,
                                        copies) for i in range(0, len(x), chunk)]  # fmt: skip
        return torch.stack(parts).sum(0)
    per_example = _flat(per_example_gradients(model, x, y))
    if copies > 1:
        per_example = per_example.reshape(-1, copies, per_example.shape[1]).mean(1)
    if basis is not None:
        per_example = per_example @ basis
    factors = layer_grads.clip_factors(per_example.norm(dim=1), clip)
    return (factors[:, None] * per_example).sum(0)


def public_subspace(public_grads: torch.Tensor, rank: int) -> torch.Tensor:
    """d × k orthonormal basis of the top-``rank`` right singular vectors of ``public_grads``
    (|P| × d).

    With |P| < d (always, in practice), from the eigendecomposition of the |P| × |P| Gram
    matrix G Gᵀ = W Λ Wᵀ: v_j = Gᵀ w_j / √λ_j — 8× faster than an SVD of G on 2 CPU cores for
    |P| = 100, d = 12,810 (0.04 against 0.32 s), and an SVD ran at every step. Directions whose
    singular value is below 10⁻³ of the largest are dropped (they carry no public gradient, and
    in float32 the Gram matrix's rounding, ≈ 10⁻⁷ of its largest eigenvalue, would make them up),
    and the basis is re-orthonormalised (QR)."""
    n, d = public_grads.shape
    k = min(rank, n, d)
    if n >= d:
        _, _, vh = torch.linalg.svd(public_grads, full_matrices=False)
        return vh[:k].T.contiguous()
    lam, w = torch.linalg.eigh(public_grads @ public_grads.T)  # ascending
    lam, w = lam.flip(0)[:k], w.flip(1)[:, :k]
    keep = lam > (1e-6 * lam[0]).clamp_min(torch.finfo(lam.dtype).tiny)
    v = public_grads.T @ (w[:, keep] / lam[keep].sqrt())
    q, r = torch.linalg.qr(v)
    return (q * torch.sign(torch.diagonal(r))).contiguous()


def _public_basis(
    model: nn.Module, public_x: torch.Tensor, public_y: torch.Tensor, rank: int
) -> torch.Tensor:
    return public_subspace(_flat(_per_example(model, public_x, public_y)), rank)


def adamix_gradient(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    public_x: torch.Tensor,
    public_y: torch.Tensor,
    *,
    rank: int,
    clip: float,
    clip_quantile: float | None,
    mix: float | str,
    noise_multiplier: float,
    expected_batch_size: float,
    generator: TorchNoise,
    mix_state: MixState | None = None,
    copies: int = 1,
    fixed_basis: torch.Tensor | None = None,
) -> AdamixStep:
    """The released AdaMix gradient of the module docstring for one Poisson batch ``x, y``.

    ``rank`` 0: no projection (clip and noise in all d coordinates). ``fixed_basis``: a d × k
    basis from public data (:func:`initial_basis`) used instead of this step's. ``mix``: a weight in
    [0, 1], or ``"inverse-variance"`` (then ``mix_state`` carries T and b̂² across steps; when
    None, a one-step run). ``copies``: augmented versions per example in ``x``, averaged before
    the clip (:func:`_clipped_projected_sum`), so the sensitivity stays C.
    """
    pub = _per_example(model, public_x, public_y)
    g_pub = _flat(pub)  # |P| × d, public: free
    basis = fixed_basis
    if basis is None and rank > 0:
        basis = public_subspace(g_pub, rank)
    proj_pub = g_pub @ basis if basis is not None else g_pub
    c = float(torch.quantile(proj_pub.norm(dim=1), clip_quantile)) if clip_quantile else clip
    c = max(c, 1e-8)
    scale = clip / c  # step size independent of the threshold (post-processing)

    dim = proj_pub.shape[1]
    summed = torch.zeros(dim, dtype=g_pub.dtype, device=g_pub.device)
    if len(x):
        summed = _clipped_projected_sum(model, x, y, basis, c, copies)
    noise = randn(generator, (dim,), dtype=summed.dtype, device=summed.device)
    noise = noise * noise_multiplier * c
    private_part = scale * (summed + noise) / expected_batch_size  # ĝ, subspace coordinates

    public_clipped = scale * layer_grads.clip_factors(proj_pub.norm(dim=1), c)[:, None] * proj_pub
    public_part = public_clipped.mean(0)  # ḡ_P, same units and coordinates
    if mix == "inverse-variance":
        v_noise = dim * (noise_multiplier * clip / expected_batch_size) ** 2
        v_public = float(public_clipped.var(dim=0, unbiased=True).sum()) / max(len(g_pub), 1)
        gap = float((private_part - public_part).square().sum())
        state = mix_state or MixState()
        bias_sq = state.update(max(0.0, gap - v_noise - v_public))
        v_run = v_noise / max(state.horizon, 1)  # the noise averages over the run's steps
        total = v_run + v_public + bias_sq
        weight = v_run / total if total > 0 else 0.0
    else:
        weight = float(mix)
        if not 0 <= weight <= 1:
            raise ValueError(f"mix must be in [0, 1] or 'inverse-variance', got {mix!r}")
    combined = (1 - weight) * private_part + weight * public_part
    if basis is not None:
        combined = basis @ combined
    return AdamixStep(_unflat(combined, pub), c, weight, dim if basis is not None else 0)


def initial_basis(
    model: nn.Module, public_x: torch.Tensor, public_y: torch.Tensor, rank: int
) -> torch.Tensor:
    """U at the weights ``model`` holds now, from public data only (free): the basis of a run
    whose subspace is fixed at its start (``TrainConfig.projection_subspace="initial"``)."""
    return _public_basis(model, public_x, public_y, rank).detach()


def noiseless_projected_sum(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    public_x: torch.Tensor,
    public_y: torch.Tensor,
    *,
    rank: int,
    clip: float,
    copies: int = 1,
) -> torch.Tensor:
    """s without noise (the quantity whose sensitivity the docstring derives), for tests."""
    basis = _public_basis(model, public_x, public_y, rank)
    return _clipped_projected_sum(model, x, y, basis, clip, copies)


def signal_to_noise(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    public_x: torch.Tensor,
    public_y: torch.Tensor,
    *,
    rank: int,
    clip: float,
    noise_multiplier: float,
) -> float:
    """‖clipped sum‖ / E‖noise‖ for one batch, with (``rank`` > 0) or without projection:
    the projection's effect on the gradient's signal-to-noise ratio."""
    basis = _public_basis(model, public_x, public_y, rank) if rank > 0 else None
    summed = _clipped_projected_sum(model, x, y, basis, clip)
    return float(summed.norm()) / (noise_multiplier * clip * math.sqrt(len(summed)))


def subspace_capture(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    public_x: torch.Tensor,
    public_y: torch.Tensor,
    *,
    rank: int,
    clip: float,
) -> float:
    """‖UUᵀḡ‖² / ‖ḡ‖² with ḡ the mean clipped gradient of ``x, y``: the share of the (private)
    gradient that the public top-``rank`` subspace holds — what projection keeps of the signal."""
    basis = _public_basis(model, public_x, public_y, rank)
    mean = _clipped_projected_sum(model, x, y, None, clip) / len(x)
    return float((mean @ basis).square().sum() / mean.square().sum())
