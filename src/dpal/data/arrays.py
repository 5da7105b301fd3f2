"""Images as uint8 arrays with integer labels, validated once, converted to tensors on demand."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dpal.core.errors import DpalError

# Pixels are mapped to [-1, 1] with these fixed constants. They are public: we never normalise
# with a mean or std measured on the private data (that statistic would itself leak).
PIXEL_CENTER = 0.5
PIXEL_SCALE = 0.5


@dataclass(frozen=True)
class ImageArrays:
    """``x``: uint8 ``[n, h, w, c]`` (channels last); ``y``: int64 ``[n]``, 0 ≤ y < num_classes."""

    x: np.ndarray
    y: np.ndarray
    num_classes: int
    name: str = "images"

    @classmethod
    def create(
        cls, x: np.ndarray, y: np.ndarray, *, num_classes: int | None = None, name: str = "images"
    ) -> ImageArrays:
        """Validate and normalise layout: grayscale ``[n, h, w]`` gains a channel axis."""
        x = np.asarray(x)
        y = np.asarray(y)
        if x.dtype != np.uint8:
            raise DpalError(
                f"{name}: images must be uint8 pixels 0–255, got dtype {x.dtype}; "
                "convert with (x * 255).round().astype(np.uint8) if they are floats in [0, 1]."
            )
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or x.shape[-1] not in (1, 3):
            raise DpalError(
                f"{name}: images must have shape N×H×W (grayscale) or N×H×W×C with C = 1 or 3, "
                f"got {x.shape}."
            )
        if y.ndim != 1 or len(y) != len(x):
            raise DpalError(
                f"{name}: labels must be a 1-D array with one label per image; got labels of "
                f"shape {y.shape} for {len(x)} images."
            )
        if len(y) and not np.issubdtype(y.dtype, np.integer):
            raise DpalError(f"{name}: labels must be integers, got dtype {y.dtype}.")
        y = y.astype(np.int64)
        if num_classes is None:
            num_classes = int(y.max()) + 1 if len(y) else 0
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise DpalError(
                f"{name}: labels must lie in [0, {num_classes - 1}], found values from "
                f"{int(y.min())} to {int(y.max())}; relabel the classes as 0…{num_classes - 1}."
            )
        return cls(x=x, y=y, num_classes=num_classes, name=name)

    def __len__(self) -> int:
        return len(self.x)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` as the models take them."""
        _, h, w, c = self.x.shape
        return (c, h, w)

    def subset(self, index: np.ndarray | slice, name: str | None = None) -> ImageArrays:
        return ImageArrays(self.x[index], self.y[index], self.num_classes, name or self.name)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Float images ``[n, c, h, w]`` in [-1, 1] and int64 labels ``[n]``."""
        # np.asarray: pixels of a ``stream:`` folder are read from disk here (data/streaming.py)
        x = torch.from_numpy(np.asarray(self.x)).permute(0, 3, 1, 2).float().div_(255.0)
        x = x.sub_(PIXEL_CENTER).div_(PIXEL_SCALE).contiguous()
        return x, torch.from_numpy(self.y)


def load_npz(path: str, *, name: str | None = None, num_classes: int | None = None) -> ImageArrays:
    """Read an ``.npz`` holding ``x`` (uint8 images) and ``y`` (integer labels)."""
    import zipfile

    label = name or str(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = {"x", "y"} - set(f.files)
            if missing:
                raise DpalError(
                    f"{path}: an image .npz needs arrays 'x' (uint8 images) and 'y' (labels); "
                    f"missing {sorted(missing)}, found {sorted(f.files)}."
                )
            x, y = f["x"], f["y"]
    except FileNotFoundError:
        raise DpalError(f"{path}: no such file.") from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        if isinstance(err, DpalError):
            raise
        raise DpalError(
            f"{path}: not a readable .npz file ({err}); re-create it with "
            "np.savez_compressed(path, x=images, y=labels)."
        ) from err
    return ImageArrays.create(x, y, num_classes=num_classes, name=label)
