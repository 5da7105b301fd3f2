"""AdaMix's gradient: the sensitivity of the projected clipped sum on neighbouring datasets, the
noise's scale and subspace, the adaptive threshold and mixing weight read only public data."""

import math

import pytest
import torch

from dpal.models.registry import build_model
from dpal.training.adamix import (
    MixState,
    _clipped_projected_sum,
    adamix_gradient,
    initial_basis,
    noiseless_projected_sum,
    public_subspace,
    signal_to_noise,
    subspace_capture,
)
from tests.conftest import make_images


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = build_model("cnn-tanh", (1, 28, 28), 10)
    x, y = torch.randn(12, 1, 28, 28), torch.randint(0, 10, (12,))
    px, py = torch.randn(20, 1, 28, 28), torch.randint(0, 10, (20,))
    return model, x, y, px, py


@pytest.mark.parametrize("clip", [1e-3, 0.1, 10.0])
def test_sensitivity_is_the_clip_bound_on_neighbouring_batches(setup, clip):
    model, x, y, px, py = setup
    with_z = noiseless_projected_sum(model, x, y, px, py, rank=8, clip=clip)
    without = noiseless_projected_sum(model, x[1:], y[1:], px, py, rank=8, clip=clip)
    gap = float((with_z - without).norm())
    assert gap <= clip * (1 + 1e-5)
    if clip == 1e-3:  # every projected gradient exceeds it: the bound is attained
        assert gap == pytest.approx(clip, rel=1e-4)


@pytest.mark.parametrize("copies", [2, 4])
def test_augmented_copies_are_averaged_before_the_clip(setup, copies):
    """With K augmented copies per example, one example is still one clipped term: removing
    an example's K copies moves the sum by ≤ C (clipping each copy would move it by up to K·C),
    and inputs that are not whole groups of K are refused by the mechanism itself."""
    model, x, y, px, py = setup
    xk, yk = x.repeat_interleave(copies, 0), y.repeat_interleave(copies)
    xk = xk + 0.1 * torch.randn_like(xk)  # copies differ, as augmentations do
    clip = 1e-3  # every example's gradient exceeds it: the bound is attained
    full = noiseless_projected_sum(model, xk, yk, px, py, rank=8, clip=clip, copies=copies)
    less = noiseless_projected_sum(
        model, xk[copies:], yk[copies:], px, py, rank=8, clip=clip, copies=copies
    )
    assert float((full - less).norm()) == pytest.approx(clip, rel=1e-4)
    with pytest.raises(ValueError, match="whole groups"):
        noiseless_projected_sum(model, xk[1:], yk[1:], px, py, rank=8, clip=clip, copies=copies)
    step = adamix_gradient(model, xk, yk, px, py, rank=8, clip=1.0, clip_quantile=None, mix=0.0,
                           noise_multiplier=1.0, expected_batch_size=12.0,
                           generator=torch.Generator().manual_seed(0), copies=copies)  # fmt: skip
    assert step.rank == 8


def test_noise_has_scale_sigma_c_and_lives_in_the_public_subspace(setup):
    model, _, _, px, py = setup
    empty_x, empty_y = torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long)
    gen = torch.Generator().manual_seed(1)
    sigma, clip, qn, rank = 2.0, 0.5, 40.0, 6
    basis = public_subspace(
        torch.cat([g.flatten(1) for g in _per_example(model, px, py).values()], 1), rank
    )
    draws = []
    for _ in range(200):
        step = adamix_gradient(
            model,
            empty_x,
            empty_y,
            px,
            py,
            rank=rank,
            clip=clip,
            clip_quantile=None,
            mix=0.0,
            noise_multiplier=sigma,
            expected_batch_size=qn,
            generator=gen,
        )
        draws.append(torch.cat([g.flatten() for g in step.gradient.values()]) * qn)
    d = torch.stack(draws)
    coords = d @ basis  # noise in the subspace coordinates
    assert coords.std(0).mean() == pytest.approx(sigma * clip, rel=0.08)
    outside = d - coords @ basis.T
    assert float(outside.norm(dim=1).max()) < 1e-4 * float(d.norm(dim=1).mean())
    assert float(d.norm(dim=1).mean()) == pytest.approx(sigma * clip * math.sqrt(rank), rel=0.1)


def _per_example(model, x, y):
    from dpal.training.dpsgd import per_example_gradients

    return per_example_gradients(model, x, y)


def test_adaptive_clip_and_mixing_read_public_data_only(setup):
    model, x, y, px, py = setup
    gen = torch.Generator().manual_seed(0)
    kw = dict(rank=8, clip=1.0, expected_batch_size=12.0, generator=gen)
    a = adamix_gradient(model, x, y, px, py, clip_quantile=0.5, mix=0.0, noise_multiplier=1.0, **kw)
    b = adamix_gradient(
        model, x[:3], y[:3], px, py, clip_quantile=0.5, mix=0.0, noise_multiplier=1.0, **kw
    )
    assert a.clip == b.clip  # the private batch does not move the threshold
    proj = torch.cat([g.flatten(1) for g in _per_example(model, px, py).values()], 1)
    norms = (proj @ public_subspace(proj, 8)).norm(dim=1)
    assert a.clip == pytest.approx(float(norms.median()), rel=1e-4)
    low = adamix_gradient(
        model, x, y, px, py, clip_quantile=None, mix="inverse-variance", noise_multiplier=0.5, **kw
    )
    high = adamix_gradient(
        model, x, y, px, py, clip_quantile=None, mix="inverse-variance", noise_multiplier=8.0, **kw
    )
    assert 0 < low.mix < high.mix < 1  # more noise (smaller ε): more weight on public data


def test_projection_raises_the_signal_to_noise_ratio(setup):
    model, x, y, px, py = setup
    full = signal_to_noise(model, x, y, px, py, rank=0, clip=1.0, noise_multiplier=1.0)
    projected = signal_to_noise(model, x, y, px, py, rank=8, clip=1.0, noise_multiplier=1.0)
    assert projected > 5 * full  # noise over 8 coordinates instead of 26,010


def test_adaptive_threshold_does_not_shrink_the_step(setup):
    """The released step at adaptive threshold C is C₀/C times DP-SGD's at fixed clip C: the
    threshold decides which examples are clipped, the reference clip C₀ the step's size."""
    model, x, y, px, py = setup
    kw = dict(rank=8, mix=0.0, noise_multiplier=1.0, expected_batch_size=12.0)
    adaptive = adamix_gradient(
        model, x, y, px, py, clip=1.0, clip_quantile=0.3, generator=torch.Generator(), **kw
    )
    c = adaptive.clip
    assert abs(c - 1.0) > 0.5  # far from C₀: without the factor the step would scale with C
    fixed = adamix_gradient(
        model, x, y, px, py, clip=c, clip_quantile=None, generator=torch.Generator(), **kw
    )
    for name, g in adaptive.gradient.items():
        assert torch.allclose(g, fixed.gradient[name] / c, rtol=1e-4, atol=1e-7)


def test_inverse_variance_mixing_trusts_a_biased_public_gradient_less(setup):
    """Same noise, same public variance: when the public set's labels disagree with the private
    ones (a biased public gradient), b̂² grows and λ falls."""
    model = setup[0]
    x, y = make_images(200, seed=3).tensors()  # class-structured: gradients share directions
    kw = dict(
        rank=0,
        clip=1.0,
        clip_quantile=None,
        mix="inverse-variance",
        noise_multiplier=0.01,
        expected_batch_size=200.0,
    )
    px = x.clone()  # the public images are the private ones …
    same = [
        adamix_gradient(model, x, y, px, y, generator=torch.Generator().manual_seed(s), **kw).mix
        for s in range(5)
    ]
    shifted = (y + 5) % 10  # … labelled alike, or every label wrong
    biased = [
        adamix_gradient(
            model, x, y, px, shifted, generator=torch.Generator().manual_seed(s), **kw
        ).mix
        for s in range(5)
    ]
    assert sum(biased) / 5 < 0.5 * sum(same) / 5


def test_subspace_capture_is_a_share_of_the_gradient(setup):
    model, x, y, px, py = setup
    part = subspace_capture(model, x, y, px, py, rank=4, clip=1.0)
    whole = subspace_capture(model, x, y, x, y, rank=12, clip=1.0)  # spans every private grad
    assert 0 < part < 1
    assert whole == pytest.approx(1.0, rel=1e-4)


def test_mixing_weight_counts_the_noise_averaging_over_the_run(setup):
    """λ = (v̂/T)/(v̂/T + v_P + b̂²): a longer run averages more noise away, so it leans less on
    the (fixed, possibly biased) public gradient; T = 1 is the per-step rule."""
    model, x, y, px, py = setup
    kw = dict(rank=0, clip=1.0, clip_quantile=None, mix="inverse-variance", noise_multiplier=2.0)
    weights = [
        adamix_gradient(
            model,
            x,
            y,
            px,
            py,
            expected_batch_size=12.0,
            mix_state=MixState(horizon=t),
            generator=torch.Generator().manual_seed(0),
            **kw,
        ).mix
        for t in (1, 10, 1000)
    ]
    assert weights[0] > weights[1] > weights[2] > 0


@pytest.mark.parametrize("copies", [1, 3])
@pytest.mark.parametrize("rank", [0, 8])
def test_the_layer_path_equals_the_vmap_reference(setup, monkeypatch, copies, rank):
    """AdaMix's clipped (projected) sum from layer inputs and output gradients equals the one
    from torch.func per-example gradients, on convolutions and linear layers, with copies."""
    from dpal.training import adamix, layer_grads

    model, x, y, px, py = setup
    xk, yk = x.repeat_interleave(copies, 0), y.repeat_interleave(copies)
    xk = xk + 0.1 * torch.randn_like(xk)
    assert layer_grads.supports(model)
    fast = noiseless_projected_sum(model, xk, yk, px, py, rank=rank or 8, clip=0.05, copies=copies)
    basis = adamix._public_basis(model, px, py, 8) if rank else None
    fast_sum = adamix._clipped_projected_sum(model, xk, yk, basis, 0.05, copies)
    monkeypatch.setattr(layer_grads, "supports", lambda _m: False)
    slow = noiseless_projected_sum(model, xk, yk, px, py, rank=rank or 8, clip=0.05, copies=copies)
    slow_sum = adamix._clipped_projected_sum(model, xk, yk, basis, 0.05, copies)
    assert torch.allclose(fast, slow, atol=1e-5, rtol=1e-4)
    assert torch.allclose(fast_sum, slow_sum, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("copies", [1, 3])
@pytest.mark.parametrize("rank", [0, 8])
def test_the_vmap_path_in_chunks_equals_the_whole_batch(setup, monkeypatch, copies, rank):
    """The torch.func path cuts a Poisson batch into chunks to bound memory (a batch of 4,096
    through efficientnet-lite0's last blocks held 23 GiB of per-example gradients at once and was
    killed): the clipped (projected) sum over chunks equals the whole batch's, with copies."""
    from dpal.training import adamix, dpsgd, layer_grads

    model, x, y, px, py = setup
    xk, yk = x.repeat_interleave(copies, 0), y.repeat_interleave(copies)
    xk = xk + 0.1 * torch.randn_like(xk)
    monkeypatch.setattr(layer_grads, "supports", lambda _m: False)
    basis = adamix._public_basis(model, px, py, 8) if rank else None
    whole = adamix._clipped_projected_sum(model, xk, yk, basis, 0.05, copies)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    monkeypatch.setattr(dpsgd, "MAX_GRADIENT_ENTRIES", n_params * 3)  # chunks of 3 examples
    assert dpsgd.examples_per_chunk(model) == 3 and len(x) > 3
    sizes: list[int] = []

    def recorded(m, xs, ys):
        sizes.append(len(xs))
        return dpsgd.per_example_gradients(m, xs, ys)

    monkeypatch.setattr(adamix, "per_example_gradients", recorded)
    chunked = adamix._clipped_projected_sum(model, xk, yk, basis, 0.05, copies)
    assert max(sizes) <= 3 * copies and sum(sizes) == len(xk)  # it did cut the batch
    assert torch.allclose(whole, chunked, atol=1e-6, rtol=1e-5)


def test_per_example_gradients_from_layers_equal_vmap(setup):
    from dpal.training import layer_grads
    from dpal.training.dpsgd import per_example_gradients

    model, x, y, _, _ = setup
    fast, slow = layer_grads.per_example(model, x, y), per_example_gradients(model, x, y)
    assert list(fast) == list(slow)  # same names, same order: the flat vectors line up
    for name in slow:
        assert torch.allclose(fast[name], slow[name], atol=1e-6, rtol=1e-4), name


def test_the_gram_subspace_spans_the_top_singular_vectors():
    torch.manual_seed(0)
    g = torch.randn(30, 500) * torch.logspace(0, -3, 500)  # a decaying spectrum
    basis = public_subspace(g, 8)
    assert torch.allclose(basis.T @ basis, torch.eye(8), atol=1e-5)  # orthonormal
    _, _, vh = torch.linalg.svd(g, full_matrices=False)
    top = vh[:8].T
    assert torch.allclose(basis @ basis.T, top @ top.T, atol=1e-4)  # the same subspace
    low_rank = torch.randn(30, 3) @ torch.randn(3, 500)  # rank 3 < 8: no directions of noise
    assert public_subspace(low_rank, 8).shape == (500, 3)


def test_an_initial_subspace_stays_fixed_as_the_weights_move(setup):
    model, x, y, px, py = setup
    basis = initial_basis(model, px, py, rank=6)  # at the run's start, public data only
    with torch.no_grad():  # the run moved the weights
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    kw = dict(rank=6, clip=1.0, clip_quantile=0.5, mix="inverse-variance", noise_multiplier=1.0,
              expected_batch_size=12.0)  # fmt: skip
    fixed = adamix_gradient(model, x, y, px, py, generator=torch.Generator().manual_seed(0),
                            fixed_basis=basis, **kw)  # fmt: skip
    moving = adamix_gradient(model, x, y, px, py, generator=torch.Generator().manual_seed(0), **kw)
    f, m = (torch.cat([g.flatten() for g in s.gradient.values()]) for s in (fixed, moving))
    assert float((f - basis @ (basis.T @ f)).norm()) < 1e-4 * float(f.norm())  # initial span
    assert float((m - basis @ (basis.T @ m)).norm()) > 0.05 * float(m.norm())  # this step's left it
    # the sensitivity is still the clip bound on neighbouring batches
    for clip in (1e-3, 1.0):
        gap = _clipped_projected_sum(model, x, y, basis, clip) - _clipped_projected_sum(
            model, x[1:], y[1:], basis, clip
        )
        assert float(gap.norm()) <= clip * (1 + 1e-5)
