"""The training loop: determinism, checkpoints with ε, resume without privacy steps lost or
counted twice, the non-private switch, and config errors."""

import json
import math

import pytest
import torch

from dpal.core.errors import DpalError
from dpal.privacy.accounting import DpsgdSchedule, epsilon
from dpal.privacy.ledger import Ledger
from dpal.training.checkpoint import list_checkpoints
from dpal.training.config import TrainConfig
from dpal.training.trainer import train

CFG = dict(
    dataset="synthetic",
    epochs=2,
    batch_size=40,
    lr=0.5,
    noise_multiplier=1.0,
    ema=0.9,
    deterministic_noise=True,  # bit-identical runs and resumes: these tests compare models
)


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_same_seed_identical_model_and_checkpoints_carry_epsilon(tiny_task, tmp_path):
    a = train(TrainConfig(**CFG), tmp_path / "a", task=tiny_task, progress=False)
    b = train(TrainConfig(**CFG), tmp_path / "b", task=tiny_task, progress=False)
    assert torch.equal(_params(a.model), _params(b.model))
    c = train(TrainConfig(**{**CFG, "seed": 1}), tmp_path / "c", task=tiny_task, progress=False)
    assert not torch.equal(_params(a.model), _params(c.model))
    ckpts = list_checkpoints(tmp_path / "a")
    assert [c["epoch"] for c in ckpts] == [1, 2]
    q = 40 / 400
    want = epsilon(
        DpsgdSchedule(noise_multiplier=1.0, sample_rate=q, steps=2 * 10).event(), delta=1e-5
    )
    assert ckpts[-1]["epsilon"] == pytest.approx(want)
    assert ckpts[0]["epsilon"] < ckpts[1]["epsilon"]
    assert 0 <= ckpts[-1]["test_accuracy"] <= 1
    # the ledger holds exactly the schedule that ran, and its total equals the lineage ε
    ledger = Ledger(tmp_path / "a" / "ledger.json")
    assert [e.status for e in ledger.entries] == ["done", "done"]
    assert all(
        e.params == {"noise_multiplier": 1.0, "sample_rate": q, "steps": 10} for e in ledger.entries
    )
    assert ledger.totals(delta=1e-5).epsilon_pld == pytest.approx(want)


def test_learns_on_synthetic_data(tiny_task, tmp_path):
    cfg = TrainConfig(**{**CFG, "epochs": 4, "noise_multiplier": 0.5, "lr": 1.0})
    assert train(cfg, tmp_path, task=tiny_task, progress=False).test_accuracy > 0.5


def test_resume_after_crash_equals_uninterrupted(tiny_task, tmp_path, monkeypatch):
    full = train(
        TrainConfig(**{**CFG, "epochs": 3}), tmp_path / "full", task=tiny_task, progress=False
    )

    # Crash in the middle of epoch 3: after its ledger entry is written, before its checkpoint.
    import dpal.training.gradient_rules as rules

    real = rules.private_gradient
    calls = {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 25:  # 10 steps an epoch: step 5 of epoch 3
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(rules, "private_gradient", dying)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**{**CFG, "epochs": 3}), tmp_path / "run", task=tiny_task, progress=False)
    monkeypatch.setattr(rules, "private_gradient", real)
    ledger = Ledger(tmp_path / "run" / "ledger.json")
    assert [e.status for e in ledger.entries] == ["done", "done", "pending"]  # over-counts

    resumed = train(
        TrainConfig(epochs=3, noise_multiplier=1.0),
        tmp_path / "run",
        task=tiny_task,
        resume=tmp_path / "run" / "checkpoints" / "epoch_002.pt",
        progress=False,
    )
    assert torch.equal(_params(resumed.model), _params(full.model))
    ledger = Ledger(tmp_path / "run" / "ledger.json")
    assert [e.status for e in ledger.entries] == ["done", "done", "void", "done"]
    steps = sum(e.params["steps"] for e in ledger.counted())
    assert steps == 30  # three epochs: none lost, none counted twice
    assert ledger.totals(delta=1e-5).epsilon_pld == pytest.approx(full.epsilon)


def test_resume_from_an_earlier_checkpoint_forks(tiny_task, tmp_path):
    train(TrainConfig(**{**CFG, "epochs": 3}), tmp_path / "run", task=tiny_task, progress=False)
    early = tmp_path / "run" / "checkpoints" / "epoch_001.pt"
    with pytest.raises(DpalError, match="fork"):
        train(TrainConfig(**CFG), tmp_path / "run", task=tiny_task, resume=early, progress=False)
    fork = train(
        TrainConfig(**CFG), tmp_path / "fork", task=tiny_task, resume=early, progress=False
    )
    ledger = Ledger(tmp_path / "fork" / "ledger.json")
    # the parent's three released epochs stay counted; the fork adds its own epoch 2
    assert sum(e.params["steps"] for e in ledger.counted()) == 40
    assert fork.history[-1]["epoch"] == 2


def test_refuses_to_overwrite_a_run(tiny_task, tmp_path):
    train(TrainConfig(**{**CFG, "epochs": 1}), tmp_path, task=tiny_task, progress=False)
    with pytest.raises(DpalError, match="already holds a run"):
        train(TrainConfig(**{**CFG, "epochs": 1}), tmp_path, task=tiny_task, progress=False)


def test_target_epsilon_is_met(tiny_task, tmp_path):
    cfg = TrainConfig(**{**CFG, "noise_multiplier": None, "epsilon": 2.0})
    result = train(cfg, tmp_path, task=tiny_task, progress=False)
    assert 1.95 < result.epsilon <= 2.0


def test_non_private_is_one_flag_and_infinite_in_the_ledger(tiny_task, tmp_path):
    cfg = TrainConfig(dataset="synthetic", epochs=2, batch_size=40, lr=0.5, private=False)
    result = train(cfg, tmp_path, task=tiny_task, progress=False)
    assert result.epsilon == float("inf") and result.test_accuracy > 0.5
    assert Ledger(tmp_path / "ledger.json").entries[0].kind == "nonprivate"
    summary = json.loads((tmp_path / "checkpoints" / "epoch_002.json").read_text())
    assert summary["noise_multiplier"] is None


def test_nonprivate_clip_moves_by_at_most_lr_times_clip_a_step(tiny_task, tmp_path):
    """The baselines' non-private update: each example's gradient clipped at C, averaged, no
    noise — so one step moves the weights by at most lr·C."""
    from dpal.models.registry import build_model
    from dpal.training.checkpoint import load_checkpoint

    cfg = TrainConfig(
        dataset="synthetic",
        epochs=1,
        batch_size=40,
        lr=0.5,
        clip=1e-3,
        ema=0.0,
        private=False,
        nonprivate_clip=True,
    )
    torch.manual_seed(cfg.seed)
    start = build_model(cfg.model, tiny_task.image_shape, tiny_task.num_classes).state_dict()
    train(cfg, tmp_path, task=tiny_task, progress=False)
    end = load_checkpoint(list_checkpoints(tmp_path)[-1]["path"])["model"]
    moved = math.sqrt(sum(float((end[k] - start[k]).square().sum()) for k in start))
    steps = math.ceil(len(tiny_task.private) / cfg.batch_size)
    assert 0 < moved <= steps * cfg.lr * cfg.clip * (1 + 1e-4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(epsilon=1.0, nonprivate_clip=True), "non-private runs"),
        (dict(epsilon=0.0), "positive"),
        (dict(epsilon=-2.0), "positive"),
        (dict(epsilon=1.0, delta=1.0), "delta"),
        (dict(epsilon=1.0, noise_multiplier=1.0), "exactly one"),
        (dict(), "exactly one"),
        (dict(epsilon=1.0, batch_size=0), "batch-size"),
        (dict(epsilon=1.0, clip=0.0), "clip"),
        (dict(epsilon=1.0, private=False), "non-private"),
        (dict(noise_multiplier=1e-6), "below 0.1"),
    ],
)
def test_bad_config(kwargs, message):
    with pytest.raises(DpalError, match=message):
        TrainConfig(**kwargs)


def test_linear_probe_epochs_train_the_head_first_under_one_schedule(tiny_task, tmp_path):
    """DP-RandP's phases II and III in one run: epoch 1 moves only the head, epoch 2 every
    layer; one σ and q throughout, so the ledger's ε covers both phases."""
    from dpal.models.registry import build_model
    from dpal.training.checkpoint import load_checkpoint

    config = TrainConfig(
        dataset="synthetic",
        model="cnn-gn",
        epochs=2,
        batch_size=50,
        lr=0.5,
        epsilon=8.0,
        linear_probe_epochs=1,
        ema=0.0,
    )
    train(config, tmp_path / "run", task=tiny_task, progress=False)
    torch.manual_seed(config.seed)
    model = build_model("cnn-gn", (1, 28, 28), 10)
    init = model.state_dict()
    trained = {n for n, _ in model.named_parameters()}
    after = [load_checkpoint(c["path"])["model"] for c in list_checkpoints(tmp_path / "run")]
    for k, v in init.items():
        if k not in trained:  # fixed buffers (the head's input standardisation) never move
            assert torch.equal(after[1][k], v), k
            continue
        moved_in_probe = not torch.equal(after[0][k], v)
        assert moved_in_probe == k.startswith("classifier."), k
        if not k.startswith("classifier."):
            assert not torch.equal(after[1][k], after[0][k]), k  # phase III trains it
    entries = Ledger(tmp_path / "run" / "ledger.json").entries
    assert len({(e.params["noise_multiplier"], e.params["sample_rate"]) for e in entries}) == 1
    with pytest.raises(DpalError, match="linear-probe-epochs"):
        TrainConfig(epochs=2, epsilon=1.0, linear_probe_epochs=3)
