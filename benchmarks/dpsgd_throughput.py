"""Examples/s of non-private PyTorch training vs dpal's DP-SGD, same model and batch, one run.

    python benchmarks/dpsgd_throughput.py [--batch-size 256] [--seconds 4] [--rounds 3]

Measured on MNIST-shaped data (the TF-Privacy CNN, 26,010 parameters), 2 threads. Rows:
* non-private, DataLoader    — the idiomatic loop: DataLoader(TensorDataset, shuffle=True)
* non-private, tensor index  — the same loop without DataLoader overhead (a harder baseline)
* dpal DP-SGD, engine=layers — Poisson batch, per-example clip, noise, SGD step
* dpal DP-SGD, engine=torch.func
* dpal DP-SGD, engine=layers, --secure-noise — every noise draw from os.urandom, a sum of four
  Box–Muller draws (dpal.privacy.secure_noise); its ratio to the row above it is the mode's cost
Each row runs for ``--seconds`` per round; rounds interleave the rows (to share any drift), and
the median over rounds is reported. Ratios are DP-SGD ÷ non-private.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from dpal.models import build_model
from dpal.privacy.noise_source import TorchNoise
from dpal.privacy.secure_noise import SecureNoise
from dpal.training.dpsgd import private_gradient
from dpal.training.sampling import poisson_batches


def throughput(step: Callable[[], int], seconds: float) -> float:
    for _ in range(3):
        step()  # warm-up
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        n += step()
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    n, b = 60_000, a.batch_size
    x, y = torch.randn(n, 1, 28, 28), torch.randint(0, 10, (n,))
    model = build_model("cnn-tanh", (1, 28, 28), 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(0)

    loader = DataLoader(TensorDataset(x, y), batch_size=b, shuffle=True, drop_last=True)
    loader_iter = iter(loader)

    def nonprivate_dataloader() -> int:
        nonlocal loader_iter
        try:
            xb, yb = next(loader_iter)
        except StopIteration:
            loader_iter = iter(loader)
            xb, yb = next(loader_iter)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
        return len(xb)

    def nonprivate_index() -> int:
        idx = torch.randint(0, n, (b,), generator=gen)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
        return b

    def dpsgd(engine: str, noise: TorchNoise = gen) -> Callable[[], int]:
        batches = poisson_batches(n, sample_rate=b / n, steps=10**9, generator=gen)

        def step() -> int:
            idx = next(batches)
            grads = private_gradient(model, x[idx], y[idx], max_grad_norm=1.0,
                                     noise_multiplier=1.0, expected_batch_size=b,
                                     generator=noise, engine=engine)  # fmt: skip
            for name, prm in model.named_parameters():
                prm.grad = grads[name]
            opt.step()
            return len(idx)

        return step

    rows: dict[str, Callable[[], int]] = {
        "non-private, DataLoader": nonprivate_dataloader,
        "non-private, tensor index": nonprivate_index,
        "dpal DP-SGD, engine=layers": dpsgd("layers"),
        "dpal DP-SGD, engine=torch.func": dpsgd("torch.func"),
        "dpal DP-SGD, engine=layers, --secure-noise": dpsgd("layers", SecureNoise()),
    }
    results: dict[str, list[float]] = {k: [] for k in rows}
    for _ in range(a.rounds):
        for name, step in rows.items():
            results[name].append(throughput(step, a.seconds))
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"batch {b}, {a.threads} threads, torch {torch.__version__}, median of {a.rounds} rounds")
    for k, v in med.items():
        print(f"  {k:<32} {v:9.0f} examples/s")
    for dp in ("dpal DP-SGD, engine=layers", "dpal DP-SGD, engine=torch.func"):
        for base in ("non-private, DataLoader", "non-private, tensor index"):
            print(f"  ratio {dp.split(', ')[1]:<18} / {base:<26} {med[dp] / med[base]:.2f}")
    secure = med["dpal DP-SGD, engine=layers, --secure-noise"]
    plain = med["dpal DP-SGD, engine=layers"]
    print(f"  ratio --secure-noise / default noise (engine=layers)  {secure / plain:.2f}")


if __name__ == "__main__":
    main()
