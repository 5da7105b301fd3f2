"""Your own model, pretrained backbones and their fine-tuning modes, images as users have them
(issue #13)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from dpal.core.errors import DpalError
from dpal.data.arrays import ImageArrays
from dpal.data.tasks import Task, load_task
from dpal.methods.active_learning.improve import load_released_model
from dpal.models import features as features_mod
from dpal.models.backbones import load_backbone
from dpal.models.features import cached_features
from dpal.models.validate import freeze_batchnorm, replace_batchnorm, validate
from dpal.privacy.ledger import Ledger
from dpal.training.config import TrainConfig
from dpal.training.evaluate import accuracy
from dpal.training.trainer import train
from tests.conftest import make_images


class UserNet(nn.Module):
    """A user's own classifier, defined outside dpal."""

    def __init__(self, width: int = 8, num_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten()
        )
        self.head = nn.Linear(16 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def make_user_net(width: int, num_classes: int) -> nn.Module:
    return UserNet(width, num_classes)


def _config(**kw) -> TrainConfig:
    base = dict(dataset="synthetic", epochs=2, batch_size=64, lr=2.0, epsilon=8.0, ema=0.0)
    return TrainConfig(**{**base, **kw})


def _dpsgd_entries(run_dir) -> list:
    return list(Ledger(run_dir / "ledger.json").entries)


def test_your_own_module_trains_through_the_api_and_its_release_loads_back(tiny_task, tmp_path):
    net = UserNet()
    result = train(_config(), tmp_path / "run", task=tiny_task, progress=False, model=net)
    assert result.test_accuracy > 0.25  # it learns: chance is 0.1
    ckpt = tmp_path / "run" / "checkpoints" / "epoch_002.pt"
    released = load_released_model(ckpt, model=UserNet())
    assert accuracy(released.model, tiny_task.test) == pytest.approx(result.test_accuracy)
    assert released.summary["network"]["kind"] == "instance"
    with pytest.raises(DpalError, match="pass the same architecture as model="):
        load_released_model(ckpt)


def test_a_factory_by_import_path_is_recorded_and_rebuilds_the_release(tiny_task, tmp_path):
    config = _config(model="tests.test_backbones:make_user_net", model_args={"width": 4})
    result = train(config, tmp_path / "run", task=tiny_task, progress=False)
    released = load_released_model(tmp_path / "run" / "checkpoints" / "epoch_002.pt")
    assert isinstance(released.model, UserNet) and released.model.head.in_features == 64
    assert accuracy(released.model, tiny_task.test) == pytest.approx(result.test_accuracy)
    with pytest.raises(DpalError, match=r"package\.module:factory"):
        train(_config(model="tests.nowhere:make"), tmp_path / "r2", task=tiny_task)


def test_batchnorm_is_refused_with_the_fixes_named(tiny_task, tmp_path):
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(10))
    net(torch.zeros(2, 1, 28, 28))  # materialise the lazy layer
    with pytest.raises(DpalError) as err:
        train(_config(), tmp_path / "run", task=tiny_task, progress=False, model=net)
    message = str(err.value)
    assert "BatchNorm" in message and "GroupNorm" in message and "freeze_batchnorm" in message
    assert "\n" not in message
    assert not (tmp_path / "run" / "ledger.json").exists()  # refused before any private read
    frozen = freeze_batchnorm(net)
    validate(frozen)  # a fixed affine map: each example alone
    x = torch.randn(3, 1, 28, 28)
    alone = torch.cat([frozen(x[i : i + 1]) for i in range(3)])
    assert torch.allclose(frozen(x), alone, atol=1e-6)  # no mixing across the batch
    grouped = replace_batchnorm(
        nn.Sequential(nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.Flatten(), nn.Linear(6 * 676, 10))
    )
    validate(grouped)
    assert isinstance(grouped[1], nn.GroupNorm)


def _write_mixed_folder(root, n_per_class=12):
    rng = np.random.default_rng(0)
    sizes = [(20, 30), (40, 40), (33, 17), (64, 48)]
    for k in range(2):
        (root / str(k)).mkdir(parents=True)
        for i in range(n_per_class):
            w, h = sizes[i % len(sizes)]
            base = np.full((h, w, 3), 40 + 170 * k, np.uint8)
            pixels = np.clip(base + rng.integers(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)
            img = Image.fromarray(pixels)
            if i % 2:
                img.convert("L").save(root / str(k) / f"{i}.png")
            else:
                img.save(root / str(k) / f"{i}.jpg", quality=90)


def test_a_folder_of_mixed_size_jpegs_and_pngs_trains(tmp_path):
    folder = tmp_path / "photos"
    _write_mixed_folder(folder / "train")
    _write_mixed_folder(folder / "test", n_per_class=4)
    with pytest.raises(DpalError, match="--image-size"):
        load_task(f"folder:{folder}")
    task = load_task(f"folder:{folder}", image_size=24)
    assert task.image_shape == (3, 24, 24) and len(task.private) == 24
    config = TrainConfig(dataset=f"folder:{folder}", model="cnn-gn", image_size=24, epochs=1,
                         batch_size=8, epsilon=8.0, delta=1e-3, ema=0.0)  # fmt: skip
    result = train(config, tmp_path / "run", progress=False)
    assert 0.0 <= result.test_accuracy <= 1.0 and result.epsilon <= 8.0 + 1e-6


@pytest.fixture(scope="module")
def small_task() -> Task:
    """3×32×32 images: two classes a backbone can tell apart (dark / bright)."""
    rng = np.random.default_rng(0)

    def images(n: int, seed: int) -> ImageArrays:
        r = np.random.default_rng(seed)
        y = r.integers(0, 2, n)
        x = (r.integers(0, 60, (n, 32, 32, 3)) + 150 * y[:, None, None, None]).astype(np.uint8)
        return ImageArrays.create(x, y, num_classes=2, name=f"two-tone-{seed}")

    del rng
    return Task(name="two-tone", private=images(96, 0), test=images(32, 1))


def test_cached_features_are_reused_and_invalidated_by_backbone_or_resolution(
    small_task, tmp_path, monkeypatch
):
    calls = []
    encode = features_mod.encode

    def counting(*args, **kwargs):
        calls.append(kwargs.get("parts"))
        return encode(*args, **kwargs)

    monkeypatch.setattr(features_mod, "encode", counting)
    images = small_task.private.subset(slice(0, 16))
    b32 = load_backbone("efficientnet-lite0", image_size=32)
    first = cached_features(b32, images, cache_dir=tmp_path)["pooled"]
    again = cached_features(b32, images, cache_dir=tmp_path)["pooled"]
    assert len(calls) == 1 and torch.equal(first, again) and first.shape == (16, 1280)
    cached_features(load_backbone("efficientnet-lite0", image_size=48), images, cache_dir=tmp_path)
    cached_features(load_backbone("efficientnet-lite0", image_size=32, tail_blocks=2), images,
                    parts=("stem",), cache_dir=tmp_path)  # fmt: skip
    other = small_task.private.subset(slice(16, 32))
    cached_features(b32, other, cache_dir=tmp_path)
    assert len(calls) == 4  # new resolution, new cut, new images: each computed once
    assert "PRIVATE DATA" in (tmp_path / "README.txt").read_text()
    meta = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert {m["image_size"] for m in meta} == {32, 48}


# linear-probe by default; the two modes that backpropagate through EfficientNet take ~75 s each
SLOW_MODES = [pytest.param(m, marks=pytest.mark.slow) for m in ("last-blocks", "full")]


@pytest.mark.parametrize("mode", ["linear-probe", *SLOW_MODES])
def test_each_finetuning_mode_is_one_dpsgd_run_in_its_ledger(small_task, tmp_path, mode):
    config = TrainConfig(dataset="two-tone", model="efficientnet-lite0", finetune=mode,
                         image_size=32, epochs=1, batch_size=16, lr=0.5, epsilon=8.0,
                         delta=1e-3, ema=0.0, feature_cache=str(tmp_path / "cache"))  # fmt: skip
    result = train(config, tmp_path / "run", task=small_task, progress=False)
    entries = _dpsgd_entries(tmp_path / "run")
    assert [(e.kind, e.mechanism, e.status) for e in entries] == [("dpsgd", "dpsgd:train", "done")]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert entries[0].params["sample_rate"] == pytest.approx(run["sample_rate"])
    assert entries[0].params["steps"] == run["steps_per_epoch"]
    # The release rebuilds into the whole image classifier, which scores what training saw.
    released = load_released_model(tmp_path / "run" / "checkpoints" / "epoch_001.pt")
    assert accuracy(released.model, small_task.test) == pytest.approx(result.test_accuracy)
    assert released.summary["network"]["finetune"] == mode
    trained = sum(p.numel() for p in result.model.parameters() if p.requires_grad)
    expected = {"linear-probe": 1280 * 2 + 2}.get(mode)
    assert expected is None or trained == expected
    head = released.model[-1]  # zero-initialised: DP-SGD moved it
    assert head.weight.abs().sum() > 0


def test_frozen_modes_refuse_augmentation_and_non_backbones(small_task, tmp_path):
    with pytest.raises(DpalError, match="augmentation needs"):
        train(TrainConfig(model="efficientnet-lite0", image_size=32, augment="shift", batch_size=16,
                          epsilon=8.0, delta=1e-3), tmp_path / "a", task=small_task)  # fmt: skip
    with pytest.raises(DpalError, match="needs a pretrained backbone"):
        train(TrainConfig(model="cnn-gn", finetune="linear-probe", epsilon=8.0, delta=1e-3,
                          batch_size=16), tmp_path / "b", task=small_task)  # fmt: skip


def test_torchvision_backbones_load_their_weights_from_the_hub_cache_offline(tmp_path, monkeypatch):
    """torchvision's loader reads $TORCH_HOME/hub/checkpoints/<file> when it is there: the code
    path a machine with internet takes after its one download."""
    import torchvision

    weights = torchvision.models.ResNet18_Weights.DEFAULT
    reference = torchvision.models.resnet18(weights=None)
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(reference.state_dict(), cache / weights.url.rsplit("/", 1)[1])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    backbone = load_backbone("resnet18", image_size=64)
    conv = backbone.stem.body[0]
    assert torch.equal(conv.weight, reference.conv1.weight)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in backbone.stem.modules())
    out = backbone.tail(backbone.stem(torch.randn(2, 3, 64, 64)))
    assert out.shape == (2, 512)


def test_the_mnist_images_become_three_channel_backbone_inputs():
    images = make_images(4)
    b = load_backbone("efficientnet-lite0", image_size=32)
    feats = features_mod.encode(b, images, progress=False)["pooled"]
    assert feats.shape == (4, 1280) and torch.isfinite(feats).all()


def test_a_subset_cut_at_chunk_boundaries_reuses_the_cached_chunks(small_task, tmp_path,
                                                                   monkeypatch):  # fmt: skip
    """A --holdout or a task's first N images reuse the whole set's features chunk by chunk."""
    monkeypatch.setattr(features_mod, "CHUNK", 8)
    computed = []
    encode = features_mod.encode

    def counting(backbone, images, **kwargs):
        computed.append(len(images))
        return encode(backbone, images, **kwargs)

    monkeypatch.setattr(features_mod, "encode", counting)
    b = load_backbone("efficientnet-lite0", image_size=32)
    images = small_task.private.subset(slice(0, 32))
    whole = cached_features(b, images, cache_dir=tmp_path)["pooled"]
    head = cached_features(b, images.subset(slice(0, 24)), cache_dir=tmp_path)["pooled"]
    assert computed == [8, 8, 8, 8] and torch.equal(head, whole[:24])
    ragged = cached_features(b, images.subset(slice(0, 20)), cache_dir=tmp_path)["pooled"]
    assert computed == [8, 8, 8, 8, 4]  # only the last, shorter chunk is new
    assert torch.allclose(ragged, whole[:20], atol=1e-4)


def test_an_interrupted_extraction_keeps_its_finished_chunks(small_task, tmp_path, monkeypatch):
    monkeypatch.setattr(features_mod, "CHUNK", 8)
    encode, computed = features_mod.encode, []

    def dies_on_the_third_chunk(backbone, images, **kwargs):
        if len(computed) == 2:
            raise KeyboardInterrupt
        computed.append(len(images))
        return encode(backbone, images, **kwargs)

    monkeypatch.setattr(features_mod, "encode", dies_on_the_third_chunk)
    b = load_backbone("efficientnet-lite0", image_size=32)
    images = small_task.private.subset(slice(0, 32))
    with pytest.raises(KeyboardInterrupt):
        cached_features(b, images, cache_dir=tmp_path)
    computed.append(0)  # let the rerun through
    cached_features(b, images, cache_dir=tmp_path)
    assert computed == [8, 8, 0, 8, 8]  # the rerun computes only the two chunks not saved


@pytest.mark.slow  # the API path of each mode runs in the default suite
def test_the_command_line_trains_a_backbone_probe_and_eval_reads_it(small_task, tmp_path,
                                                                    capsys):  # fmt: skip
    from dpal.cli import main

    data = tmp_path / "data"
    data.mkdir()
    for split, part in (("train", small_task.private), ("test", small_task.test)):
        np.savez(data / f"{split}.npz", x=part.x, y=part.y)
    run = tmp_path / "run"
    argv = ["train", "--dataset", f"npz:{data}", "--model", "efficientnet-lite0", "--finetune",
            "linear-probe", "--image-size", "32", "--standardize-features", "--epochs", "2",
            "--batch-size", "16", "--lr", "1", "--ema", "0", "--epsilon", "8", "--delta", "1e-3",
            "--feature-cache", str(tmp_path / "cache"), "--out", str(run), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    assert main(["eval", str(run / "checkpoints" / "epoch_002.pt")]) == 0
    report = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    summary = torch.load(run / "checkpoints" / "epoch_002.pt", weights_only=True)["summary"]
    assert report["test_accuracy"] == pytest.approx(summary["test_accuracy"])
    assert summary["network"]["finetune"] == "linear-probe"


def test_improve_works_on_a_run_that_trained_your_own_module(npz_dataset, tmp_path):
    from dpal.methods.active_learning.improve import SelectConfig, improve
    from dpal.training.finetune import FinetuneConfig

    train(_config(dataset=npz_dataset), tmp_path / "run", progress=False, model=UserNet())
    ckpt = tmp_path / "run" / "checkpoints" / "epoch_002.pt"
    result = improve(ckpt, tmp_path / "improved", SelectConfig(strategy="margin", n_labeled=30),
                     FinetuneConfig(epochs=2), model=UserNet())  # fmt: skip
    assert result.n_labeled == 30 and 0.0 <= result.test_accuracy <= 1.0
    assert result.epsilon_total == pytest.approx(result.epsilon_dp)  # bought labels: free
