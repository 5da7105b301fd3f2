"""An interrupted AdaMix run resumes exactly: the rule's state across steps (b̂² of the
inverse-variance mix, and U when the subspace is fixed at the start) travels with the
checkpoint, so a kill then resume releases the model of the uninterrupted run."""

import numpy as np
import pytest
import torch

from dpal.privacy.ledger import Ledger
from dpal.training.config import TrainConfig
from dpal.training.trainer import train
from tests.conftest import make_images


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("subspace", ["every-step", "initial"])
def test_a_killed_adamix_run_resumes_to_the_uninterrupted_model(
    tiny_task, tmp_path, monkeypatch, subspace
):
    public = make_images(30, seed=5)
    np.savez(tmp_path / "public.npz", x=public.x[..., 0], y=public.y)
    cfg = dict(dataset="synthetic", epochs=3, batch_size=40, lr=0.5, noise_multiplier=1.0,
               deterministic_noise=True, public_set=str(tmp_path / "public.npz"),
               projection_rank=4, clip_quantile=0.5, public_mix="inverse-variance",
               projection_subspace=subspace, ema=0.0)  # fmt: skip
    full = train(TrainConfig(**cfg), tmp_path / "full", task=tiny_task, progress=False)

    import dpal.training.gradient_rules as rules

    real, calls = rules.adamix_gradient, {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 25:  # 10 steps an epoch: step 5 of epoch 3
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(rules, "adamix_gradient", dying)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**cfg), tmp_path / "run", task=tiny_task, progress=False)
    monkeypatch.setattr(rules, "adamix_gradient", real)
    resumed = train(
        TrainConfig(epochs=3, noise_multiplier=1.0),
        tmp_path / "run",
        task=tiny_task,
        resume=tmp_path / "run" / "checkpoints" / "epoch_002.pt",
        progress=False,
    )
    assert torch.equal(_params(resumed.model), _params(full.model))
    ledger = Ledger(tmp_path / "run" / "ledger.json")
    assert sum(e.params["steps"] for e in ledger.counted()) == 30  # none lost, none twice
    assert ledger.totals(delta=1e-5).epsilon_pld == pytest.approx(full.epsilon)
