"""Random-process images: seeded, streamed, the right shapes, and the statistics each family is
meant to have (a power-law spectrum; flat, occluding leaves)."""

import itertools

import numpy as np
import pytest

from dpal.cli import main
from dpal.core.errors import DpalError
from dpal.data.random_process import GENERATORS, sample, stream_images


@pytest.mark.parametrize("kind", [*GENERATORS, "mixture"])
@pytest.mark.parametrize(("size", "channels"), [(32, 3), (28, 1)])
def test_each_family_is_seeded_uint8_of_the_asked_shape(kind, size, channels):
    a = sample(kind, 12, size=size, channels=channels, seed=5)
    assert a.shape == (12, size, size, channels) and a.dtype == np.uint8
    assert np.array_equal(a, sample(kind, 12, size=size, channels=channels, seed=5))
    assert not np.array_equal(a, sample(kind, 12, size=size, channels=channels, seed=6))
    assert a.std() > 20  # images, not flat fields


def test_stream_is_endless_and_lazy():
    batches = stream_images("spectrum", size=16, batch_size=4, seed=0)
    first = list(itertools.islice(batches, 50))  # drawn on demand, one batch at a time
    assert len(first) == 50 and all(b.shape == (4, 16, 16, 3) for b in first)


def test_spectrum_noise_has_a_power_law_spectrum():
    x = sample("spectrum", 64, size=64, channels=1, seed=0)[..., 0].astype(float)
    power = np.abs(np.fft.fft2(x - x.mean(axis=(1, 2), keepdims=True))) ** 2
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(64), np.fft.fftfreq(64)))
    low, high = power[:, (f > 0.02) & (f < 0.05)].mean(), power[:, (f > 0.2) & (f < 0.3)].mean()
    assert low / high > 30  # ∝ 1/f^(2α), α ∈ [0.5, 2.5]: far more power at low frequency


def test_dead_leaves_are_flat_occluding_shapes():
    x = sample("dead-leaves", 32, size=32, channels=3, seed=0)
    same_as_right = (x[:, :, 1:] == x[:, :, :-1]).all(axis=-1).mean()
    assert same_as_right > 0.7  # piecewise constant: most neighbours share a leaf
    colours_per_image = [len(np.unique(img.reshape(-1, 3), axis=0)) for img in x]
    assert min(colours_per_image) > 5  # many leaves visible


def test_bad_requests_say_what_to_change(tmp_path):
    with pytest.raises(DpalError, match="choose one of"):
        next(stream_images("clouds"))
    with pytest.raises(DpalError, match="1 or 3 channels"):
        next(stream_images("spectrum", channels=2))


def test_generate_command_writes_a_grid(tmp_path):
    out = tmp_path / "grid.png"
    assert (
        main(
            ["randp", "generate", "--n", "20", "--size", "28", "--channels", "1", "--out", str(out)]
        )
        == 0
    )
    from PIL import Image

    assert Image.open(out).size[0] > 28 * 3
