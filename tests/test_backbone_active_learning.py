"""Active learning on a pretrained backbone (issue #13, item 5): selection works on the
backbone's embeddings, fine-tuning trains the head on cached features, and the release of the
improvement loads back as the whole image classifier."""

import pytest
import torch

from dpal.data.tasks import Task
from dpal.methods.active_learning.guard import GuardConfig
from dpal.methods.active_learning.improve import SelectConfig, improve, load_released_model
from dpal.privacy.ledger import Ledger
from dpal.training.config import TrainConfig
from dpal.training.evaluate import accuracy
from dpal.training.finetune import FinetuneConfig
from dpal.training.trainer import train
from tests.conftest import make_images

# one worker builds the module fixture once (make test: pytest -n 2 --dist loadgroup)
pytestmark = pytest.mark.xdist_group("backbone-probe")


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")

    def images(n: int, seed: int):
        return make_images(n, seed=seed, shape=(32, 32), classes=4)

    task = Task(name="bands", private=images(160, 0), test=images(64, 1), public=images(120, 2))
    config = TrainConfig(dataset="bands", model="efficientnet-lite0", image_size=32, epochs=2,
                         batch_size=40, lr=1.0, ema=0.0, epsilon=8.0, delta=1e-3,
                         feature_cache=str(root / "cache"))  # fmt: skip
    train(config, root / "run", task=task, progress=False)
    return task, root / "run" / "checkpoints" / "epoch_002.pt", root


@pytest.mark.parametrize("strategy", ["margin", "diverse-public", "near-private"])
def test_improve_selects_on_embeddings_and_tunes_the_head_on_features(probe, strategy):
    task, ckpt, root = probe
    start = load_released_model(ckpt)
    assert start.network.trainable.weight.shape == (4, 1280)  # the head, on pooled features
    config = SelectConfig(strategy=strategy, n_labeled=20, k=60, n_each=5, seed=0,
                          epsilon_pca=1.0, epsilon_support=1.0, delta=1e-3)  # fmt: skip
    out = root / f"improve-{strategy}"
    result = improve(ckpt, out, config, FinetuneConfig(epochs=20, batch_size=10, lr=0.05),
                     task=task, guard=GuardConfig(validation_fraction=0.0))  # fmt: skip
    assert result.n_labeled == 20 and len(set(result.selected.tolist())) == 20
    kinds = [e.mechanism for e in Ledger(out / "ledger.json").entries]
    assert kinds.count("dpsgd:train") == 2  # the lineage: two epochs of the DP linear probe
    assert len(kinds) == 2 + (2 if strategy == "near-private" else 0)  # density, support counts
    released = load_released_model(out / "model.pt")  # the whole classifier, on images
    assert accuracy(released.model, task.test) == pytest.approx(result.test_accuracy, abs=1e-6)
    moved = (released.network.trainable.weight - start.network.trainable.weight).detach().norm()
    assert float(moved) > 0 and result.kept == "fine-tuned"  # tuned on the bought labels
    assert isinstance(released.model[0], torch.nn.Module) and len(released.model) == 4


@pytest.mark.slow  # improve on features is tested above; this is the experiment's wiring
def test_the_experiment_runner_runs_on_a_backbone_probe(probe, tmp_path):
    from dataclasses import replace

    from dpal.methods.active_learning.experiment import CIFAR10_OFFLINE, run_experiment

    task, _, root = probe
    config = replace(
        CIFAR10_OFFLINE,
        dataset="bands",
        train=replace(
            CIFAR10_OFFLINE.train,
            image_size=32,
            epochs=3,
            batch_size=40,
            feature_cache=str(root / "cache"),
            delta=1e-3,
        ),
        epsilon_dp=8.0,
        n_labeled=(20,),
        extra_candidates=40,
        n_each=5,
        near_private_from="final",
        methods=("random", "near-private"),  # every strategy on features: the test above
        finetune=FinetuneConfig(augment="none", epochs=10, batch_size=10),
    )
    rows = run_experiment(config, tmp_path, task=task, progress=False)
    methods = [r["method"] for r in rows]
    assert methods == ["DP baseline", "random", "near-private"]
    near = rows[-1]
    assert near["epsilon_total"] > near["epsilon_dp"]  # DP-PCA and support counts composed
    assert all(0 <= r["test_accuracy"] <= 1 for r in rows)
