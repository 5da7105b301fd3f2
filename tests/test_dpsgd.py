"""DP-SGD mechanism: per-example clipping against a slow loop, noise scale, and the σ=0 case."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dpal.models import build_model
from dpal.training import conv_grads, layer_grads
from dpal.training.dpsgd import (
    add_gaussian_noise,
    clipped_sum,
    clipped_sum_of,
    per_example_gradients,
    private_gradient,
)


def slow_clipped_sum(model, x, y, clip):
    """Obviously correct reference: one backward pass per example."""
    total = {k: torch.zeros_like(p) for k, p in model.named_parameters()}
    norms = []
    for i in range(len(x)):
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        g = {k: p.grad.clone() for k, p in model.named_parameters()}
        norm = torch.sqrt(sum(v.pow(2).sum() for v in g.values()))
        norms.append(norm)
        factor = min(1.0, clip / norm.item()) if math.isfinite(clip) else 1.0
        for k in total:
            total[k] += factor * g[k]
    return total, torch.stack(norms)


class WithGroupNorm(nn.Module):  # a model the layer engine does not cover
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.norm = nn.GroupNorm(2, 4)
        self.fc = nn.Linear(4 * 26 * 26, 10)

    def forward(self, x):
        return self.fc(torch.tanh(self.norm(self.conv(x))).flatten(1))


@pytest.mark.parametrize("engine", ["layers", "torch.func"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
@pytest.mark.parametrize("clip", [0.05, 1.0, math.inf])
@pytest.mark.parametrize("name", ["cnn-tanh", "cnn-gn"])
def test_clipped_sum_equals_per_example_loop(engine, shape, clip, name):
    torch.manual_seed(0)
    model = build_model(name, shape, 10)
    x, y = torch.randn(9, *shape), torch.randint(0, 10, (9,))
    got, norms = clipped_sum_of(model, x, y, clip, engine=engine)
    want, want_norms = slow_clipped_sum(model, x, y, clip)
    torch.testing.assert_close(norms, want_norms, rtol=1e-4, atol=1e-6)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-6)


def test_torch_func_engine_on_a_model_layers_cannot_do():
    torch.manual_seed(0)
    model = WithGroupNorm()
    assert not layer_grads.supports(model)
    assert layer_grads.supports(build_model("cnn-relu", (1, 28, 28), 10))
    x, y = torch.randn(5, 1, 28, 28), torch.randint(0, 10, (5,))
    got, _ = clipped_sum_of(model, x, y, 0.1, engine="auto")
    want, _ = slow_clipped_sum(model, x, y, 0.1)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-6)


def test_clipped_per_example_norms_are_at_most_the_bound():
    torch.manual_seed(1)
    model = build_model("cnn-tanh", (1, 28, 28), 10)
    x, y = torch.randn(32, 1, 28, 28) * 5, torch.randint(0, 10, (32,))
    per_ex = per_example_gradients(model, x, y)
    _, norms = clipped_sum(per_ex, 0.01)
    factor = (0.01 / norms).clamp(max=1)
    clipped_norms = norms * factor
    assert torch.all(clipped_norms <= 0.01 * (1 + 1e-5))
    assert torch.allclose(clipped_norms[norms > 0.01], torch.tensor(0.01), rtol=1e-5)


def test_no_noise_no_clipping_equals_non_private_gradient():
    torch.manual_seed(0)
    model = build_model("cnn-tanh", (1, 28, 28), 10)
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    g = private_gradient(
        model,
        x,
        y,
        max_grad_norm=math.inf,
        noise_multiplier=0.0,
        expected_batch_size=16,
        generator=torch.Generator().manual_seed(0),
    )
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()  # the mean loss: plain training
    for k, p in model.named_parameters():
        torch.testing.assert_close(g[k], p.grad, rtol=1e-4, atol=1e-7)


def test_noise_standard_deviation_is_sigma_times_clip():
    torch.manual_seed(0)
    model = build_model("cnn-tanh", (1, 28, 28), 10)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    sigma, clip, b = 1.3, 0.7, 8.0
    gen = torch.Generator().manual_seed(1)
    clean = private_gradient(
        model, x, y, max_grad_norm=clip, noise_multiplier=0.0, expected_batch_size=b, generator=gen
    )
    noisy = private_gradient(
        model,
        x,
        y,
        max_grad_norm=clip,
        noise_multiplier=sigma,
        expected_batch_size=b,
        generator=gen,
    )
    noise = torch.cat([(noisy[k] - clean[k]).flatten() for k in clean]) * b  # back to the sum
    n = noise.numel()  # 26,010 draws: the std estimate is within ~1% (4.5 standard errors)
    assert noise.std().item() == pytest.approx(sigma * clip, rel=4.5 / math.sqrt(2 * n))
    assert abs(noise.mean().item()) < 4.5 * sigma * clip / math.sqrt(n)


def test_noise_is_independent_across_tensors_of_the_same_shape():
    gen = torch.Generator().manual_seed(0)
    zeros = {"a": torch.zeros(1000), "b": torch.zeros(1000)}
    noisy = add_gaussian_noise(zeros, 1.0, gen)
    assert not torch.equal(noisy["a"], noisy["b"])
    corr = torch.corrcoef(torch.stack([noisy["a"], noisy["b"]]))[0, 1]
    assert abs(corr.item()) < 4.5 / math.sqrt(1000)


def test_empty_batch_releases_pure_noise():
    model = build_model("cnn-tanh", (1, 28, 28), 10)
    g = private_gradient(
        model,
        torch.zeros(0, 1, 28, 28),
        torch.zeros(0, dtype=torch.long),
        max_grad_norm=1.0,
        noise_multiplier=1.0,
        expected_batch_size=10,
        generator=torch.Generator().manual_seed(0),
    )
    flat = torch.cat([v.flatten() for v in g.values()]) * 10
    assert flat.std().item() == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("engine", ["layers", "torch.func"])
def test_augmentation_copies_are_averaged_then_clipped_as_one_example(engine):
    torch.manual_seed(0)
    model = build_model("cnn-tanh", (1, 28, 28), 10)
    b, k, clip = 5, 3, 0.05
    x, y = torch.randn(b * k, 1, 28, 28), torch.randint(0, 10, (b,)).repeat_interleave(k)
    got, norms = clipped_sum_of(model, x, y, clip, engine=engine, copies=k)
    want = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(b):  # reference: the mean loss over example i's copies, clipped as one
        model.zero_grad()
        F.cross_entropy(model(x[i * k : (i + 1) * k]), y[i * k : (i + 1) * k]).backward()
        g = {n: p.grad.clone() for n, p in model.named_parameters()}
        norm = torch.sqrt(sum(v.pow(2).sum() for v in g.values()))
        torch.testing.assert_close(norms[i], norm, rtol=1e-4, atol=1e-6)
        for n in want:
            want[n] += min(1.0, clip / norm.item()) * g[n]
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-4, atol=1e-6)


def test_chunked_torch_func_engine_gives_the_whole_batch_clipped_sum(monkeypatch):
    """Batches cut into chunks (to bound memory) clip and sum exactly as one batch."""
    from dpal.training import dpsgd

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5), torch.nn.Tanh(),
                                torch.nn.Linear(5, 3))  # fmt: skip
    x, y = torch.randn(23, 1, 3, 4), torch.randint(0, 3, (23,))
    whole, norms = dpsgd.clipped_sum_of(model, x, y, 0.5, engine="torch.func")
    n_params = sum(p.numel() for p in model.parameters())
    monkeypatch.setattr(dpsgd, "MAX_GRADIENT_ENTRIES", n_params * 4)  # chunks of 4 examples
    assert dpsgd.examples_per_chunk(model) == 4
    chunked, chunk_norms = dpsgd.clipped_sum_of(model, x, y, 0.5, engine="torch.func")
    assert torch.allclose(norms, chunk_norms)
    for k in whole:
        assert torch.allclose(whole[k], chunked[k], atol=1e-6)


def test_layers_engine_names_the_gradients_of_a_bare_linear_model():
    """A linear probe's model is one nn.Linear: its gradients are "weight" and "bias"."""
    torch.manual_seed(0)
    head = nn.Linear(6, 3)
    x, y = torch.randn(9, 6), torch.randint(0, 3, (9,))
    fast, _ = layer_grads.clipped_sum(head, x, y, 0.3)
    reference, _ = clipped_sum(per_example_gradients(head, x, y), 0.3)
    assert set(fast) == {"weight", "bias"} == set(reference)
    for k in fast:
        assert torch.allclose(fast[k], reference[k], atol=1e-6)


@pytest.mark.parametrize("copies", [1, 3])
@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(3, 8, 3, padding=1),
        nn.Conv2d(2, 4, 3, padding=(1, 2), dilation=(1, 2)),
        nn.Conv2d(2, 4, 3, stride=2, padding=(1, 2), dilation=(1, 2)),
        nn.Conv2d(4, 6, 2, stride=2),
        nn.Conv2d(4, 6, 1),
    ],
)
def test_patch_gram_equals_the_gram_of_unfolded_patches(conv, copies):
    torch.manual_seed(0)
    b = 4
    a = torch.randn(b * copies, conv.in_channels, 7, 9)
    patches = F.unfold(a, conv.kernel_size, dilation=conv.dilation, padding=conv.padding,
                       stride=conv.stride).transpose(1, 2)  # fmt: skip
    A = patches.reshape(b, -1, patches.shape[-1])  # copies folded into the positions
    want = torch.bmm(A, A.transpose(1, 2))
    torch.testing.assert_close(conv_grads.patch_gram(conv, a, b), want, rtol=1e-4, atol=1e-4)


def test_formed_and_ghost_conv_paths_with_copies_equal_the_per_example_loop():
    """A network whose convolutions take both paths (formed at 16 px, ghost at 4 px), with
    augmented copies and a frozen layer: the clipped sum equals the loop over examples."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.AvgPool2d(4),
                          nn.Conv2d(4, 32, 3, padding=1), nn.Tanh(), nn.Flatten(),
                          nn.Linear(32 * 16, 5))  # fmt: skip
    model[0].bias.requires_grad_(False)
    b, k, clip = 5, 2, 0.1
    x, y = torch.randn(b * k, 3, 16, 16), torch.randint(0, 5, (b,)).repeat_interleave(k)
    got, norms = clipped_sum_of(model, x, y, clip, engine="layers", copies=k)
    want = {n: torch.zeros_like(p) for n, p in model.named_parameters() if p.requires_grad}
    for i in range(b):
        model.zero_grad()
        F.cross_entropy(model(x[i * k : (i + 1) * k]), y[i * k : (i + 1) * k]).backward()
        g = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        norm = torch.sqrt(sum(v.pow(2).sum() for v in g.values()))
        torch.testing.assert_close(norms[i], norm, rtol=1e-4, atol=1e-6)
        for n in want:
            want[n] += min(1.0, clip / norm.item()) * g[n]
    assert set(got) == set(want)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-4, atol=1e-6)


def test_the_layer_engine_refuses_a_parameter_it_does_not_cover():
    # GroupNorm's affine weights are neither Linear nor Conv2d: 'layers' would leave them out
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.Flatten(), nn.Linear(4 * 26 * 26, 3)
    )
    x, y = torch.randn(5, 1, 28, 28), torch.randint(0, 3, (5,))
    with pytest.raises(ValueError, match=r"engine='auto' or 'torch\.func'"):
        clipped_sum_of(model, x, y, 1.0, engine="layers")
    summed, _ = clipped_sum_of(model, x, y, 1.0, engine="auto")  # falls back to torch.func
    assert set(summed) == {name for name, _ in model.named_parameters()}


def test_a_pointwise_convolution_takes_the_ghost_path_and_equals_the_loop():
    """1×1 convolutions (MBConv, bottlenecks) at few positions: ghost norm, not formed ∇W_i."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(16, 64, 1), nn.Tanh(), nn.Flatten(), nn.Linear(64 * 16, 5))
    x, y = torch.randn(6, 16, 4, 4), torch.randint(0, 5, (6,))
    d = torch.zeros(6, 64, 4, 4)
    assert conv_grads.uses_ghost_norm(model[0], x, d, 6)  # T² = 256 < o·k = 1,024, P = T
    got, norms = clipped_sum_of(model, x, y, 0.2, engine="layers")
    per_example = per_example_gradients(model, x, y)
    want, want_norms = clipped_sum(per_example, 0.2)
    torch.testing.assert_close(norms, want_norms, rtol=1e-4, atol=1e-6)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-4, atol=1e-6)


class PadsInsideForward(nn.Conv2d):
    """A "same"-padding convolution as EfficientNet ports and timm write it: ``padding=0`` on
    the module, ``F.pad`` inside ``forward`` — the module's input is not what it multiplies."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (1, 1, 1, 1)))


def test_a_convolution_that_pads_inside_forward_takes_the_engine_for_any_module():
    # Regression: the layer engine hooked such a layer's unpadded input and failed (the
    # depthwise 3×3 convolutions of efficientnet-lite0's last blocks); it must not be used.
    torch.manual_seed(2)
    model = nn.Sequential(PadsInsideForward(3, 4, 3, groups=1), nn.Tanh(), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, 3))  # fmt: skip
    assert not layer_grads.supports(model)
    x, y = torch.randn(6, 3, 4, 4), torch.randint(0, 3, (6,))
    got, _ = clipped_sum_of(model, x, y, 0.05, engine="auto")
    want, _ = slow_clipped_sum(model, x, y, 0.05)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-6)
