"""``stream:`` folders: the same images as ``folder:``, read per batch; training on them is the
same mechanism and releases the same model as training on the folder held in memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dpal.core.errors import DpalError
from dpal.data.streaming import LazyPixels
from dpal.data.tasks import load_task
from dpal.training.checkpoint import load_checkpoint
from dpal.training.config import TrainConfig
from dpal.training.network import image_inputs
from dpal.training.private_inputs import PrivateInputs
from dpal.training.trainer import train
from tests.test_backbones import _write_mixed_folder


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    _write_mixed_folder(folder / "train")
    _write_mixed_folder(folder / "test", n_per_class=4)
    return folder


def test_a_stream_folder_reads_the_same_pixels_as_the_folder_loader_only_when_asked(photos):
    with pytest.raises(DpalError, match="--image-size"):
        load_task(f"stream:{photos}")
    streamed = load_task(f"stream:{photos}", image_size=24)
    loaded = load_task(f"folder:{photos}", image_size=24)
    assert isinstance(streamed.private.x, LazyPixels)
    assert streamed.image_shape == loaded.image_shape == (3, 24, 24)
    np.testing.assert_array_equal(streamed.private.y, loaded.private.y)
    np.testing.assert_array_equal(np.asarray(streamed.private.x), loaded.private.x)
    part = streamed.private.subset(np.array([5, 0, 7]))  # a batch: still lazy until read
    assert isinstance(part.x, LazyPixels) and len(part) == 3
    np.testing.assert_array_equal(np.asarray(part.x), loaded.private.x[[5, 0, 7]])
    inputs = PrivateInputs(streamed.private, image_inputs, None, "cpu")
    assert inputs.streamed and not hasattr(inputs, "x")  # nothing held but the labels
    x, y = inputs.batch(torch.tensor([2, 3]))
    torch.testing.assert_close(x, loaded.private.subset(np.array([2, 3])).tensors()[0])
    assert y.tolist() == loaded.private.y[[2, 3]].tolist()


def test_training_on_a_stream_releases_the_in_memory_model(photos, tmp_path):
    runs = {}
    for kind in ("folder", "stream"):
        config = TrainConfig(dataset=f"{kind}:{photos}", model="cnn-gn", image_size=24,
                             epochs=2, batch_size=8, noise_multiplier=1.0, delta=1e-3, ema=0.0,
                             deterministic_noise=True, seed=5)  # fmt: skip
        result = train(config, tmp_path / kind, progress=False)
        runs[kind] = (result, load_checkpoint(tmp_path / kind / "checkpoints" / "epoch_002.pt"))
    (r_f, c_f), (r_s, c_s) = runs["folder"], runs["stream"]
    for k, w in c_f["model"].items():
        torch.testing.assert_close(c_s["model"][k], w, rtol=0, atol=0)
    assert r_s.epsilon == r_f.epsilon and r_s.test_accuracy == r_f.test_accuracy
