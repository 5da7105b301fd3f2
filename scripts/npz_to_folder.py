"""Write a dataset's npz splits as a class-folder tree of PNG files (train/<class>/<i>.png, …):
the layout `folder:` and `stream:` read, for the streaming benchmark in docs/RESULTS.md.

    python scripts/npz_to_folder.py ../shared/datasets/cifar10 /tmp/cifar10-folder
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", type=Path, help="a folder with train.npz (and test.npz)")
    p.add_argument("dest", type=Path)
    a = p.parse_args()
    for split in ("train", "test"):
        path = a.source / f"{split}.npz"
        if not path.exists():
            continue
        with np.load(path) as z:
            x, y = z["x"], z["y"]
        for c in np.unique(y):
            (a.dest / split / str(c)).mkdir(parents=True, exist_ok=True)
        for i, (img, label) in enumerate(zip(x, y, strict=True)):
            Image.fromarray(img.squeeze()).save(a.dest / split / str(label) / f"{i:06d}.png")
        print(f"{split}: {len(x)} images → {a.dest / split}")


if __name__ == "__main__":
    main()
