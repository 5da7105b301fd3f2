"""Datasets: the offline copy, torchvision's on-disk formats (QMNIST, SVHN), user data, errors."""

import gzip
import struct

import numpy as np
import pytest
import scipy.io
from PIL import Image

from dpal.core.errors import DpalError
from dpal.data import load_split, load_task
from dpal.data.arrays import ImageArrays, load_npz
from dpal.data.root import resolve_data_root


def test_offline_mnist_is_exact(shared_data):
    train = load_split("mnist", "train", data_dir=shared_data, download=False)
    assert train.x.shape == (60000, 28, 28, 1) and train.num_classes == 10
    assert train.y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert train.x.mean() == pytest.approx(33.318, abs=1e-3)


def test_mnist_offline_protocol(shared_data):
    task = load_task("mnist-offline", data_dir=shared_data, download=False)
    full = load_split("mnist", "train", data_dir=shared_data, download=False)
    assert len(task.private) == 40_000 and len(task.public) == 20_000 and len(task.test) == 10_000
    assert np.array_equal(task.private.x, full.x[:40_000])
    assert np.array_equal(task.public.x, full.x[40_000:])


def test_cifar10_offline(shared_data):
    test = load_split("cifar10", "test", data_dir=shared_data, download=False)
    assert test.x.shape == (10000, 32, 32, 3) and test.image_shape == (3, 32, 32)


def test_data_root_order(monkeypatch, tmp_path):
    monkeypatch.setenv("DPAL_DATA", str(tmp_path / "env"))
    assert resolve_data_root(tmp_path / "flag") == tmp_path / "flag"
    assert resolve_data_root(None) == tmp_path / "env"
    monkeypatch.delenv("DPAL_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert resolve_data_root(None) == tmp_path / "cache" / "dpal" / "datasets"


def _write_idx(path, array, type_code):
    """IDX ('SN3 Pascal Vincent') format, as MNIST and QMNIST ship it (big-endian)."""
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim) + b"".join(
        struct.pack(">I", d) for d in array.shape
    )
    dtype = {0x08: ">u1", 0x0C: ">i4"}[type_code]
    path.write_bytes(header + array.astype(dtype).tobytes())


def test_qmnist_in_its_own_format(tmp_path):
    raw = tmp_path / "QMNIST" / "raw"
    raw.mkdir(parents=True)
    n = 12  # QMNIST's test set: the first 10,000 are MNIST's test10k; the rest the lost digits
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = np.zeros((n, 8), dtype=np.int32)  # 8 columns; column 0 is the class
    labels[:, 0] = rng.integers(0, 10, n)
    labels[:, 5] = 99  # other columns (writer ids etc.) must not leak into the labels
    _write_idx(raw / "qmnist-test-images-idx3-ubyte", images, 0x08)
    _write_idx(raw / "qmnist-test-labels-idx2-int", labels, 0x0C)
    test = load_split("qmnist", "test", data_dir=tmp_path, download=False)
    assert np.array_equal(test.x[..., 0], images) and np.array_equal(test.y, labels[:, 0])
    cache = tmp_path / "qmnist" / "test.npz"
    assert cache.exists()  # cached in dpal's npz form for next time


def test_svhn_in_its_own_format(tmp_path):
    (tmp_path / "svhn").mkdir()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    digits = np.array([1, 2, 10, 4, 10, 6, 9])  # SVHN stores the digit 0 as label 10
    scipy.io.savemat(
        tmp_path / "svhn" / "extra_32x32.mat",
        {"X": np.transpose(images, (1, 2, 3, 0)), "y": digits[:, None]},
    )
    extra = load_split("svhn", "extra", data_dir=tmp_path, download=False)
    assert np.array_equal(extra.x, images)
    assert extra.y.tolist() == [1, 2, 0, 4, 0, 6, 9]


def test_missing_dataset_names_expected_files(tmp_path):
    with pytest.raises(DpalError) as err:
        load_split("svhn", "train", data_dir=tmp_path, download=False)
    assert "train_32x32.mat" in str(err.value) and "svhn/train.npz" in str(err.value)


def test_unknown_dataset_and_split():
    with pytest.raises(DpalError, match="unknown dataset 'imagenet'"):
        load_task("imagenet")
    with pytest.raises(DpalError, match="splits"):
        load_split("mnist", "extra", download=False)


def test_user_npz_folder(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "train.npz",
        x=rng.integers(0, 256, (20, 16, 16, 3), dtype=np.uint8),
        y=rng.integers(0, 3, 20),
    )
    np.savez(
        tmp_path / "test.npz",
        x=rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8),
        y=rng.integers(0, 3, 5),
    )
    task = load_task(f"npz:{tmp_path}")
    assert task.image_shape == (3, 16, 16) and len(task.test) == 5 and task.public is None


def test_user_image_folder(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("cat", "dog"):
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(d / f"{i}.png")
    task = load_task(f"folder:{tmp_path}")
    assert len(task.private) == 6 and len(task.test) == 4 and task.image_shape == (1, 8, 8)
    assert sorted(task.private.y.tolist()) == [0, 0, 0, 1, 1, 1]


def test_image_folder_of_mixed_sizes_is_an_error(tmp_path):
    for i, size in enumerate((8, 9)):
        d = tmp_path / f"c{i}"
        d.mkdir()
        Image.fromarray(np.zeros((size, size), dtype=np.uint8)).save(d / "a.png")
    with pytest.raises(DpalError, match="resize"):
        load_task(f"folder:{tmp_path}")


@pytest.mark.parametrize(
    "x, y, message",
    [
        (np.zeros((4, 28), np.uint8), np.zeros(4, int), "shape"),
        (np.zeros((4, 8, 8, 5), np.uint8), np.zeros(4, int), "shape"),
        (np.zeros((4, 8, 8), np.float32), np.zeros(4, int), "uint8"),
        (np.zeros((4, 8, 8), np.uint8), np.array([0, 1, 2, 10]), "labels must lie in"),
        (np.zeros((4, 8, 8), np.uint8), np.array([0, 1, -1, 2]), "labels must lie in"),
        (np.zeros((4, 8, 8), np.uint8), np.zeros(3, int), "one label per image"),
    ],
)
def test_bad_arrays(x, y, message):
    with pytest.raises(DpalError, match=message):
        ImageArrays.create(x, y, num_classes=10)


def test_corrupt_and_incomplete_npz(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(DpalError, match=r"not a readable \.npz"):
        load_npz(str(bad))
    half = tmp_path / "half.npz"
    np.savez(half, x=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DpalError, match="missing \\['y'\\]"):
        load_npz(str(half))
    with gzip.open(tmp_path / "g.npz", "wb") as f:
        f.write(b"gzip, not zip")
    with pytest.raises(DpalError):
        load_npz(str(tmp_path / "g.npz"))


def test_pixels_use_public_constants():
    arrays = ImageArrays.create(np.array([[[0, 255]]], np.uint8), np.array([0]), num_classes=2)
    x, _ = arrays.tensors()
    assert x.flatten().tolist() == [-1.0, 1.0]  # fixed mapping, no dataset statistics


# the random-process polluter is drawn for the test (~30 s): slow
RANDP = pytest.param("mnist-polluted-randp", marks=pytest.mark.slow)


@pytest.mark.parametrize("name", ["mnist-polluted", RANDP])
def test_polluted_pool(shared_data, name):
    task = load_task(name, data_dir=shared_data, download=False)
    assert len(task.private) == 30_000 and len(task.public) == 37_500
    assert task.public.image_shape == (1, 28, 28)
    assert (~task.public_valid).sum() == 7_500  # 20% of the pool
    # polluted images (CIFAR-10 in grayscale, random processes): not MNIST-like (mostly black)
    polluted = task.public.x[~task.public_valid]
    digits = task.public.x[task.public_valid]
    assert polluted.mean() > 2 * digits.mean()
