"""Phase I of DP-RandP: the contrastive objective's terms, the augmentations, GroupNorm networks
without batch mixing, and weights saved in the public-initialisation format."""

import math

import numpy as np
import pytest
import torch

from dpal.core.errors import DpalError
from dpal.methods.randp.prior import (
    PriorConfig,
    align_loss,
    augmenter,
    learn_prior,
    two_views,
    uniform_loss,
)
from dpal.methods.randp.probe import linear_probe_accuracy
from dpal.models.public_init import load_public_init
from dpal.models.registry import build_model
from tests.conftest import make_images


def test_alignment_and_uniformity_terms():
    z = torch.nn.functional.normalize(torch.randn(6, 4), dim=1)
    assert align_loss(z, z) == 0
    assert align_loss(z, -z) == pytest.approx(4.0)  # ‖z − (−z)‖² = 4 on the unit sphere
    antipodal = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert uniform_loss(antipodal) == pytest.approx(-8.0)  # log exp(−2 · 2²)
    clumped = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    assert uniform_loss(clumped) == pytest.approx(0.0)  # the worst spread


def test_views_are_different_random_augmentations_in_the_model_range():
    batch = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    torch.manual_seed(0)
    v1, v2 = two_views(batch, augmenter(16, 3))
    assert v1.shape == v2.shape == (4, 3, 16, 16)
    assert v1.min() >= -1 and v1.max() <= 1 and not torch.equal(v1, v2)


@pytest.mark.parametrize("name", ["cnn-gn", "wrn-16-4"])
def test_groupnorm_networks_do_not_mix_examples(name):
    model = build_model(name, (3, 32, 32), 10).eval()
    x = torch.randn(3, 3, 32, 32)
    alone = model(x[:1])
    together = model(x)[:1]
    assert torch.allclose(alone, together, atol=1e-5)  # no batch statistics
    assert model.embed(x).shape == (3, model.feature_dim)


def test_learn_prior_saves_an_initialisation_for_dp_training(tmp_path):
    config = PriorConfig(size=16, steps=3, batch_size=8, kind="dead-leaves")
    payload = learn_prior(config, tmp_path / "prior.pt")
    assert "no real data" in payload["learned_from"]
    assert all(
        math.isfinite(h["align"]) and math.isfinite(h["uniform"]) for h in payload["history"]
    )
    model = build_model("cnn-gn", (3, 16, 16), 10)
    load_public_init(model, tmp_path / "prior.pt", "cnn-gn")
    for k, v in payload["state"].items():
        assert torch.equal(model.state_dict()[k], v)
    with pytest.raises(DpalError, match="random process"):
        PriorConfig(kind="fractal")


def test_linear_probe_reads_features_and_scores_the_test_set():
    torch.manual_seed(0)
    model = build_model("cnn-gn", (1, 28, 28), 10)
    acc = linear_probe_accuracy(model, make_images(300, seed=0), make_images(100, seed=1))
    assert 0.5 < acc <= 1.0  # bands are linearly separable even through random features
    assert np.isfinite(acc)
