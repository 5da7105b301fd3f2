"""Public/private overlap: public images that (nearly) duplicate a private one.

A public pool drawn from the same source as the private data (MNIST's own training set in the
offline protocol; QMNIST or SVHN-extra in the paper's) can hold near-copies of private images;
labelling and training on them is then not "public" in spirit. This check is for the report: it
reads private data and releases only counts to the person running it — it is not a DP release
and must not be published as one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dpal.core.neighbours import nearest
from dpal.data.arrays import ImageArrays


@dataclass(frozen=True)
class Overlap:
    exact: int  # public images identical to a private one
    near: int  # RMS pixel difference to the nearest private image ≤ threshold
    threshold: float  # on the 0–255 scale
    nearest_rms: np.ndarray  # [n_public] RMS difference to the nearest private image


def nearest_rms(public: np.ndarray, private: np.ndarray) -> np.ndarray:
    """``[n_public]`` root-mean-square pixel difference (0–255) to the nearest private image."""
    a = public.reshape(len(public), -1).astype(np.float32)
    _, sq_dist = nearest(a, private.reshape(len(private), -1).astype(np.float32), chunk=2048)
    return np.sqrt(sq_dist / a.shape[1])


def overlap(public: ImageArrays, private: ImageArrays, *, threshold: float = 8.0) -> Overlap:
    rms = nearest_rms(public.x, private.x)
    return Overlap(int((rms < 1e-3).sum()), int((rms <= threshold).sum()), threshold, rms)
