"""Data-parallel DP-SGD on ``torch.distributed``: K processes release the one-process mechanism.

Run under ``torchrun --standalone --nproc-per-node K $(which dpal) train ...`` (or the Python
API under torchrun): :func:`join` finds the process group torchrun describes in the environment
(``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``; gloo on the CPU, NCCL on CUDA) and every rank trains
its shard; with ``WORLD_SIZE`` unset or 1 it is the one-process run, untouched.

Why the released gradient is exactly the one-process mechanism (so ε is unchanged):

* **Sampling.** Example i lives on rank i mod K. Every rank draws the same N uniforms from the
  sampler generator (one seed for all), and example i joins the step's batch B when its own
  uniform is below q — so every example is drawn independently with rate q wherever it lives, B
  is the batch one process would draw, and rank r takes B_r = {i ∈ B : i mod K = r}. (A stream
  per rank would give the same distribution; one stream also gives the same *draws*, which makes
  "K processes = one process" testable bit for bit up to the order of a float sum. The N
  uniforms cost microseconds per thousand examples, far below a gradient.)
* **Clipping** is per example, on the rank that holds it: rank r computes
  S_r = Σ_{i∈B_r} clip_C(∇ℓ_i).
* **Noise once.** Only rank 0 adds Z ~ N(0, σ²C²·I), to its own S_0, before the sum; the
  all-reduce then gives every rank Σ_r S_r + Z = Σ_{i∈B} clip_C(∇ℓ_i) + Z, the one-process noisy
  sum, divided by the public constant q·N as before. Adding or removing one example changes one
  S_r by one term of norm ≤ C, so the L2 sensitivity of the released sum is still C and each step
  is still ``PoissonSampledDpEvent(q, GaussianDpEvent(σ))``. (Noise on every rank would be
  √K·σ·C in all: as private, K× the variance for nothing; the other ranks hold no noise
  generator at all.)
* **One writer.** Rank 0 alone opens the ledger, records each epoch before its steps run,
  evaluates, and writes checkpoints; every rank holds identical weights (they apply the same
  summed gradient), so rank 0's checkpoint is the model. A kill of any rank stops the group
  (torchrun ends the rest); ``--resume`` from rank 0's last checkpoint then restores every rank
  from it, and the interrupted epoch's pending entry is voided and re-run — no step lost, none
  counted twice (``dpal.training.lineage.open_run_ledger``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from dpal.core.errors import DpalError

Params = dict[str, torch.Tensor]
T = TypeVar("T")


@dataclass(frozen=True)
class Group:
    """This process's place among the training processes (a group of one by default)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_writer(self) -> bool:
        """Rank 0: the one process that writes the ledger, checkpoints and metrics."""
        return self.rank == 0

    @property
    def adds_noise(self) -> bool:
        """Rank 0 adds the step's Gaussian noise, once, for the whole group."""
        return self.rank == 0

    def local_indices(self, n: int) -> torch.Tensor:
        """The global indices of the examples this rank holds: i ≡ rank (mod world size)."""
        return torch.arange(self.rank, n, self.world_size)

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """Of a global batch's indices, positions in this rank's shard of the ones it holds."""
        if self.world_size == 1:
            return batch
        return batch[batch % self.world_size == self.rank] // self.world_size

    def sum(self, grads: Params) -> Params:
        """The sum over ranks of every tensor, in one all-reduce (a flat buffer)."""
        if self.world_size == 1:
            return grads
        keys = sorted(grads)  # one order on every rank, whatever order each engine returns
        flat = torch.cat([grads[k].reshape(-1) for k in keys])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        out, at = {}, 0
        for k in keys:
            size = grads[k].numel()
            out[k] = flat[at : at + size].view_as(grads[k])
            at += size
        return out

    def on_writer(self, fn: Callable[[], T]) -> T | None:
        """``fn()`` on rank 0 only; a DpalError there is raised on every rank, so no rank waits
        for a step that rank 0 will never take. Returns None on the other ranks."""
        result: T | None = None
        failure: list[str | None] = [None]
        if self.is_writer:
            try:
                result = fn()
            except DpalError as err:
                failure = [str(err)]
        if self.world_size > 1:
            dist.broadcast_object_list(failure, src=0)
        if failure[0] is not None:
            raise DpalError(failure[0])
        return result


def join(device: str = "cpu") -> Group:
    """The group torchrun describes in the environment (initialised here once), or one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Group()
    if not dist.is_initialized():
        gpu = device.startswith("cuda")
        if gpu:  # NCCL wants each rank's own device set before the group forms
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if gpu else "gloo")
    return Group(rank=dist.get_rank(), world_size=dist.get_world_size())


def local_device(device: str) -> str:
    """Under torchrun each rank takes its own GPU: ``cuda`` → ``cuda:LOCAL_RANK``."""
    if device == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device
