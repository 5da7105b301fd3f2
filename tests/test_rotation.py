"""Rotation pre-training on public images and the SVHN path (Figure 2) on files in SVHN's own
format: pre-train on `extra`, DP-SGD from it on `train`, active learning with `extra` as pool."""

import json

import numpy as np
import pytest
import scipy.io
import torch

from dpal.cli import main
from dpal.core.errors import DpalError
from dpal.methods.active_learning.experiment import ExperimentConfig
from dpal.models.public_init import load_public_init
from dpal.models.registry import build_model
from dpal.privacy.ledger import Ledger
from dpal.reproduce.configs import Fig2Config
from dpal.reproduce.figures import reproduce
from dpal.training.config import TrainConfig
from dpal.training.finetune import FinetuneConfig
from dpal.training.rotation import RotationConfig, rotated, rotation_pretrain
from tests.conftest import make_images


def test_rotations_are_the_four_quarter_turns_with_their_labels():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    turned, labels = rotated(x)
    assert turned.shape == (8, 3, 4, 4) and labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert torch.equal(turned[:2], x)
    assert torch.equal(torch.rot90(turned[6:], 1, dims=(-2, -1)), x)  # 270° + 90° = identity
    with pytest.raises(DpalError, match="square"):
        rotated(torch.zeros(1, 1, 4, 5))


def test_pretraining_learns_rotations_and_initialises_all_but_the_head(tmp_path):
    public = make_images(600, seed=3, shape=(32, 32, 3))
    path = rotation_pretrain(
        public, RotationConfig(epochs=3, batch_size=32, lr=0.05, max_images=400), tmp_path / "r.pt"
    )
    saved = torch.load(path, weights_only=True)
    assert saved["rotation_accuracy_last_epoch"] > 0.6  # chance: 0.25
    model = build_model("cnn-tanh", (3, 32, 32), 10)
    head_before = model.classifier.weight.clone()
    load_public_init(model, path, "cnn-tanh")
    for k, v in saved["state"].items():
        assert torch.equal(model.state_dict()[k], v)
    assert torch.equal(model.classifier.weight, head_before)  # the 10-way head stays fresh
    with pytest.raises(DpalError, match="cnn-relu"):
        load_public_init(build_model("cnn-relu", (3, 32, 32), 10), path, "cnn-relu")
    with pytest.raises(DpalError, match="shape"):
        load_public_init(build_model("cnn-tanh", (1, 28, 28), 10), path, "cnn-tanh")


def _write_svhn(root, splits):
    (root / "svhn").mkdir(parents=True)
    for split, n, seed in splits:
        arrays = make_images(n, seed=seed, shape=(32, 32, 3))
        digits = np.where(arrays.y == 0, 10, arrays.y)  # SVHN's label for the digit 0
        scipy.io.savemat(
            root / "svhn" / f"{split}_32x32.mat",
            {"X": np.transpose(arrays.x, (1, 2, 3, 0)), "y": digits[:, None]},
        )


@pytest.mark.slow  # rotation pretraining is tested by default; this is the SVHN file path
def test_svhn_path_end_to_end_on_files_in_svhn_format(tmp_path):
    data = tmp_path / "data"
    _write_svhn(data, (("train", 300, 0), ("test", 100, 1), ("extra", 300, 2)))
    config = Fig2Config(
        experiment=ExperimentConfig(
            dataset="svhn",
            epsilon_dp=6.0,
            train=TrainConfig(dataset="svhn", epsilon=6.0, epochs=2, batch_size=40, lr=0.5),
            n_labeled=(20,),
            methods=("random", "diverse-public", "near-private"),
            near_private_from="final",
            extra_candidates=50,
            finetune=FinetuneConfig(epochs=2, batch_size=16),
        ),
        rotation=RotationConfig(epochs=1, batch_size=32),
    )
    out = tmp_path / "out"
    rows = reproduce("fig2", config, out, data_dir=str(data), progress=False)
    assert {r["method"] for r in rows} == {
        "DP baseline",
        "random",
        "diverse-public",
        "near-private",
    }
    assert (out / "fig2" / "fig2.png").exists()
    weights = out / "pretrain" / "svhn-rotation-cnn-tanh-seed0.pt"
    assert weights.exists()
    dp = out / "dp" / "svhn-eps6.0-seed0"
    assert json.loads((dp / "run.json").read_text())["config"]["init"] == str(weights)
    # pre-training read only public images: the DP run's ledger holds DP-SGD and nothing else
    assert {e.kind for e in Ledger(dp / "ledger.json").entries} == {"dpsgd"}


def test_pretrain_command_refuses_the_private_split(tmp_path, capsys):
    code = main(["pretrain", "--dataset", "svhn", "--split", "train", "--out", str(tmp_path / "x")])
    assert code == 2 and "public split" in capsys.readouterr().err
