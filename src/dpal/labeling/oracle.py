"""An annotator that knows the pool's true labels (for experiments)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REJECTED = -1  # the annotator refused the image (not one of the classes): budget spent, not used


@dataclass(frozen=True)
class Oracle:
    """``labels[i]`` is pool item i's class; ``valid[i]`` False marks an image that is not one of
    the classes (e.g. a CIFAR-10 image in a polluted digit pool).

    ``label_invalid_as`` None: such images are rejected (``REJECTED``). An integer: they get that
    class instead — the harsher case of an annotator who labels everything.
    """

    labels: np.ndarray
    valid: np.ndarray | None = None
    label_invalid_as: int | None = None

    def __call__(self, indices: np.ndarray) -> np.ndarray:
        out = np.asarray(self.labels)[indices].astype(np.int64)
        if self.valid is not None:
            bad = ~np.asarray(self.valid)[indices]
            out[bad] = REJECTED if self.label_invalid_as is None else self.label_invalid_as
        return out
