import numpy as np

from dpal.data.arrays import ImageArrays
from dpal.data.overlap import overlap


def test_finds_exact_and_near_duplicates():
    rng = np.random.default_rng(0)
    private = rng.integers(0, 256, (50, 8, 8), dtype=np.uint8)
    public = rng.integers(0, 256, (10, 8, 8), dtype=np.uint8)
    public[0] = private[3]  # exact copy
    public[1] = np.clip(private[7].astype(int) + 3, 0, 255)  # a near copy (RMS ≤ 3)
    result = overlap(
        ImageArrays.create(public, np.zeros(10, int), num_classes=1),
        ImageArrays.create(private, np.zeros(50, int), num_classes=1),
    )
    assert result.exact == 1 and result.near == 2
    assert result.nearest_rms[0] == 0 and 0 < result.nearest_rms[1] <= 3
    assert np.all(result.nearest_rms[2:] > 50)  # random images are far apart
