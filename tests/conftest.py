from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from dpal.data.arrays import ImageArrays
from dpal.data.tasks import Task

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"

# Under pytest-xdist (`make test` runs two workers) each worker gets one thread, and so do the
# command-line subprocesses that tests start; alone, a run uses both cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The offline dataset copy (../shared/datasets), as CI and developers have it."""
    root = Path(os.environ.get("DPAL_DATA", SHARED))
    if not (root / "mnist" / "train.npz").exists():
        pytest.skip(f"offline datasets not found at {root}")
    return root


def make_images(n: int, *, seed: int = 0, shape=(28, 28), classes: int = 10) -> ImageArrays:
    """Synthetic, learnable images: class k lights up a band of rows."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.integers(0, 60, (n, *shape), dtype=np.uint8)
    band = shape[0] // classes
    for i, k in enumerate(y):
        x[i, k * band : (k + 1) * band] = 220
    return ImageArrays.create(x, y, num_classes=classes, name="synthetic")


@pytest.fixture
def tiny_task() -> Task:
    return Task(name="synthetic", private=make_images(400, seed=0), test=make_images(200, seed=1))


@pytest.fixture
def npz_dataset(tmp_path) -> str:
    """A synthetic task as an ``npz:`` folder (train / test / public), named like a user's."""
    data = tmp_path / "data"
    data.mkdir()
    for split, n, seed in (("train", 400, 0), ("test", 100, 1), ("public", 300, 2)):
        arrays = make_images(n, seed=seed)
        np.savez(data / f"{split}.npz", x=arrays.x[..., 0], y=arrays.y)
    return f"npz:{data}"
