"""Examples/s of one training step: non-private PyTorch, every dpal engine and Opacus's modes,
side by side in one run, same model, same batch, same data.

    python benchmarks/dpsgd_throughput.py            # MNIST CNN and cnn-gn at 256 and 1,024
    python benchmarks/dpsgd_throughput.py --models wrn-16-4 effnet-last-blocks --batch-sizes 256
    python benchmarks/dpsgd_throughput.py --device cuda --tf32  # on a GPU

Rows (each a full step: batch, gradient, SGD update):
* non-private   — ``F.cross_entropy(model(x[idx]), y[idx]).backward(); opt.step()``, uniform
  indices of the batch size (tensor indexing, no DataLoader: the harder baseline)
* dpal <engine> — a Poisson batch of expected size b, per-example clipping, Gaussian noise,
  the SGD update (``dpal.training.dpsgd.private_gradient``) for every engine in ``ENGINES``
* opacus <mode> — Opacus 1.6 ``PrivacyEngine.make_private(grad_sample_mode=hooks | functorch |
  ghost, poisson_sampling=True)`` on its own copy of the model, fed the same Poisson batches
  (so its DataLoader is not timed either); install with ``pip install --no-deps opacus==1.6.0``
  (``make bench`` does); skipped with a note when it is not installed
Each row runs ``--seconds`` and at least ``--min-steps`` steps per round; rounds interleave the
rows so drift is shared; the median over rounds is reported. Peak memory: what two steps of the
row add to the resident size (CPU) or to allocated memory (CUDA), each row in a fresh process
(``peak_extra_mib``).
Ratios printed per model and batch: each row ÷ non-private; dpal ``auto`` ÷ the best Opacus mode;
``auto`` ÷ the fastest dpal engine. ``--json`` writes every row.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dpal.models import build_model
from dpal.privacy.noise_source import TorchNoise
from dpal.training import layer_grads
from dpal.training.dpsgd import ENGINES, private_gradient
from dpal.training.sampling import poisson_batches

Step = Callable[[], int]


def model_named(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    """(model, input shape of one example) for a benchmark row name."""
    if name == "mnist-cnn":
        return build_model("cnn-tanh", (1, 28, 28), 10), (1, 28, 28)
    if name in ("cnn-gn", "wrn-16-4"):
        return build_model(name, (3, 32, 32), 10), (3, 32, 32)
    if name.startswith("effnet-"):  # the backbone's fine-tuning modes, on their cached inputs
        from dpal.models.backbones import load_backbone

        bb = load_backbone("efficientnet-lite0", image_size=128, tail_blocks=1)
        head = nn.Linear(bb.feature_dim, 10)
        if name == "effnet-linear-probe":
            return head, (bb.feature_dim,)
        if name == "effnet-last-blocks":  # as dpal.training.network builds it
            bb.tail.requires_grad_(True)
            for m in bb.tail.modules():
                if isinstance(m, nn.Conv2d) and m.groups > 1:
                    m.requires_grad_(False)
            with torch.no_grad():
                shape = tuple(bb.stem(torch.zeros(1, 3, 128, 128)).shape[1:])
            return nn.Sequential(bb.tail, head), shape
    raise SystemExit(f"unknown model {name!r}")


def throughput(step: Step, seconds: float, sync: Callable[[], None], min_steps: int) -> float:
    """Examples/s over at least ``seconds`` and ``min_steps`` steps (a row of ~1 s steps timed
    over 3 s varied by ±20% between rounds: too few Poisson batches)."""
    step()  # warm-up
    sync()
    n, steps, start = 0, 0, time.perf_counter()
    while steps < min_steps or time.perf_counter() - start < seconds:
        n += step()
        steps += 1
    sync()
    return n / (time.perf_counter() - start)


def peak_extra_mib(name: str, b: int, row: str, device: str) -> float:
    """The most memory a row's step adds, measured in a fresh process (a warm allocator would
    hide it): two steps; on CPU the peak resident memory above that before the first step, on
    CUDA ``torch.cuda.max_memory_allocated`` above the memory allocated before it."""
    here = Path(__file__).resolve().parent
    code = (f"import sys; sys.path.insert(0, {str(here)!r}); import dpsgd_throughput as t; "
            f"print(t.one_row_peak({name!r}, {b}, {row!r}, {device!r}))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        print(f"  (peak memory of {row!r} not measured: {done.stderr.strip()[-300:]})")
        return float("nan")
    return float(lines[-1])


def one_row_peak(name: str, b: int, row: str, device: str) -> float:
    torch.set_num_threads(2)
    x, y, model = data_and_model(name, b, device)
    step = rows_for(model, x, y, b, row.startswith("opacus"), "secure" in row)[row]
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step(), step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    # Not ru_maxrss: Linux carries the parent's peak across fork and exec, so every row read
    # the benchmark process's own size. The high-water mark of this process is reset instead.
    base = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident size (Linux ≥ 4.0)
    step(), step()
    return max(0, _status_kib("VmHWM") - base) / 1024


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(f"{field}:"))


def data_and_model(name: str, b: int, device: str) -> tuple[torch.Tensor, torch.Tensor, nn.Module]:
    torch.manual_seed(0)
    model, shape = model_named(name)
    n = max(8 * b, 8192)
    x = torch.randn(n, *shape, device=device)
    y = torch.randint(0, 10, (n,), device=device)
    return x, y, model.to(device)


def rows_for(model: nn.Module, x: torch.Tensor, y: torch.Tensor, b: int, opacus: bool,
             secure: bool) -> dict[str, Step]:  # fmt: skip
    n = len(x)
    gen = torch.Generator().manual_seed(0)
    noise = torch.Generator(device=x.device).manual_seed(1)
    rows: dict[str, Step] = {}

    def sgd(m: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.01)

    plain = copy.deepcopy(model)
    plain_opt = sgd(plain)

    def nonprivate() -> int:
        idx = torch.randint(0, n, (b,), generator=gen).to(x.device)
        plain_opt.zero_grad(set_to_none=True)
        F.cross_entropy(plain(x[idx]), y[idx]).backward()
        plain_opt.step()
        return b

    rows["non-private"] = nonprivate

    def dpal(engine: str, generator: TorchNoise) -> Step:
        m = copy.deepcopy(model)
        opt = sgd(m)
        batches = poisson_batches(n, sample_rate=b / n, steps=10**9, generator=gen)

        def step() -> int:
            idx = next(batches).to(x.device)
            grads = private_gradient(m, x[idx], y[idx], max_grad_norm=1.0, noise_multiplier=1.0,
                                     expected_batch_size=b, generator=generator,
                                     engine=engine)  # fmt: skip
            for name, prm in m.named_parameters():
                if prm.requires_grad:
                    prm.grad = grads[name]
            opt.step()
            return len(idx)

        return step

    for engine in ENGINES:
        if engine == "layers" and not layer_grads.supports(model):
            print("  dpal layers: not for this model (a trainable parameter outside Linear/Conv2d)")
            continue
        rows[f"dpal {engine}"] = dpal(engine, noise)
    if secure:
        from dpal.privacy.secure_noise import SecureNoise

        rows["dpal auto, --secure-noise"] = dpal("auto", SecureNoise())
    if opacus:
        for mode in ("hooks", "functorch", "ghost"):
            step = opacus_step(model, x, y, b, mode, gen)
            try:  # a mode that cannot run this model is reported, not fatal
                step()
            except Exception as err:  # Opacus raises many kinds
                print(f"  opacus {mode}: cannot run this model ({type(err).__name__}: "
                      f"{str(err)[:120]})")  # fmt: skip
                continue
            rows[f"opacus {mode}"] = step
    return rows


def opacus_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, b: int, mode: str,
                gen: torch.Generator) -> Step:  # fmt: skip
    import warnings

    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    m = copy.deepcopy(model)
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.01)
    loader = DataLoader(TensorDataset(x[:b], y[:b]), batch_size=b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        made = PrivacyEngine(accountant="rdp").make_private(
            module=m, optimizer=opt, data_loader=loader, noise_multiplier=1.0, max_grad_norm=1.0,
            poisson_sampling=True, grad_sample_mode=mode, criterion=nn.CrossEntropyLoss(),
        )  # fmt: skip
    dp_model, dp_opt = made[0], made[1]
    criterion = made[2] if mode == "ghost" else nn.CrossEntropyLoss()
    dp_opt.expected_batch_size = b
    n = len(x)
    batches = poisson_batches(n, sample_rate=b / n, steps=10**9, generator=gen)

    warnings.filterwarnings("ignore", message="Full backward hook is firing")

    def step() -> int:
        idx = next(batches).to(x.device)
        dp_opt.zero_grad(set_to_none=True)
        criterion(dp_model(x[idx]), y[idx]).backward()
        dp_opt.step()
        return len(idx)

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--models",
        nargs="+",
        default=["mnist-cnn", "cnn-gn"],
        help="mnist-cnn cnn-gn wrn-16-4 effnet-linear-probe effnet-last-blocks",
    )
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--min-steps", type=int, default=8, help="at least this many steps per round")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--tf32", action="store_true", help="CUDA: TF32 matmuls and convolutions")
    p.add_argument("--no-opacus", action="store_true")
    p.add_argument("--secure-noise", action="store_true", help="add a row with --secure-noise")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = a.tf32
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    opacus = not a.no_opacus
    if opacus:
        try:
            import opacus as _opacus

            opacus_version = _opacus.__version__
        except ImportError:
            print("Opacus not installed (pip install --no-deps opacus==1.6.0): its rows skipped")
            opacus, opacus_version = False, None
    print(f"torch {torch.__version__}, opacus {opacus_version if opacus else '-'}, {a.device}, "
          f"{a.threads} threads, median of {a.rounds} rounds × {a.seconds} s")  # fmt: skip
    out: list[dict] = []
    for name in a.models:
        for b in a.batch_sizes:
            x, y, model = data_and_model(name, b, a.device)
            rows = rows_for(model, x, y, b, opacus, a.secure_noise and name == "mnist-cnn")
            speeds: dict[str, list[float]] = {k: [] for k in rows}
            for _ in range(a.rounds):
                for row, step in rows.items():
                    speeds[row].append(throughput(step, a.seconds, sync, a.min_steps))
            med = {k: statistics.median(v) for k, v in speeds.items()}
            nan = float("nan")
            mem = {k: nan if a.no_memory else peak_extra_mib(name, b, k, a.device) for k in rows}
            base = med["non-private"]
            print(f"\n{name}, batch {b}")
            for row in rows:
                print(f"  {row:<28} {med[row]:9.0f} examples/s  {med[row] / base:5.2f}× "
                      f"non-private  peak +{mem[row]:6.0f} MiB")  # fmt: skip
                out.append({"model": name, "batch_size": b, "row": row, "device": a.device,
                            "threads": a.threads, "examples_per_s": round(med[row], 1),
                            "ratio_to_nonprivate": round(med[row] / base, 3),
                            "peak_extra_mib": round(mem[row], 1)})  # fmt: skip
            engines = [k for k in med if k.startswith("dpal ") and "secure" not in k]
            fastest = max((k for k in engines if k != "dpal auto"), key=med.__getitem__)
            ratio = med["dpal auto"] / med[fastest]
            picked = "layers" if layer_grads.supports(model) else "torch.func"
            print(f"  auto (runs {picked}) / fastest dpal engine ({fastest[5:]}): {ratio:.2f}")
            if fastest == f"dpal {picked}":  # auto chose the fastest: the gap is timing noise
                print(f"    (auto picked the fastest engine; the two rows run the same code, so "
                      f"their {abs(1 - ratio):.0%} gap is the measurement's noise)")  # fmt: skip
            if any(k.startswith("opacus") for k in med):
                best = max((k for k in med if k.startswith("opacus")), key=med.__getitem__)
                print(f"  auto / best Opacus ({best[7:]}): {med['dpal auto'] / med[best]:.2f}")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
