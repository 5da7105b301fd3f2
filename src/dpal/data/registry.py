"""The built-in datasets and how each split is found, read, or downloaded.

Each split is looked for, in order, as
1. ``ROOT/<name>/<split>.npz`` — dpal's own cache format (``x`` uint8, ``y`` labels), which is
   also the layout of the offline copy in ``../shared/datasets``; read as it is, never written to;
2. the files torchvision's loaders keep under ROOT (``MNIST/raw``, ``QMNIST/raw``,
   ``svhn/*.mat``, ``cifar-10-batches-py``);
3. a download with torchvision's loaders into ROOT (when ``download`` is true and the machine is
   online), after which the split is cached as (1).
When all three fail the error lists the files that would have been accepted.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dpal.core.errors import DpalError
from dpal.data.arrays import ImageArrays, load_npz
from dpal.data.root import resolve_data_root


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    splits: tuple[str, ...]
    image_shape: tuple[int, int, int]  # (c, h, w)
    num_classes: int
    description: str
    torchvision_files: Callable[[Path, str], list[Path]]
    read_torchvision: Callable[[Path, str], tuple[np.ndarray, np.ndarray]]
    download: Callable[[Path, str], None]


# ---- MNIST -----------------------------------------------------------------------------------
def _mnist_files(root: Path, split: str) -> list[Path]:
    prefix = "train" if split == "train" else "t10k"
    raw = root / "MNIST" / "raw"
    return [raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"]


def _mnist_read(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    from torchvision.datasets import MNIST

    ds = MNIST(str(root), train=split == "train", download=False)
    return ds.data.numpy(), ds.targets.numpy()


def _mnist_download(root: Path, split: str) -> None:
    from torchvision.datasets import MNIST

    MNIST(str(root), train=split == "train", download=True)


# ---- QMNIST: its "test" set is 60,000 images; the last 50,000 ("test50k") are the lost MNIST
# test digits, reconstructed — the public pool of Zhao et al. (2019). ---------------------------
_QMNIST_WHAT = {"train": "train", "test": "test", "test10k": "test", "test50k": "test"}


def _qmnist_files(root: Path, split: str) -> list[Path]:
    what = _QMNIST_WHAT[split]
    raw = root / "QMNIST" / "raw"
    return [raw / f"qmnist-{what}-images-idx3-ubyte", raw / f"qmnist-{what}-labels-idx2-int"]


def _qmnist_read(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    from torchvision.datasets import QMNIST

    ds = QMNIST(str(root), what=split, compat=True, download=False)
    # torchvision keeps QMNIST's 8 label columns; column 0 is the class.
    return ds.data.numpy(), ds.targets[:, 0].numpy()


def _qmnist_download(root: Path, split: str) -> None:
    from torchvision.datasets import QMNIST

    QMNIST(str(root), what=split, compat=True, download=True)


# ---- SVHN (cropped digits): train 73,257, test 26,032, extra 531,131 ---------------------------
def _svhn_files(root: Path, split: str) -> list[Path]:
    return [root / "svhn" / f"{split}_32x32.mat"]


def _svhn_read(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    # The same reading as torchvision.datasets.SVHN, without its MD5 check of the whole file
    # (so that files in SVHN's format, written by tests or by a user, are accepted).
    import scipy.io

    mat = scipy.io.loadmat(str(_svhn_files(root, split)[0]))
    x = np.ascontiguousarray(np.transpose(mat["X"], (3, 0, 1, 2)))  # [32,32,3,n] -> [n,32,32,3]
    y = mat["y"].astype(np.int64).reshape(-1)
    y[y == 10] = 0  # SVHN labels the digit 0 as class 10
    return x, y


def _svhn_download(root: Path, split: str) -> None:
    from torchvision.datasets import SVHN

    SVHN(str(root / "svhn"), split=split, download=True)


# ---- CIFAR-10 --------------------------------------------------------------------------------
def _cifar_files(root: Path, split: str) -> list[Path]:
    base = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    return [base / n for n in names]


def _cifar_read(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    from torchvision.datasets import CIFAR10

    ds = CIFAR10(str(root), train=split == "train", download=False)
    return np.asarray(ds.data), np.asarray(ds.targets)


def _cifar_download(root: Path, split: str) -> None:
    from torchvision.datasets import CIFAR10

    CIFAR10(str(root), train=split == "train", download=True)


DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        DatasetInfo(
            "mnist",
            ("train", "test"),
            (1, 28, 28),
            10,
            "MNIST handwritten digits",
            _mnist_files,
            _mnist_read,
            _mnist_download,
        ),
        DatasetInfo(
            "qmnist",
            ("test", "test50k", "test10k", "train"),
            (1, 28, 28),
            10,
            "QMNIST; test50k = the 50,000 reconstructed lost MNIST test digits",
            _qmnist_files,
            _qmnist_read,
            _qmnist_download,
        ),
        DatasetInfo(
            "svhn",
            ("train", "test", "extra"),
            (3, 32, 32),
            10,
            "Street View House Numbers, cropped digits",
            _svhn_files,
            _svhn_read,
            _svhn_download,
        ),
        DatasetInfo(
            "cifar10",
            ("train", "test"),
            (3, 32, 32),
            10,
            "CIFAR-10",
            _cifar_files,
            _cifar_read,
            _cifar_download,
        ),
    )
}


def dataset_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise DpalError(
            f"unknown dataset {name!r}; built-in datasets are {', '.join(DATASETS)}, or give "
            "your own as npz:PATH or folder:PATH."
        ) from None


def cache_path(root: Path, name: str, split: str) -> Path:
    return root / name / f"{split}.npz"


def split_status(name: str, split: str, root: Path) -> str:
    """'npz', 'torchvision' or 'missing': which form of the split is present under ``root``."""
    info = dataset_info(name)
    if cache_path(root, name, split).exists():
        return "npz"
    if all(p.exists() for p in info.torchvision_files(root, split)):
        return "torchvision"
    return "missing"


def load_split(
    name: str, split: str, *, data_dir: str | os.PathLike[str] | None = None, download: bool = True
) -> ImageArrays:
    """One split of a built-in dataset as :class:`ImageArrays` (see module doc for the search)."""
    info = dataset_info(name)
    if split not in info.splits:
        raise DpalError(f"dataset {name!r} has splits {', '.join(info.splits)}; got {split!r}.")
    root = resolve_data_root(data_dir)
    label = f"{name}/{split}"
    status = split_status(name, split, root)
    if status == "npz":
        return load_npz(
            str(cache_path(root, name, split)), name=label, num_classes=info.num_classes
        )
    if status == "missing" and download:
        try:
            info.download(root, split)
        except Exception as err:  # torchvision raises URLError, RuntimeError, OSError...
            raise _not_found(info, split, root, reason=f"download failed: {err}") from err
        status = split_status(name, split, root)
    if status == "missing":
        raise _not_found(info, split, root, reason="download disabled")
    x, y = info.read_torchvision(root, split)
    arrays = ImageArrays.create(x, y, num_classes=info.num_classes, name=label)
    _write_cache(arrays, cache_path(root, name, split))
    return arrays


def _write_cache(arrays: ImageArrays, path: Path) -> None:
    """Cache a split as npz (atomically); skipped silently where ROOT is read-only."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        x = arrays.x[..., 0] if arrays.x.shape[-1] == 1 else arrays.x
        np.savez_compressed(tmp, x=x, y=arrays.y.astype(np.uint8))
        os.replace(tmp, path)
    except OSError:
        pass


def _not_found(info: DatasetInfo, split: str, root: Path, *, reason: str) -> DpalError:
    files = "\n".join(f"    {p}" for p in info.torchvision_files(root, split))
    return DpalError(
        f"dataset {info.name!r} split {split!r} not found under {root} ({reason}).\n"
        f"  Put either\n    {cache_path(root, info.name, split)}  (npz with x: uint8 images, "
        f"y: labels)\n  or torchvision's files\n{files}\n"
        "  there, run `dpal data prepare` on a machine with internet, or point --data-dir / "
        "$DPAL_DATA at a folder that has them."
    )
