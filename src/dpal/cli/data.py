"""``dpal data list|prepare|overlap``."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from dpal.cli.common import add_data_dir
from dpal.core.errors import DpalError


def cmd_data(a: argparse.Namespace) -> None:
    from dpal.data.registry import DATASETS, load_split, split_status
    from dpal.data.root import resolve_data_root
    from dpal.data.tasks import TASKS

    root = resolve_data_root(a.data_dir)
    if a.data_cmd == "list":
        print(f"data root: {root}")
        for name, info in DATASETS.items():
            status = ", ".join(f"{s}: {split_status(name, s, root)}" for s in info.splits)
            print(f"  {name:<8} {info.description}  [{status}]")
        print("tasks (private / public / test): " + ", ".join(TASKS) + ", npz:PATH, folder:PATH")
        return
    if a.data_cmd == "overlap":
        from dpal.data.overlap import overlap
        from dpal.data.tasks import load_task

        task = load_task(a.task, data_dir=a.data_dir)
        if task.public is None:
            raise DpalError(f"task {a.task!r} has no public pool to compare.")
        o = overlap(task.public, task.private, threshold=a.threshold)
        q = np.percentile(o.nearest_rms, [0, 1, 5, 50])
        print(
            f"{a.task}: {len(task.public)} public vs {len(task.private)} private images — "
            f"{o.exact} exact duplicates, {o.near} within RMS pixel difference "
            f"{o.threshold:g}/255; nearest-private RMS min/1%/5%/median = "
            + "/".join(f"{v:.1f}" for v in q)
            + "  (reads private data: for the operator, not a DP release)"
        )
        return
    names = a.datasets or list(DATASETS)
    for name in names:
        if name not in DATASETS:
            raise DpalError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}.")
        for split in DATASETS[name].splits:
            arrays = load_split(name, split, data_dir=a.data_dir, download=True)
            print(f"  {name}/{split}: {len(arrays)} images {arrays.image_shape} ready")


def register(sub: Any) -> None:

    p = sub.add_parser("data", help="list or download datasets")
    dsub = p.add_subparsers(dest="data_cmd", required=True)
    dl = dsub.add_parser("list", help="datasets and whether each split is present")
    add_data_dir(dl)
    dp = dsub.add_parser("prepare", help="download (torchvision) and cache datasets")
    dp.add_argument("datasets", nargs="*")
    add_data_dir(dp)
    do = dsub.add_parser("overlap", help="public images that duplicate private ones")
    do.add_argument("task")
    do.add_argument("--threshold", type=float, default=8.0, help="RMS pixel difference (0–255)")
    add_data_dir(do)
    p.set_defaults(func=cmd_data)
