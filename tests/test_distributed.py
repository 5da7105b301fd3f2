"""DP-SGD on torch.distributed (gloo, 2 CPU processes under torchrun) releases what one process
releases: the same model from the same seeds, the same ledger, the same ε; a kill of one rank,
then ``--resume``, loses no step and counts none twice."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from dpal.privacy.ledger import Ledger
from dpal.training.checkpoint import load_checkpoint
from dpal.training.distributed import Group

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]

# Rank 1 dies (SIGKILL) in the middle of epoch 2: at its 14th all-reduce (10 steps per epoch).
KILL_RANK_1 = textwrap.dedent(
    """
    import os, signal, sys
    from dpal.training.distributed import Group
    real, calls = Group.sum, [0]
    def sum_then_die(self, grads):
        calls[0] += 1
        if self.rank == 1 and calls[0] == 14:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, grads)
    Group.sum = sum_then_die
    from dpal.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def _train_argv(dataset: str, out: Path, epochs: int = 3, batch: int = 40) -> list[str]:
    return ["train", "--dataset", dataset, "--noise-multiplier", "1.0", "--epochs", str(epochs),
            "--batch-size", str(batch), "--seed", "3", "--deterministic-noise", "--out", str(out),
            "--quiet"]  # fmt: skip


def _run(argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stdout[-3000:] + proc.stderr[-3000:])
    return proc


def _release(out: Path, epoch: int) -> dict[str, torch.Tensor]:
    return load_checkpoint(out / "checkpoints" / f"epoch_{epoch:03d}.pt")["model"]


def _events(out: Path) -> list[tuple[str, dict, str]]:
    return [(e.kind, e.params, e.status) for e in Ledger(out / "ledger.json").entries]


def test_group_shards_every_example_to_exactly_one_rank_and_sums_one_order():
    batch = torch.tensor([0, 3, 4, 7, 8, 11])
    held = [Group(r, 3).local_indices(12)[Group(r, 3).shard(batch)] for r in range(3)]
    assert sorted(torch.cat(held).tolist()) == batch.tolist()
    assert Group().shard(batch) is batch and Group().sum({"a": batch}) == {"a": batch}
    assert [Group(r, 2).adds_noise for r in range(2)] == [True, False]


@pytest.mark.xdist_group("torchrun")
def test_two_processes_release_the_one_process_model_ledger_and_epsilon(npz_dataset, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    argv = {"epochs": 3, "batch": 200}  # q = 1/2: 2 steps an epoch
    _run([sys.executable, "-m", "dpal.cli", *_train_argv(npz_dataset, one, **argv)])
    proc = _run([*TORCHRUN, "-m", "dpal.cli", *_train_argv(npz_dataset, two, **argv)])
    assert proc.stdout.count("test accuracy") == 1  # rank 0 reports for the group
    # Equal up to the order of the float sums (rank 0's half + rank 1's half): ~1e-8 after the
    # first epoch's 2 steps. A wrong mechanism differs by a step's noise, lr·σC/B ~ 1e-3. SGD on
    # this network then amplifies rounding by orders of magnitude within a few steps, and by how
    # much depends on the CPU's kernels (6e-8 on one machine after 10 steps, 3e-5 on another),
    # so later epochs are compared through their ledger and ε, not their weights.
    for k, w in _release(one, 1).items():
        torch.testing.assert_close(_release(two, 1)[k], w, rtol=0, atol=1e-6)
    assert _events(two) == _events(one)
    s1 = load_checkpoint(one / "checkpoints" / "epoch_003.pt")["summary"]
    s2 = load_checkpoint(two / "checkpoints" / "epoch_003.pt")["summary"]
    assert s2["epsilon"] == s1["epsilon"] and s2["steps"] == s1["steps"] == 6


@pytest.mark.xdist_group("torchrun")
def test_a_killed_rank_then_resume_loses_no_step_and_counts_none_twice(npz_dataset, tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    script = tmp_path / "kill_rank_1.py"
    script.write_text(KILL_RANK_1)
    _run([*TORCHRUN, "-m", "dpal.cli", *_train_argv(npz_dataset, whole)])
    died = _run([*TORCHRUN, str(script), *_train_argv(npz_dataset, cut)], check=False)
    assert died.returncode != 0
    assert "SIGKILL" in died.stderr  # torchrun's report of rank 1's death
    assert [s for _, _, s in _events(cut)] == ["done", "pending"]  # epoch 2 never saved
    assert not (cut / "checkpoints" / "epoch_002.pt").exists()
    resume = ["train", "--resume", str(cut / "checkpoints" / "epoch_001.pt"), "--epochs", "3",
              "--quiet"]  # fmt: skip
    _run([*TORCHRUN, "-m", "dpal.cli", *resume])
    ledger = Ledger(cut / "ledger.json")
    assert [e.status for e in ledger.entries] == ["done", "void", "done", "done"]
    assert sum(e.params["steps"] for e in ledger.counted()) == 30  # 3 epochs, once each
    for k, w in _release(whole, 3).items():  # the resumed run is the uninterrupted one
        torch.testing.assert_close(_release(cut, 3)[k], w, rtol=1e-5, atol=1e-6)
    assert (
        load_checkpoint(cut / "checkpoints" / "epoch_003.pt")["summary"]["epsilon"]
        == load_checkpoint(whole / "checkpoints" / "epoch_003.pt")["summary"]["epsilon"]
    )
