import pytest
import torch

from dpal.training.augment import augment_copies


def test_copies_are_shifted_versions_of_their_own_example():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, 12, 12)
    out = augment_copies(x, copies=3, kind="shift", max_shift=2, generator=gen)
    assert out.shape == (12, 1, 12, 12)
    for i in range(4):
        for c in range(3):
            img = out[i * 3 + c, 0]
            # the centre 8×8 of the original appears somewhere in the copy (shift ≤ 2)
            centre = x[i, 0, 2:10, 2:10]
            found = any(
                torch.equal(img[r : r + 8, s : s + 8], centre) for r in range(5) for s in range(5)
            )
            assert found


def test_no_shift_is_identity_and_seed_reproducible():
    x = torch.randn(3, 3, 8, 8)
    same = augment_copies(x, copies=2, kind="shift", max_shift=0, generator=torch.Generator())
    assert torch.equal(same, x.repeat_interleave(2, 0))
    a = augment_copies(
        x, copies=2, kind="shift-flip", max_shift=2, generator=torch.Generator().manual_seed(5)
    )
    b = augment_copies(
        x, copies=2, kind="shift-flip", max_shift=2, generator=torch.Generator().manual_seed(5)
    )
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="augmentation"):
        augment_copies(x, copies=1, kind="rotate", max_shift=1, generator=torch.Generator())
