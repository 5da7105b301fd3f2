"""AdaMix on a pretrained backbone (issue #14): the private model is a linear head on frozen
EfficientNet-Lite0 features; the few-shot model, the public gradients and every arm read the same
cached features; D_pub bought at random per class or by DiversePublic on the embeddings."""

import json

import numpy as np
import pytest
import torch

from dpal.cli import main
from dpal.core.errors import DpalError
from dpal.data.tasks import Task
from dpal.methods.adamix.fewshot import embedder, fewshot_split
from dpal.methods.adamix.runner import AdamixConfig, run_adamix
from dpal.privacy.ledger import Ledger
from dpal.training.config import TrainConfig
from dpal.training.finetune import FinetuneConfig, finetune
from tests.conftest import make_images


@pytest.fixture(scope="module")
def task() -> Task:
    def images(n: int, seed: int):
        return make_images(n, seed=seed, shape=(32, 32), classes=4)

    return Task(name="bands", private=images(160, 0), test=images(64, 1), public=images(96, 2))


def _probe(tmp_path, **kw) -> TrainConfig:
    return TrainConfig(model="efficientnet-lite0", finetune="linear-probe", image_size=32,
                       epochs=2, batch_size=40, lr=1.0, ema=0.0, epsilon=8.0, delta=1e-3,
                       feature_cache=str(tmp_path / "cache"), **kw)  # fmt: skip


def test_every_arm_runs_on_a_linear_head_over_frozen_features(task, tmp_path):
    # the rest: test_adamix_run; DP-SGD on features: backbones
    arms = ("public-only", "adamix", "adamix-initial-subspace")
    config = AdamixConfig(dataset="bands", public_per_class=3, epsilons=(8.0,), arms=arms,
                          fewshot=FinetuneConfig(epochs=20, batch_size=12, lr=0.05),
                          train=_probe(tmp_path), projection_rank=4)  # fmt: skip
    rows = run_adamix(config, tmp_path / "out", task=task, progress=False)
    assert [r["arm"] for r in rows] == [*arms, "snr"]
    by_arm = {r["arm"]: r for r in rows}
    assert by_arm["public-only"]["test_accuracy"] > 0.25 + 0.1  # 4 classes: it learned
    assert by_arm["adamix"]["epsilon"] <= 8.0 + 1e-6
    # the few-shot model is a head on 1,280 pooled features, and every DP arm starts from it
    state = torch.load(tmp_path / "out" / "seed0" / "fewshot.pt", weights_only=True)["state"]
    assert state["weight"].shape == (4, 1280)
    # the few-shot model trained on features: augmentation off, recorded as used
    cell = json.loads((tmp_path / "out" / "seed0" / "public-only" / "cell.json").read_text())
    assert cell["resolved"]["fewshot"]["augment"] == "none"
    run = tmp_path / "out" / "seed0" / "adamix-eps8.0" / "run"
    assert [e.kind for e in Ledger(run / "ledger.json").entries] == ["dpsgd", "dpsgd"]
    fixed = tmp_path / "out" / "seed0" / "adamix-initial-subspace-eps8.0" / "run"
    assert [e.kind for e in Ledger(fixed / "ledger.json").entries] == ["dpsgd", "dpsgd"]
    config_used = json.loads((fixed / "run.json").read_text())["config"]
    assert config_used["projection_subspace"] == "initial"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    assert all(m["adamix_clip"] > 0 for m in metrics)  # public gradients of the head on features
    assert json.loads((run / "run.json").read_text())["config"]["finetune"] == "linear-probe"


def test_diverse_public_buys_distinct_pool_images_without_their_labels(task, tmp_path):
    embed = embedder(_probe(tmp_path), task, progress=False)
    assert embed is not None
    _, bought = fewshot_split(task, 3, seed=0, holdout=0, selection="diverse-public", embed=embed)
    _, again = fewshot_split(task, 3, seed=0, holdout=0, selection="diverse-public", embed=embed)
    assert len(bought) == 12 and np.array_equal(bought.x, again.x)  # K × per_class, seeded
    pool_rows = {row.tobytes() for row in task.public.x}
    assert all(img.tobytes() in pool_rows for img in bought.x)
    assert len({img.tobytes() for img in bought.x}) == 12
    with pytest.raises(DpalError, match="efficientnet-lite0"):
        fewshot_split(task, 3, seed=0, holdout=0, selection="diverse-public", embed=None)


def test_diverse_public_drops_the_invalid_images_it_paid_for(task, tmp_path):
    valid = np.arange(len(task.public)) % 2 == 0
    polluted = Task(task.name, task.private, task.test, task.public, public_valid=valid)
    emb = np.random.default_rng(0).normal(size=(len(task.public), 8))
    _, bought = fewshot_split(polluted, 3, seed=0, holdout=0, selection="diverse-public",
                              embed=lambda _: emb)  # fmt: skip
    valid_rows = {row.tobytes() for row in task.public.x[valid]}
    assert 0 < len(bought) < 12 and all(img.tobytes() in valid_rows for img in bought.x)


def test_fine_tuning_on_features_refuses_augmentation(task):
    head = torch.nn.Linear(1280, 4)
    with pytest.raises(DpalError, match="cannot augment"):
        finetune(head, task.public, FinetuneConfig(epochs=1, augment="shift"),
                 inputs=lambda a: torch.zeros(len(a), 1280))  # fmt: skip


@pytest.mark.slow  # the options reach the runner: the API test above covers the mechanism
def test_the_command_line_runs_adamix_on_a_backbone(task, tmp_path, monkeypatch, capsys):
    import dpal.methods.adamix.runner as runner

    monkeypatch.setattr(runner, "load_task", lambda *a, **k: task)
    main(["adamix", "run", "--dataset", "bands", "--model", "efficientnet-lite0",
          "--image-size", "32", "--public-per-class", "2", "--epsilon", "8",
          "--arms", "public-only", "adamix", "--epochs", "1", "--batch-size", "40",
          "--ema", "0", "--feature-cache", str(tmp_path / "cache"),
          "--fewshot-selection", "diverse-public", "--out", str(tmp_path / "cli")])  # fmt: skip
    rows = json.loads((tmp_path / "cli" / "results.json").read_text())
    assert {r["arm"] for r in rows} == {"public-only", "adamix", "snr"}
    assert "| adamix | 8 |" in capsys.readouterr().out


@pytest.mark.slow  # backpropagates through EfficientNet's last block: ~100 s on 2 cores
def test_adamix_trains_the_last_blocks_and_head_the_second_setting(task, tmp_path):
    train = TrainConfig(model="efficientnet-lite0", finetune="last-blocks", image_size=32,
                        epochs=1, batch_size=40, lr=0.5, ema=0.0, epsilon=8.0, delta=1e-3,
                        feature_cache=str(tmp_path / "cache"))  # fmt: skip
    config = AdamixConfig(dataset="bands", public_per_class=3, epsilons=(8.0,),
                          arms=("public-only", "dp-finetune", "adamix"), projection_rank=4,
                          fewshot=FinetuneConfig(epochs=5, batch_size=12, lr=0.05),
                          train=train)  # fmt: skip
    rows = run_adamix(config, tmp_path / "out", task=task, progress=False)
    assert [r["arm"] for r in rows] == ["public-only", "dp-finetune", "adamix", "snr"]
    # the few-shot model, and so every DP arm's start, is the last block + feature conv + head
    state = torch.load(tmp_path / "out" / "seed0" / "fewshot.pt", weights_only=True)["state"]
    assert any(k.startswith("0.blocks.") for k in state) and state["1.weight"].shape == (4, 1280)
    run = tmp_path / "out" / "seed0" / "adamix-eps8.0" / "run"
    assert [(e.kind, e.status) for e in Ledger(run / "ledger.json").entries] == [("dpsgd", "done")]
    assert json.loads((run / "run.json").read_text())["config"]["finetune"] == "last-blocks"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    assert all(m["adamix_clip"] > 0 for m in metrics)
    snr = rows[-1]
    assert 0 < snr["captured"] <= 1 and snr["snr_projected"] > snr["snr_full"]
