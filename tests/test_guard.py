"""The guard of an improvement: the DP model is shipped unchanged when fine-tuning makes it
worse on random bought labels, and the fine-tuned one (refitted on everything) when it helps."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from dpal.core.errors import DpalError
from dpal.data.arrays import ImageArrays
from dpal.data.tasks import Task
from dpal.methods.active_learning.guard import (
    GuardConfig,
    guarded_finetune,
    random_validation,
    validation_size,
)
from dpal.methods.active_learning.improve import SelectConfig, improve
from dpal.training.config import TrainConfig
from dpal.training.finetune import FinetuneConfig
from dpal.training.trainer import train
from tests.conftest import make_images

FT = FinetuneConfig(epochs=12, batch_size=32, lr=1.0, augment="none")


def _two_class_images(n: int, seed: int) -> ImageArrays:
    """Class 0: the left pixel is bright; class 1: the right one."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = np.full((n, 1, 2, 1), 40, dtype=np.uint8)
    x[np.arange(n), 0, y, 0] = 220
    return ImageArrays(x, y.astype(np.int64), 2, "two")


def _model(right: bool) -> nn.Module:
    """A linear model that is right (or exactly wrong) on ``_two_class_images``."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(2, 2))
    with torch.no_grad():
        sign = 1.0 if right else -1.0
        net[1].weight.copy_(sign * torch.tensor([[3.0, -3.0], [-3.0, 3.0]]))
        net[1].bias.zero_()
    return net


def test_validation_size_leaves_the_strategy_a_multiple_of_n_each():
    assert validation_size(1000, 0.2, 10) == 200
    assert validation_size(500, 0.2, 10) == 100
    assert validation_size(15, 0.2, 10) == 5
    assert validation_size(7, 0.2) == 1
    assert validation_size(1, 0.2) == 0 and validation_size(100, 0.0) == 0
    with pytest.raises(DpalError, match="validation_fraction"):
        GuardConfig(validation_fraction=1.0)


def test_random_validation_is_disjoint_from_the_strategy_and_reproducible():
    chosen = np.arange(0, 100, 2)
    a = random_validation(200, chosen, 30, seed=3)
    assert len(set(a.tolist())) == 30 and not set(a.tolist()) & set(chosen.tolist())
    assert np.array_equal(a, random_validation(200, chosen, 30, seed=3))
    with pytest.raises(DpalError, match="validation-fraction"):
        random_validation(60, chosen, 31, seed=0)  # 30 points left


def test_a_fine_tuning_that_hurts_ships_the_start_model():
    start = _model(right=True)
    val = _two_class_images(40, seed=1)
    wrong = _two_class_images(64, seed=2)
    wrong = ImageArrays(wrong.x, 1 - wrong.y, 2, "mislabelled")  # a labeller that gets it wrong
    result = guarded_finetune(start, wrong, val, FT, GuardConfig())
    assert result.kept == "start" and result.n_validation == 40
    assert result.validation_start == 1.0 and result.validation_tuned < 0.5
    for a, b in zip(result.model.parameters(), start.parameters(), strict=True):
        assert torch.equal(a, b)  # the starting model, unchanged


def test_a_fine_tuning_that_helps_is_refitted_on_every_label():
    start = _model(right=False)
    train_set, val = _two_class_images(64, seed=3), _two_class_images(40, seed=4)
    refit = guarded_finetune(start, train_set, val, FT, GuardConfig())
    no_refit = guarded_finetune(start, train_set, val, FT, GuardConfig(refit=False))
    assert refit.kept == no_refit.kept == "fine-tuned"
    assert refit.validation_start == 0.0 and refit.validation_tuned == 1.0
    w_refit, w_plain = refit.model[1].weight, no_refit.model[1].weight
    assert not torch.equal(w_refit, w_plain)  # trained on the validation labels too
    assert not torch.equal(start[1].weight, w_plain)  # the start model was left as it was


def test_no_guard_fine_tunes_on_everything():
    start = _model(right=False)
    result = guarded_finetune(
        start, _two_class_images(64, 5), _two_class_images(0, 6), FT, GuardConfig(0.0)
    )
    assert result.kept == "fine-tuned" and result.n_validation == 0


def test_improve_buys_the_guards_share_at_random_and_reports_its_choice(tmp_path):
    task = Task(
        "synthetic",
        make_images(300, seed=0),
        make_images(100, seed=1),
        public=make_images(300, seed=2),
    )
    cfg = TrainConfig(dataset="synthetic", epochs=2, batch_size=40, lr=0.5, noise_multiplier=1.0)
    train(cfg, tmp_path / "dp", task=task, progress=False)
    ckpt = tmp_path / "dp/checkpoints/epoch_002.pt"
    r = improve(ckpt, tmp_path / "imp", SelectConfig(strategy="margin", n_labeled=50),
                FinetuneConfig(epochs=3), task=task)  # fmt: skip
    selection = json.loads((tmp_path / "imp/selection.json").read_text())
    val = selection["validation_indices"]
    assert len(selection["pool_indices"]) == r.n_labeled == 50 and len(val) == 10
    assert set(val) <= set(selection["pool_indices"])
    assert r.kept in ("fine-tuned", "start") and r.n_validation == 10
    result = json.loads((tmp_path / "imp/result.json").read_text())
    assert result["kept"] == r.kept
    if r.kept == "start":  # the shipped model is the DP model: same test accuracy
        assert r.test_accuracy == pytest.approx(r.start_accuracy)
    off = improve(ckpt, tmp_path / "off", SelectConfig(strategy="margin", n_labeled=50),
                  FinetuneConfig(epochs=3), task=task, guard=GuardConfig(0.0))  # fmt: skip
    assert off.kept == "fine-tuned" and off.n_validation == 0
