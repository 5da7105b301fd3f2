"""The head's input standardised with random-process statistics: it centres and scales the
features, reads no private data (nothing in the ledger), survives checkpoints, and older
checkpoints and priors without it still load as the identity."""

import pytest
import torch

from dpal.core.errors import DpalError
from dpal.data.tasks import Task
from dpal.models.public_init import load_public_init, save_public_init
from dpal.models.registry import build_model
from dpal.models.standardize import random_process_inputs, standardize_from_random_process
from dpal.privacy.ledger import Ledger
from dpal.training.checkpoint import list_checkpoints, load_checkpoint
from dpal.training.config import TrainConfig
from dpal.training.trainer import train
from tests.conftest import make_images


def test_features_of_new_random_process_images_come_out_centred_and_unit_scale():
    torch.manual_seed(0)
    model = build_model("cnn-gn", (3, 16, 16), 10)
    raw = model.embed(random_process_inputs(512, (3, 16, 16), seed=7)).detach()
    assert raw.mean(0).abs().mean() > 3 * raw.std(0).mean()  # the offset the module removes
    standardize_from_random_process(model, (3, 16, 16), n=1024, seed=0)
    with torch.no_grad():
        held_out = model.standardize(
            model.embed(random_process_inputs(512, (3, 16, 16), seed=7))
        )  # other images
    assert held_out.mean(0).abs().max() < 0.35  # the mean of 1,024 images, off by sampling only
    assert (held_out.std(0) - 1).abs().max() < 0.35
    # the head reads the standardised features: same function class, a fixed affine map
    x = random_process_inputs(4, (3, 16, 16), seed=9)
    with torch.no_grad():
        expected = model.classifier(
            (model.embed(x) - model.standardize.shift) / model.standardize.scale
        )
        assert torch.allclose(model(x), expected)


def test_models_without_the_module_are_refused():
    with pytest.raises(DpalError, match="cnn-gn or wrn-16-4"):
        standardize_from_random_process(build_model("cnn-tanh", (1, 28, 28), 10), (1, 28, 28))


def test_older_checkpoints_and_priors_load_as_the_identity(tmp_path):
    model = build_model("cnn-gn", (3, 16, 16), 10)
    old = {k: v for k, v in model.state_dict().items() if not k.startswith("standardize.")}
    fresh = build_model("cnn-gn", (3, 16, 16), 10)
    fresh.load_state_dict(old)  # strict: the missing buffers are filled in
    assert torch.equal(fresh.standardize.shift, torch.zeros(64))
    assert torch.equal(fresh.standardize.scale, torch.ones(64))
    save_public_init(
        tmp_path / "p.pt",
        model,
        model_name="cnn-gn",
        image_shape=(3, 16, 16),
        learned_from="test",
        with_head=False,
    )
    payload = torch.load(tmp_path / "p.pt", weights_only=True)
    payload["state"] = {k: v for k, v in payload["state"].items() if "standardize" not in k}
    torch.save(payload, tmp_path / "old.pt")
    load_public_init(fresh, tmp_path / "old.pt", "cnn-gn")  # a prior saved before the module


def test_dp_training_with_standardisation_costs_nothing_extra_and_keeps_it(tmp_path):
    shape = (16, 16, 3)
    task = Task(
        name="synthetic-rgb",
        private=make_images(200, seed=0, shape=shape),
        test=make_images(50, seed=1, shape=shape),
    )
    config = TrainConfig(
        dataset="synthetic-rgb",
        model="cnn-gn",
        epochs=2,
        batch_size=50,
        lr=0.5,
        epsilon=4.0,
        standardize_features=True,
        ema=0.0,
    )
    result = train(config, tmp_path / "run", task=task, progress=False)
    assert result.epsilon <= 4.0 + 1e-6
    assert [e.kind for e in Ledger(tmp_path / "run" / "ledger.json").entries] == ["dpsgd"] * 2
    state = load_checkpoint(list_checkpoints(tmp_path / "run")[-1]["path"])
    # the same model before training, standardised the same way: the buffers did not move
    torch.manual_seed(config.seed)
    before = build_model("cnn-gn", (3, 16, 16), 10)
    standardize_from_random_process(before, (3, 16, 16), seed=config.seed)
    assert before.standardize.shift.abs().sum() > 0
    assert torch.equal(state["model"]["standardize.shift"], before.standardize.shift)
    assert torch.equal(state["model"]["standardize.scale"], before.standardize.scale)
    assert not any("standardize" in n for n, _ in before.named_parameters())
