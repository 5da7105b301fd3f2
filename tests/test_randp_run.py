"""`dpal randp run` at toy scale: both recipes' shapes, the baselines in the same runner, one
ledger covering the linear-probe and fine-tuning phases, resumable cells."""

import json
import shutil
from dataclasses import replace

import pytest

from dpal.core.errors import DpalError
from dpal.data.tasks import Task
from dpal.methods.randp.run import RECIPES, RandpConfig, run_randp
from dpal.privacy.ledger import Ledger
from tests.conftest import make_images


@pytest.fixture
def color_task() -> Task:
    shape = (16, 16, 3)
    return Task(
        name="synthetic-rgb",
        private=make_images(200, seed=0, shape=shape),
        test=make_images(100, seed=1, shape=shape),
    )


@pytest.mark.slow  # the full recipe's few steps run by default
def test_cpu_recipe_with_baselines_at_toy_scale(tmp_path, color_task):
    recipe = RECIPES["cpu"]
    config = RandpConfig(
        dataset="synthetic-rgb",
        epsilons=(2.0, 8.0),
        prior=replace(recipe.prior, steps=4, batch_size=16, pool=32),
        train=replace(recipe.train, epochs=3, linear_probe_epochs=1, batch_size=50),
    )
    rows = run_randp(config, tmp_path, task=color_task, progress=False)
    arms = [(r["arm"], r["epsilon_target"]) for r in rows]
    assert arms == [
        ("dp-randp", 2.0),
        ("dp-scratch", 2.0),
        ("non-private", None),
        ("dp-randp", 8.0),
        ("dp-scratch", 8.0),
    ]
    for r in rows:
        if r["epsilon_target"] is not None:
            assert r["epsilon"] <= r["epsilon_target"] + 1e-6
    # the prior is learned once per seed and read by the DP-RandP runs only
    assert (tmp_path / "prior" / "seed0.pt").exists()
    randp_run = tmp_path / "seed0" / "dp-randp-eps2.0" / "run"
    run_cfg = json.loads((randp_run / "run.json").read_text())["config"]
    assert run_cfg["init"].endswith("prior/seed0.pt") and run_cfg["linear_probe_epochs"] == 1
    scratch = json.loads(
        (tmp_path / "seed0" / "dp-scratch-eps2.0" / "run" / "run.json").read_text()
    )
    assert scratch["config"]["init"] is None and scratch["config"]["epochs"] == 3
    # both phases in one ledger: 3 epochs of one DP-SGD schedule, nothing for phase I
    entries = Ledger(randp_run / "ledger.json").entries
    assert [e.kind for e in entries] == ["dpsgd"] * 3
    assert (tmp_path / "results.md").exists() and (tmp_path / "accuracy_vs_epsilon.png").exists()
    again = run_randp(config, tmp_path, task=color_task, progress=False)  # all cells finished
    assert again == rows
    # a stored prior is reused only by a run that asks for the same Phase I
    shutil.rmtree(tmp_path / "seed0" / "dp-randp-eps2.0")
    other = replace(config, prior=replace(config.prior, lr=0.5))
    with pytest.raises(DpalError, match="another Phase I configuration"):
        run_randp(other, tmp_path, task=color_task, progress=False)


def test_full_recipe_runs_a_few_steps_at_toy_scale(tmp_path, color_task):
    recipe = RECIPES["full"]
    assert recipe.train.model == "wrn-16-4" and recipe.train.augment_copies == 16
    assert recipe.train.batch_size == 4096
    config = RandpConfig(
        dataset="synthetic-rgb",
        epsilons=(8.0,),
        recipe="full",
        first_seed=1,  # a second process can take seed 1 into the same folder
        arms=("dp-randp",),
        prior=replace(recipe.prior, steps=1, batch_size=4),
        train=replace(
            recipe.train, epochs=2, linear_probe_epochs=1, batch_size=40, augment_copies=2
        ),
    )
    (row,) = run_randp(config, tmp_path, task=color_task, progress=False)
    assert row["arm"] == "dp-randp" and 0 <= row["test_accuracy"] <= 1
    assert (tmp_path / "prior" / "seed1.pt").exists()
    assert (tmp_path / "seed1" / "dp-randp-eps8.0" / "cell.json").exists()
    assert not (tmp_path / "seed0").exists()


def test_bad_recipe_or_arm():
    with pytest.raises(DpalError, match="recipe"):
        RandpConfig(recipe="gpu")
    with pytest.raises(DpalError, match="arms"):
        RandpConfig(arms=("dp-magic",))


def test_cli_passes_phase_i_steps_arms_seeds_and_standardisation(monkeypatch, tmp_path):
    import dpal.methods.randp.run as randp_run
    from dpal.cli import main

    seen = []
    monkeypatch.setattr(randp_run, "run_randp", lambda config, out, **kw: seen.append(config) or [])
    argv = ["randp", "run", "--dataset", "mnist", "--epsilon", "2", "--out", str(tmp_path)]
    main([*argv, "--prior-steps", "8000", "--arms", "dp-randp", "--first-seed", "1"])
    main([*argv, "--no-standardize-features"])
    main(argv)
    first, off, default = seen
    assert first.resolved()[0].steps == 8000 and first.arms == ("dp-randp",)
    assert first.first_seed == 1 and first.epsilons == (2.0,)
    assert first.resolved()[1].standardize_features  # the cpu recipe's choice
    assert not off.resolved()[1].standardize_features
    assert default.prior is None and default.train is None  # the recipe's, untouched
    assert default.resolved()[0].steps == RECIPES["cpu"].prior.steps


def test_dp_randp_learns_its_prior_on_your_own_module(tmp_path, color_task):
    import torch
    from torch import nn

    class Mine(nn.Module):  # no embed(), no feature_dim: its last Linear's input is used
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GroupNorm(2, 4),
                                      nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())  # fmt: skip
            self.out = nn.Linear(16, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.body(x))

    mine = Mine()
    before = {k: v.clone() for k, v in mine.state_dict().items()}
    recipe = RECIPES["cpu"]
    config = RandpConfig(dataset="synthetic-rgb", epsilons=(8.0,), arms=("dp-randp",),
                         prior=replace(recipe.prior, steps=3, batch_size=16, pool=32),
                         train=replace(recipe.train, epochs=2, linear_probe_epochs=1,
                                       batch_size=50, standardize_features=False))  # fmt: skip
    (row,) = run_randp(config, tmp_path, task=color_task, progress=False, model=mine)
    assert row["epsilon"] <= 8.0 + 1e-6
    prior = torch.load(tmp_path / "prior" / "seed0.pt", weights_only=True)
    assert prior["model"].startswith("instance:") and "out.weight" not in prior["state"]
    moved = (prior["state"]["body.0.weight"] - before["body.0.weight"]).norm()
    assert float(moved) > 0  # phase I trained the body on random-process images
    assert all(torch.equal(v, mine.state_dict()[k]) for k, v in before.items())  # copies train
