"""What a released file holds, where the noise comes from, and how checkpoints are loaded."""

import json
import math
import pickle

import pytest
import torch

from dpal.core.errors import DpalError
from dpal.privacy import noise_source
from dpal.privacy.ledger import Ledger
from dpal.training.checkpoint import (
    RELEASE_FORMAT,
    list_checkpoints,
    load_checkpoint,
    resume_state_path,
)
from dpal.training.config import TrainConfig
from dpal.training.trainer import VALIDATION_KEY, train

CFG = dict(dataset="synthetic", epochs=2, batch_size=40, lr=0.5, noise_multiplier=1.0, ema=0.9)


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _tensors(v)


def test_released_file_holds_weights_and_summary_not_training_state(tiny_task, tmp_path):
    result = train(TrainConfig(**CFG), tmp_path, task=tiny_task, progress=False)
    ckpt = tmp_path / "checkpoints" / "epoch_002.pt"
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert set(raw) == {"format", "model", "summary"} and raw["format"] == RELEASE_FORMAT
    assert set(raw["model"]) == set(result.model.state_dict())  # the weights, nothing more
    assert all(t.is_floating_point() for t in _tensors(raw))  # no generator state (uint8)
    assert not {"noise_rng", "sampler_rng", "optimizer"} & set(raw["summary"])
    for k, v in result.model.state_dict().items():  # the EMA weights are what is released
        assert torch.equal(raw["model"][k], v), k
    # the private resume state lives apart, marked, and holds no noise state by default
    state = torch.load(resume_state_path(ckpt), map_location="cpu", weights_only=True)
    assert {"sampler_rng", "optimizer", "model"} <= set(state)
    assert "noise_rng" not in state
    assert "Never share it" in (tmp_path / "private" / "README.txt").read_text()


def test_default_noise_is_fresh_and_deterministic_noise_is_reproducible(tiny_task, tmp_path):
    a = train(TrainConfig(**CFG), tmp_path / "a", task=tiny_task, progress=False)
    b = train(TrainConfig(**CFG), tmp_path / "b", task=tiny_task, progress=False)
    assert not torch.equal(_params(a.model), _params(b.model))  # same --seed, other noise
    det = {**CFG, "deterministic_noise": True}
    c = train(TrainConfig(**det), tmp_path / "c", task=tiny_task, progress=False)
    d = train(TrainConfig(**det), tmp_path / "d", task=tiny_task, progress=False)
    assert torch.equal(_params(c.model), _params(d.model))
    # the ledger says which source produced each release
    assert {e.noise for e in Ledger(tmp_path / "a" / "ledger.json").entries} == {
        noise_source.OS_ENTROPY
    }
    assert {e.noise for e in Ledger(tmp_path / "c" / "ledger.json").entries} == {
        noise_source.SEEDED
    }


def test_holdout_accuracy_is_ledgered_as_a_nonprivate_read(tiny_task, tmp_path):
    cfg = TrainConfig(**{**CFG, "holdout": 50})
    result = train(cfg, tmp_path, task=tiny_task, progress=False)
    ledger = Ledger(tmp_path / "ledger.json")
    reads = [e for e in ledger.entries if e.mechanism == "holdout:validation-accuracy"]
    assert [e.kind for e in reads] == ["nonprivate", "nonprivate"]  # one per epoch
    assert all(e.status == "done" and "not DP" in e.note for e in reads)
    assert math.isinf(ledger.totals(delta=1e-5).epsilon_pld)  # the run released a non-DP number
    # the model never read those images: its own ε is DP-SGD's, and the release has no val acc
    summary = list_checkpoints(tmp_path)[-1]
    assert math.isfinite(summary["epsilon"]) and "validation_accuracy" not in json.dumps(summary)
    assert not set(summary["ledger_entries"]) & {e.id for e in reads}
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(0 <= m[VALIDATION_KEY] <= 1 for m in metrics)
    assert result.history[-1][VALIDATION_KEY] == metrics[-1][VALIDATION_KEY]


class _Payload:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_loading_refuses_a_checkpoint_that_would_run_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "epoch_001.pt"
    torch.save({"model": {}, "summary": {}, "x": _Payload()}, bad)
    with pytest.raises(DpalError, match="refused"):
        load_checkpoint(bad)
    assert not (tmp_path / "PWNED").exists()
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(DpalError):
        load_checkpoint(raw)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("content", [b"not a checkpoint", None, "list", "old"])
def test_a_file_that_is_not_a_dpal_checkpoint_gets_a_clear_error(tmp_path, content):
    path = tmp_path / "x.pt"
    if content is None:
        path.mkdir()
    elif content == "list":
        torch.save([1, 2], path)
    elif content == "old":
        torch.save({"model": {}, "summary": {}}, path)  # a release without its format
    else:
        path.write_bytes(content)
    with pytest.raises(DpalError, match=r"dpal checkpoint|folder|format"):
        load_checkpoint(path)


def test_a_release_alone_cannot_resume(tiny_task, tmp_path):
    train(TrainConfig(**{**CFG, "epochs": 1}), tmp_path / "run", task=tiny_task, progress=False)
    shared = tmp_path / "shared" / "checkpoints"
    shared.mkdir(parents=True)
    (shared / "epoch_001.pt").write_bytes(
        (tmp_path / "run" / "checkpoints" / "epoch_001.pt").read_bytes()
    )
    with pytest.raises(DpalError, match="no resume state"):
        train(TrainConfig(**CFG), tmp_path / "fork", task=tiny_task,
              resume=shared / "epoch_001.pt", progress=False)  # fmt: skip


def test_checkpoints_of_the_earlier_one_file_layout_still_load_and_resume(tiny_task, tmp_path):
    """dpal ≤ 0.1 wrote one file per epoch (release, iterate and training state together, no
    format, no ledger snapshot): it is still read, evaluated and resumed from — the resumed
    epochs are written in the new layout, with fresh OS-entropy noise."""
    from dpal.methods.active_learning.improve import load_released_model
    from dpal.training.checkpoint import load_resume_state
    from dpal.training.lineage import open_checked

    out = tmp_path / "run"
    train(TrainConfig(**CFG), out, task=tiny_task, progress=False)
    for epoch in (1, 2):  # rewrite both epochs as the earlier layout wrote them
        ckpt = out / "checkpoints" / f"epoch_{epoch:03d}.pt"
        release, state = load_checkpoint(ckpt), load_resume_state(ckpt)
        summary = {k: v for k, v in release["summary"].items() if k != "ledger_snapshot"}
        old = {"model": state["model"], "release": release["model"],
               "optimizer": state["optimizer"], "ema": state["ema"],
               "sampler_rng": state["sampler_rng"], "augment_rng": state["augment_rng"],
               "noise_rng": state["sampler_rng"], "summary": summary}  # fmt: skip
        torch.save(old, ckpt)
        ckpt.with_suffix(".json").write_text(json.dumps(summary))
        resume_state_path(ckpt).unlink()
    legacy = out / "checkpoints" / "epoch_002.pt"
    assert load_released_model(legacy).summary["epoch"] == 2
    eps = open_checked(out).totals(delta=1e-5).epsilon_pld
    resumed = train(TrainConfig(**{**CFG, "epochs": 3}), out, task=tiny_task, resume=legacy,
                    progress=False)  # fmt: skip
    assert (
        resumed.epsilon > eps and resume_state_path(out / "checkpoints" / "epoch_003.pt").exists()
    )


def test_the_cli_says_why_a_holdout_run_totals_infinity(npz_dataset, tmp_path, capsys):
    from dpal.cli import main

    out = tmp_path / "run"
    argv = ["train", "--dataset", npz_dataset, "--noise-multiplier", "1", "--epochs", "1",
            "--batch-size", "40", "--holdout", "50", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    assert "the run's total is ε = ∞" in capsys.readouterr().out
    assert main(["ledger", str(out)]) == 0
    assert "non-private reads of private data: holdout:validation-accuracy" in (
        capsys.readouterr().out
    )
