"""`dpal adamix run` at toy scale: the few-shot public set, every arm on one network, the error
increase table, the SNR diagnostic, and AdaMix's DP-SGD schedule in the ledger as run."""

import json

import numpy as np
import pytest
import torch

from dpal.core.errors import DpalError
from dpal.data.tasks import Task
from dpal.methods.adamix.runner import DEFAULT_ARMS, AdamixConfig, fewshot_split, run_adamix
from dpal.privacy.ledger import Ledger
from dpal.training.checkpoint import list_checkpoints, load_checkpoint
from dpal.training.config import TrainConfig
from dpal.training.finetune import FinetuneConfig
from tests.conftest import make_images


@pytest.fixture
def task() -> Task:
    return Task(
        name="synthetic",
        private=make_images(300, seed=0),
        test=make_images(100, seed=1),
        public=make_images(200, seed=2),
    )


def test_fewshot_split_takes_k_per_class_from_the_pool_or_a_public_tail(task):
    priv_task, public = fewshot_split(task, 3, seed=0, holdout=100)
    assert np.bincount(public.y, minlength=10).tolist() == [3] * 10
    assert len(priv_task.private) == 300 and priv_task.public is None
    no_pool = Task(name="t", private=make_images(400, seed=0), test=make_images(10, seed=1))
    priv_task, public = fewshot_split(no_pool, 2, seed=0, holdout=150)
    assert len(priv_task.private) == 250 and len(public) == 20  # the tail is not private
    with pytest.raises(DpalError, match="fewer than"):
        fewshot_split(task, 500, seed=0, holdout=100)


@pytest.mark.slow  # every arm on a backbone head runs in test_adamix_backbone
def test_every_arm_runs_and_the_table_reports_error_increase(tmp_path, task):
    config = AdamixConfig(
        dataset="synthetic",
        public_per_class=3,
        epsilons=(4.0,),
        fewshot=FinetuneConfig(epochs=5, batch_size=10),
        train=TrainConfig(epochs=2, batch_size=50, lr=0.5, epsilon=1.0),
        projection_rank=4,
    )
    rows = run_adamix(config, tmp_path, task=task, progress=False)
    assert [r["arm"] for r in rows] == [*DEFAULT_ARMS, "snr"]
    for r in rows:
        if r["arm"] not in ("public-only", "non-private", "snr"):
            assert r["epsilon"] <= 4.0 + 1e-6
    snr = rows[-1]
    assert snr["snr_projected"] > snr["snr_full"]
    assert 0 < snr["captured"] <= 1 + 1e-6
    (entry,) = Ledger(tmp_path / "seed0" / "snr" / "ledger.json").entries
    assert entry.kind == "nonprivate"  # the diagnostic's read of private data is on the record
    table = (tmp_path / "results.md").read_text()
    assert "error increase" in table and "| adamix | 4 |" in table
    cfg = json.loads((tmp_path / "seed0" / "adamix-eps4.0" / "run" / "run.json").read_text())
    assert cfg["config"]["projection_rank"] == 4 and cfg["config"]["public_set"].endswith(
        "public.npz"
    )
    ledger = Ledger(tmp_path / "seed0" / "adamix-eps4.0" / "run" / "ledger.json")
    assert [e.kind for e in ledger.entries] == ["dpsgd", "dpsgd"]  # the schedule as run
    metrics = [json.loads(line) for line in (ledger.path.parent / "metrics.jsonl").open()]
    assert all(m["adamix_clip"] > 0 and 0 <= m["adamix_mix"] <= 1 for m in metrics)
    # every DP arm trains: its weights leave the few-shot initialisation
    start = torch.load(tmp_path / "seed0" / "fewshot.pt", weights_only=True)["state"]
    for arm in ("dp-finetune", "adamix-no-projection", "adamix"):
        ckpt = list_checkpoints(tmp_path / "seed0" / f"{arm}-eps4.0" / "run")[-1]["path"]
        end = load_checkpoint(ckpt)["model"]
        moved = sum(float((end[k] - start[k]).norm()) for k in start)
        assert moved > 1e-3, arm
    assert (tmp_path / "error_increase.png").exists()


def test_adamix_options_need_a_public_set():
    with pytest.raises(DpalError, match="--public-set"):
        TrainConfig(epsilon=1.0, projection_rank=8)
    with pytest.raises(DpalError, match="public-mix"):
        TrainConfig(epsilon=1.0, public_set="p.npz", public_mix=1.5)


@pytest.mark.slow  # your own module through AdaMix; every arm on a backbone head runs by default
def test_adamix_trains_your_own_module(tmp_path, task):
    from tests.test_backbones import make_user_net

    user = make_user_net(width=4, num_classes=10)
    before = {k: v.clone() for k, v in user.state_dict().items()}
    config = AdamixConfig(dataset="synthetic", public_per_class=2, epsilons=(8.0,),
                          arms=("public-only", "adamix"),
                          fewshot=FinetuneConfig(epochs=3, batch_size=10),
                          train=TrainConfig(epochs=1, batch_size=50, lr=0.5, epsilon=1.0),
                          projection_rank=4)  # fmt: skip
    rows = run_adamix(config, tmp_path, task=task, progress=False, model=user)
    assert [r["arm"] for r in rows] == ["public-only", "adamix", "snr"]
    run = json.loads((tmp_path / "seed0" / "adamix-eps8.0" / "run" / "run.json").read_text())
    assert run["config"]["model"].startswith("instance:tests.test_backbones")
    assert all(torch.equal(v, user.state_dict()[k]) for k, v in before.items())  # copies train
