"""Hyper-parameter search for DP-SGD on a held-out part of the *training* set (never the test set).

Each configuration trains on the first N − holdout training images at the target ε and is
scored by its final validation accuracy on the last ``holdout`` images. The tuning itself reads
private data and is not privacy-accounted (as is usual, and as RESULTS.md says).

    python scripts/tune_dpsgd.py --grid scripts/mnist_grid.json --out tune.json --workers 16
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any


def run_one(args: tuple[dict[str, Any], str, str | None, str]) -> dict[str, Any]:
    cfg, out_root, data_dir, device = args
    import tempfile

    import torch

    torch.set_num_threads(1)
    from dpal.training.config import TrainConfig
    from dpal.training.trainer import VALIDATION_KEY, train

    config = TrainConfig(**cfg)
    start = time.perf_counter()
    result = train(
        config, tempfile.mkdtemp(dir=out_root), data_dir=data_dir, progress=False, device=device
    )
    last = result.history[-1]
    return {
        "config": cfg,
        # a noiseless statistic of held-out private images: the ledger records it as such
        "validation_accuracy": last[VALIDATION_KEY],
        "epsilon": last["epsilon"],
        "noise_multiplier": result.noise_multiplier,
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--grid", required=True, help="JSON list of TrainConfig keyword dicts")
    p.add_argument("--out", required=True)
    p.add_argument("--data-dir")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--runs-dir", default="tune-runs")
    a = p.parse_args()
    with open(a.grid) as f:
        grid = json.load(f)
    os.makedirs(a.runs_dir, exist_ok=True)
    jobs = [(c, a.runs_dir, a.data_dir, a.device) for c in grid]
    results = []
    with ProcessPoolExecutor(a.workers) as pool:
        for future in as_completed([pool.submit(run_one, j) for j in jobs]):
            r = future.result()
            print(json.dumps(r), flush=True)
            results.append(r)
            with open(a.out, "w") as f:
                json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
