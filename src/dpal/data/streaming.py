"""Image folders read from disk when a batch needs them: a private set larger than memory.

``--dataset stream:PATH`` is ``folder:PATH`` (class sub-folders, or ``train/``, ``test/`` and
``public/`` each with class sub-folders) without loading the images: at start only the file list,
the labels and each file's header (size and mode, not its pixels) are read. The pixels of
:class:`LazyPixels` are decoded — and resized/centre-cropped to ``--image-size`` as
``folder:`` does — only when a batch is turned into an array, so the trainer holds one Poisson
batch of images at a time (``dpal.training.private_inputs``).

Sampling is unchanged: the trainer draws each example of the N independently with rate q
(``dpal.training.sampling.poisson_batches``) and reads the files of the ones drawn; what is
accounted is what runs. Reading order and caching by the OS leak nothing that is released.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dpal.core.errors import DpalError
from dpal.data.arrays import ImageArrays

GRAY_MODES = ("L", "1", "I", "I;16")


class LazyPixels:
    """uint8 ``[n, h, w, c]`` pixels of image files, decoded when converted to an array.

    Indexing with a slice or an index array gives another ``LazyPixels`` (no I/O); an integer,
    or ``np.asarray``, reads the files.
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, files: list[str], *, size: tuple[int, int], channels: int,
                 resize_to: int | None) -> None:  # fmt: skip
        self.files, self.size, self.channels, self.resize_to = files, size, channels, resize_to

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.files), self.size[0], self.size[1], self.channels)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, int | np.integer):
            return self._read(self.files[int(index)])
        picked = np.asarray(self.files, dtype=object)[index]
        return LazyPixels([str(f) for f in np.atleast_1d(picked)], size=self.size,
                          channels=self.channels, resize_to=self.resize_to)  # fmt: skip

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.empty(self.shape, dtype=np.uint8)
        for i, f in enumerate(self.files):
            out[i] = self._read(f)
        return out if dtype is None else out.astype(dtype)

    def _read(self, file: str) -> np.ndarray:
        from PIL import Image

        with Image.open(file) as opened:
            img = opened.convert("L" if self.channels == 1 else "RGB")
            if self.resize_to is not None:
                img = square_crop(img, self.resize_to)
            a = np.asarray(img, dtype=np.uint8)
        if a.shape[:2] != self.size:
            raise DpalError(
                f"{file}: {a.shape[1]}×{a.shape[0]} px where the set's images are "
                f"{self.size[1]}×{self.size[0]}; give --image-size N to resize them all."
            )
        return a.reshape(*self.size, self.channels)


def square_crop(img: Any, size: int) -> Any:
    """Shorter side to ``size`` (bicubic, antialiased), then the centre ``size``×``size``."""
    from PIL import Image

    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))),
                     Image.Resampling.BICUBIC)  # fmt: skip
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def list_image_folder(root: Path, classes: list[str] | None, kind: str) -> Any:
    """torchvision's ``ImageFolder`` of ``root`` (files and labels listed, no image read), its
    classes checked against training's; ``kind`` names the ``--dataset`` prefix in errors."""
    from torchvision.datasets import ImageFolder

    try:
        folder = ImageFolder(str(root))  # make_dataset lists files; the loader is not called
    except (FileNotFoundError, RuntimeError) as err:
        msg = f"{kind}:{root}: {err}; expected one sub-folder of images per class."
        raise DpalError(msg) from err
    if classes is not None and folder.classes != classes:
        raise DpalError(f"{root}: class folders {folder.classes} differ from training's {classes}.")
    return folder


def stream_folder(
    root: Path, classes: list[str] | None = None, image_size: int | None = None
) -> tuple[ImageArrays, list[str]]:
    """A class-folder tree as :class:`ImageArrays` whose pixels are :class:`LazyPixels`."""
    from PIL import Image

    folder = list_image_folder(root, classes, "stream")
    files = [f for f, _ in folder.samples]
    sizes, colour = set(), False
    for f in files:  # headers only: PIL reads the pixels lazily
        with Image.open(f) as opened:
            sizes.add(opened.size)
            colour |= opened.mode not in GRAY_MODES
    if image_size is None and len(sizes) > 1:
        raise DpalError(
            f"{root}: images have different sizes {sorted(sizes)[:4]}; give --image-size N to "
            "resize and centre-crop them to N×N as they are read."
        )
    w, h = (image_size, image_size) if image_size is not None else sizes.pop()
    pixels = LazyPixels(files, size=(h, w), channels=3 if colour else 1, resize_to=image_size)
    labels = np.asarray([label for _, label in folder.samples], dtype=np.int64)
    return ImageArrays(pixels, labels, len(folder.classes), str(root)), folder.classes  # type: ignore[arg-type]
