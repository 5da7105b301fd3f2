"""Where a DP-SGD step's time goes, beside the non-private step: ``torch.profiler`` per operator.

    python benchmarks/dpsgd_profile.py                      # cnn-gn and the MNIST CNN, batch 256
    python benchmarks/dpsgd_profile.py --models cnn-gn --batch-size 1024 --rows "dpal layers"

Same models, data and steps as ``benchmarks/dpsgd_throughput.py`` (imported from it). For each
row: the milliseconds per step, then the operators with the most self CPU time per step, so the
extra cost of the private step can be read operator by operator against the non-private one.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from dpsgd_throughput import data_and_model, rows_for


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["cnn-gn", "mnist-cnn"])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--rows", nargs="+", default=["non-private", "dpal layers"])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--top", type=int, default=10)
    a = p.parse_args()
    torch.set_num_threads(2)
    for name in a.models:
        x, y, model = data_and_model(name, a.batch_size, "cpu")
        rows = rows_for(model, x, y, a.batch_size, opacus=False, secure=False)
        for row in a.rows:
            step = rows[row]
            step(), step()  # warm-up
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                start = time.perf_counter()
                for _ in range(a.steps):
                    step()
                ms = (time.perf_counter() - start) * 1e3 / a.steps
            print(f"\n{name}, batch {a.batch_size}, {row}: {ms:.1f} ms/step "
                  f"(under the profiler), top operators by self CPU time per step:")  # fmt: skip
            events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
            for e in events[: a.top]:
                print(f"  {e.key:<42} {e.self_cpu_time_total / 1e3 / a.steps:7.1f} ms"
                      f"  ({e.count // a.steps} calls)")  # fmt: skip


if __name__ == "__main__":
    main()
