"""Named tasks: which images are private (trained on with DP), which are a public pool, which test.

``mnist-offline`` is the protocol of ``../shared/datasets/README.md`` for machines without QMNIST:
private = the first 40,000 MNIST training images, public pool = the last 20,000 (labels hidden
until bought), test = the MNIST test set. ``mnist-qmnist`` is the paper's: private = all of
MNIST's training set, public pool = QMNIST's 50,000 reconstructed test digits.
``cifar10-offline``: private = the first 40,000 CIFAR-10 training images, public pool = the last
10,000, test = CIFAR-10's test set. ``mnist-polluted`` is the pollution experiment offline
(§4.3): 30,000 private, a pool of the other 30,000 digits plus 7,500 CIFAR-10 images (20%),
marked invalid in ``Task.public_valid``; ``mnist-polluted-randp`` the same pool with
random-process images as the polluter.

A user's own data is ``npz:PATH`` (a file, or a folder with ``train.npz`` and optionally
``test.npz`` and ``public.npz``) or ``folder:PATH`` (class sub-folders, or ``train/``, ``test/``
and ``public/`` each with class sub-folders).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from dpal.core.errors import DpalError
from dpal.data.arrays import ImageArrays, load_npz
from dpal.data.random_process import sample
from dpal.data.registry import load_split
from dpal.data.streaming import GRAY_MODES, list_image_folder, square_crop, stream_folder


@dataclass(frozen=True)
class Task:
    name: str
    private: ImageArrays
    test: ImageArrays | None
    public: ImageArrays | None = None
    validation: ImageArrays | None = None
    # False marks a public image that is none of the classes (pollution): an annotator rejects it.
    public_valid: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        return self.private.num_classes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.private.image_shape

    def hold_out(self, n: int) -> Task:
        """Move the last ``n`` private images into ``validation`` (for tuning; not trained on).

        The held-out images are private too: tuning on them is not privacy-accounted, and this
        is said wherever such numbers are reported.
        """
        if n <= 0:
            return self
        if n >= len(self.private):
            raise DpalError(f"cannot hold out {n} of {len(self.private)} private images.")
        keep = len(self.private) - n
        return replace(
            self,
            private=self.private.subset(slice(0, keep)),
            validation=self.private.subset(slice(keep, None), name=f"{self.name}/validation"),
        )


def _builtin(
    dataset: str,
    private: str,
    test: str,
    public: str | None,
    private_slice: slice = slice(None),
    public_slice: slice = slice(None),
    public_from: str | None = None,
) -> Callable[..., Task]:
    def load(name: str, data_dir: str | None, download: bool) -> Task:
        train = load_split(dataset, private, data_dir=data_dir, download=download)
        pool = None
        if public is not None:
            source = public_from or dataset
            pool = load_split(source, public, data_dir=data_dir, download=download)
            pool = pool.subset(public_slice, name=f"{name}/public")
        return Task(
            name=name,
            private=train.subset(private_slice, name=f"{name}/private"),
            test=load_split(dataset, test, data_dir=data_dir, download=download),
            public=pool,
        )

    return load


POLLUTION_FRACTION = 0.2


def to_gray_28(images: np.ndarray) -> np.ndarray:
    """RGB ``[n, 32, 32, 3]`` → grayscale ``[n, 28, 28, 1]`` (ITU-R 601 luma, PIL bilinear)."""
    from PIL import Image

    out = [
        np.asarray(Image.fromarray(img).convert("L").resize((28, 28), Image.Resampling.BILINEAR))
        for img in images
    ]
    return np.stack(out)[..., None]


def _mnist_polluted(polluter: str) -> Callable[[str, str | None, bool], Task]:
    """Paper §4.3 offline: private = the first 30,000 MNIST training images; public pool = the
    other 30,000 plus foreign images (grayscale, 28×28) making up 20% of the pool, shuffled with
    a fixed seed. ``polluter``: ``cifar10`` (the first 7,500 CIFAR-10 training images) or
    ``random-process`` (7,500 images of DP-RandP's random-process mixture, seed 0): a second
    kind, so that a method tuned to photographs is caught."""

    def load(name: str, data_dir: str | None, download: bool) -> Task:
        train = load_split("mnist", "train", data_dir=data_dir, download=download)
        digits = train.subset(slice(30_000, None))
        n_pollution = round(len(digits) * POLLUTION_FRACTION / (1 - POLLUTION_FRACTION))
        if polluter == "cifar10":
            cifar = load_split("cifar10", "train", data_dir=data_dir, download=download)
            foreign = to_gray_28(cifar.x[:n_pollution])
        else:
            foreign = sample("mixture", n_pollution, size=28, channels=1, seed=0)
        x = np.concatenate([digits.x, foreign])
        y = np.concatenate([digits.y, np.zeros(n_pollution, dtype=np.int64)])  # 0: never used
        valid = np.concatenate([np.ones(len(digits), bool), np.zeros(n_pollution, bool)])
        order = np.random.default_rng(0).permutation(len(x))
        return Task(
            name=name,
            private=train.subset(slice(0, 30_000), name=f"{name}/private"),
            test=load_split("mnist", "test", data_dir=data_dir, download=download),
            public=ImageArrays(x[order], y[order], 10, f"{name}/public"),
            public_valid=valid[order],
        )

    return load


TASKS: dict[str, Callable[..., Task]] = {
    "mnist": _builtin("mnist", "train", "test", None),
    "mnist-offline": _builtin(
        "mnist",
        "train",
        "test",
        "train",
        private_slice=slice(0, 40_000),
        public_slice=slice(40_000, None),
    ),
    "mnist-qmnist": _builtin("mnist", "train", "test", "test50k", public_from="qmnist"),
    "mnist-polluted": _mnist_polluted("cifar10"),
    "mnist-polluted-randp": _mnist_polluted("random-process"),
    "svhn": _builtin("svhn", "train", "test", "extra"),
    "cifar10": _builtin("cifar10", "train", "test", None),
    # Issue #13's protocol for active learning on a pretrained backbone, offline.
    "cifar10-offline": _builtin(
        "cifar10",
        "train",
        "test",
        "train",
        private_slice=slice(0, 40_000),
        public_slice=slice(40_000, None),
    ),
}


def load_task(
    spec: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    image_size: int | None = None,
) -> Task:
    """A task by name (``TASKS``) or the user's own data (``npz:PATH`` / ``folder:PATH``).

    ``image_size``: a folder's images, of any sizes and modes, are resized (shorter side) and
    centre-cropped to ``image_size`` square; without it they must all have one size."""
    if spec.startswith("npz:"):
        return _npz_task(Path(spec[4:]))
    if spec.startswith("folder:"):
        return _folder_task(Path(spec[7:]), image_size, _read_image_folder)
    if spec.startswith("stream:"):  # the same tree, its pixels read per batch
        return _folder_task(Path(spec[7:]), image_size, stream_folder)
    if spec not in TASKS:
        raise DpalError(
            f"unknown dataset {spec!r}; choose one of {', '.join(TASKS)}, or give your own data "
            "as npz:PATH (x uint8 N×H×W[×C], y labels) or folder:PATH (class sub-folders)."
        )
    return TASKS[spec](spec, str(data_dir) if data_dir else None, download)


def _npz_task(path: Path) -> Task:
    if path.is_file():
        return Task(name=f"npz:{path}", private=load_npz(str(path)), test=None)
    if not path.is_dir():
        raise DpalError(f"npz:{path}: no such file or folder.")
    if not (path / "train.npz").exists():
        raise DpalError(
            f"npz:{path}: a dataset folder needs train.npz (and optionally "
            "test.npz, public.npz) inside it."
        )
    private = load_npz(str(path / "train.npz"))
    k = private.num_classes

    def optional(split: str) -> ImageArrays | None:
        f = path / f"{split}.npz"
        return load_npz(str(f), num_classes=k) if f.exists() else None

    return _checked(Task(f"npz:{path}", private, optional("test"), optional("public")))


FolderReader = Callable[[Path, list[str] | None, int | None], tuple[ImageArrays, list[str]]]


def _folder_task(path: Path, image_size: int | None, read: FolderReader) -> Task:
    kind = "stream" if read is stream_folder else "folder"
    if not path.is_dir():
        raise DpalError(f"{kind}:{path}: no such folder.")
    if (path / "train").is_dir():
        private, classes = read(path / "train", None, image_size)

        def optional(split: str) -> ImageArrays | None:
            d = path / split
            return read(d, classes, image_size)[0] if d.is_dir() else None

        task = Task(f"{kind}:{path}", private, optional("test"), optional("public"))
    else:
        task = Task(f"{kind}:{path}", read(path, None, image_size)[0], None)
    return _checked(task)


def _checked(task: Task) -> Task:
    for part in (task.test, task.public):
        if part is not None and part.image_shape != task.private.image_shape:
            raise DpalError(
                f"{part.name}: images are {part.image_shape} (c, h, w) but the training images are "
                f"{task.private.image_shape}; resize them to match."
            )
    return task


def _read_image_folder(
    root: Path, classes: list[str] | None = None, image_size: int | None = None
) -> tuple[ImageArrays, list[str]]:
    """Class sub-folders → uint8 arrays (via torchvision's ImageFolder). Images of any size and
    mode with ``image_size`` (resized, centre-cropped; RGB if any image is in colour), else of
    one size."""
    from PIL import Image

    folder = list_image_folder(root, classes, "folder")
    images, labels = [], []
    for file, label in folder.samples:
        with Image.open(file) as opened:
            gray = opened.mode in GRAY_MODES
            img = opened.convert("L" if gray else "RGB")
            if image_size is not None:
                img = square_crop(img, image_size)
            images.append(np.asarray(img, dtype=np.uint8))
        labels.append(label)
    if image_size is not None and any(a.ndim == 3 for a in images):  # some in colour: all RGB
        images = [np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a for a in images]
    shapes = {a.shape for a in images}
    if len(shapes) > 1:
        raise DpalError(
            f"{root}: images have different sizes or channels {sorted(shapes)[:4]}; give "
            "--image-size N to resize and centre-crop them to N×N."
        )
    arrays = ImageArrays.create(
        np.stack(images), np.asarray(labels), num_classes=len(folder.classes), name=str(root)
    )
    return arrays, folder.classes
