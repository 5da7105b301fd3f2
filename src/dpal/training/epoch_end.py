"""The end of a training epoch, on the one process that writes (rank 0 under torchrun): evaluate
the release, save it with its private resume state and its ledger lineage, mark the epoch's
ledger entry done, append the metrics line, print the progress line.

Order matters for privacy bookkeeping: the entry was recorded before the epoch's steps ran; it is
marked done only after the checkpoint is on disk, so a kill in between leaves it pending and
resume decides from the files (``dpal.training.lineage.open_run_ledger``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from dpal.data.arrays import ImageArrays
from dpal.data.tasks import Task
from dpal.privacy.ledger import Ledger
from dpal.training.checkpoint import checkpoint_path, save_checkpoint
from dpal.training.config import TrainConfig
from dpal.training.evaluate import accuracy, evaluation_data, holdout_accuracy
from dpal.training.lineage import SNAPSHOT_KEY, snapshot
from dpal.training.network import Network

VALIDATION_KEY = "validation_accuracy_nonprivate"  # metrics.jsonl; never in a release


@dataclass
class EpochWriter:
    """What every epoch's record shares: the run's folder, ledger, configuration and network."""

    out: Path
    ledger: Ledger
    config: TrainConfig
    net: Network
    task: Task
    sigma: float
    q: float
    per_epoch: int
    device: str
    progress: bool
    started: float = field(default_factory=time.perf_counter)

    @cached_property
    def test(self) -> ImageArrays | tuple[torch.Tensor, torch.Tensor] | None:
        """The test set as :func:`evaluate.evaluation_data` gives it, computed once."""
        t = self.task.test
        return evaluation_data(t, self.net.inputs) if t is not None else None

    def write(
        self,
        epoch: int,
        entry: int,
        lineage: list[int],
        eps: float,
        released: nn.Module,
        extra: dict[str, float],
        resume_state: dict[str, Any],
    ) -> tuple[float, dict[str, Any], str]:
        """Evaluate and save epoch ``epoch``; its test accuracy, history row and progress line."""
        cfg, task, test = self.config, self.task, self.test
        test_acc = accuracy(released, test, self.device) if test is not None else math.nan
        val_acc, val_entry = holdout_accuracy(
            released, task, self.ledger, epoch, self.device, self.net.inputs
        )
        summary = {
            "epoch": epoch,
            "steps": epoch * self.per_epoch,
            "epsilon": eps,
            "delta": cfg.delta,
            "noise_multiplier": self.sigma if cfg.private else None,
            "sample_rate": self.q,
            "test_accuracy": test_acc,
            "ledger_entries": lineage,
            SNAPSHOT_KEY: snapshot(self.ledger, [entry]),
            "config": cfg.to_dict(),
            "network": self.net.spec,
            "image_shape": list(task.image_shape),
            "num_classes": task.num_classes,
            "wall_seconds": time.perf_counter() - self.started,
            **extra,  # AdaMix: mean threshold, mix weight (free)
        }
        ckpt = checkpoint_path(self.out, epoch)
        save_checkpoint(ckpt, released.state_dict(), summary, resume_state)
        self.ledger.resolve(entry, "done")
        metrics = {k: v for k, v in summary.items() if k not in ("config", SNAPSHOT_KEY)}
        if val_acc is not None:  # beside the release, never in it: not a DP statistic
            metrics[VALIDATION_KEY] = val_acc
        with (self.out / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(metrics) + "\n")
        if val_entry is not None:
            self.ledger.resolve(val_entry, "done")
        line = f"epoch {epoch}/{cfg.epochs}  ε={eps:.3f}  " + (
            f"test acc={test_acc:.4f}" if test is not None else "test acc=n/a (no test)"
        )
        if val_acc is not None:
            line += f"  val acc={val_acc:.4f} [non-private: held-out private images]"
        if self.progress:
            tqdm.write(line)
        return test_acc, {**summary, **metrics}, line
