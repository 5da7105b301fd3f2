"""SIGKILL a training process at several moments: the ledger stays readable and never counts
fewer steps than the checkpoints on disk represent."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from dpal.privacy.ledger import Ledger
from dpal.training.checkpoint import list_checkpoints
from tests.conftest import make_images


@pytest.mark.parametrize("delay", [0.0, 0.8, 2.0])
def test_sigkill_leaves_a_readable_ledger_that_does_not_under_count(tmp_path, delay):
    for split, n, seed in (("train", 2000, 0), ("test", 100, 1)):
        arrays = make_images(n, seed=seed)
        np.savez(tmp_path / f"{split}.npz", x=arrays.x[..., 0], y=arrays.y)
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "dpal.cli", "train", "--dataset", f"npz:{tmp_path}",
            "--noise-multiplier", "1.0", "--epochs", "200", "--batch-size", "100",
            "--out", str(out), "--quiet"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "ledger.json").exists():  # training has started once the ledger exists
        assert proc.poll() is None, "training exited before it started"
        assert time.monotonic() < deadline, "training did not start within 120 s"
        time.sleep(0.02)
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ledger = Ledger(out / "ledger.json")  # readable: no half-written file
    counted = sum(e.params["steps"] for e in ledger.counted())
    saved = list_checkpoints(out)
    saved_steps = saved[-1]["steps"] if saved else 0
    assert counted >= saved_steps
    assert counted <= saved_steps + 20  # at most the one interrupted epoch (20 steps) on top
