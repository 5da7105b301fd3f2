"""Improve a DP model with labels bought for public points (Zhao et al. 2019): select, label,
fine-tune — with the privacy ledger of the result.

The run directory of an improvement holds a ledger with the entries behind the starting
checkpoint (its lineage, copied from its training run) plus NearPrivate's two, if it ran; its ε
is the ε of the improved model. (Valid for that model: the training run's *later* checkpoints, if
released too, are releases of their own.)
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dpal.core.atomic import atomic_torch_save, atomic_write_text
from dpal.core.errors import DpalError
from dpal.data.arrays import ImageArrays
from dpal.data.tasks import Task, load_task
from dpal.labeling.oracle import REJECTED, Oracle
from dpal.methods.active_learning.guard import (
    GuardConfig,
    guarded_finetune,
    random_validation,
    validation_size,
)
from dpal.methods.active_learning.select_step import SelectConfig, select
from dpal.privacy.ledger import Ledger
from dpal.training.checkpoint import RELEASE_FORMAT, load_checkpoint
from dpal.training.evaluate import accuracy
from dpal.training.finetune import FinetuneConfig
from dpal.training.lineage import SNAPSHOT_KEY, open_checked, snapshot
from dpal.training.network import (
    Network,
    rebuild_network,
    released_classifier,
    trains_on_features,
)


@dataclass
class Checkpoint:
    """``model``: the released image classifier; ``network``: what it was trained as (for a
    frozen backbone, its head and the cached features it reads), for selection and fine-tuning."""

    model: nn.Module
    summary: dict[str, Any]
    path: Path
    network: Network

    @property
    def run_dir(self) -> Path:
        return self.path.resolve().parent.parent


def load_released_model(path: str | Path, *, model: nn.Module | None = None) -> Checkpoint:
    """A checkpoint's released image classifier, rebuilt from what its summary records
    (``model``: the architecture, for a run that trained your own ``nn.Module`` instance)."""
    state = load_checkpoint(path)
    s = state["summary"]
    net = rebuild_network(s, state["model"], model=model)
    return Checkpoint(released_classifier(net).eval(), s, Path(path), net)


def lineage_ledger(checkpoint: Checkpoint, path: Path) -> Ledger:
    """A new ledger holding exactly the entries behind ``checkpoint`` (the run's ledger checked
    against its checkpoints' lineage first: an edited one is refused)."""
    source = open_checked(checkpoint.run_dir)
    ids = set(checkpoint.summary["ledger_entries"])
    entries = [e for e in source.entries if e.id in ids]
    if len(entries) != len(ids):
        raise DpalError(f"{checkpoint.run_dir}/ledger.json lacks entries of {checkpoint.path}.")
    return source.subset_to(path, entries, note=f"from {checkpoint.run_dir.name}")


@dataclass(frozen=True)
class ImproveResult:
    out_dir: Path
    test_accuracy: float
    start_accuracy: float
    epsilon_dp: float
    epsilon_total: float
    epsilon_rdp: float
    epsilon_naive: float
    n_labeled: int
    n_rejected: int
    n_polluted: int  # selected images that are none of the classes (known only in experiments)
    kept: str  # the guard's choice: "fine-tuned", or "start" (the DP model shipped unchanged)
    n_validation: int  # bought labels the guard held out
    validation_start: float  # the guard's comparison on them (nan without a guard)
    validation_tuned: float
    selected: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out_dir"] = str(self.out_dir)
        d.pop("selected")
        return d


def select_to_dir(
    checkpoint_path: str | Path,
    out_dir: str | Path,
    config: SelectConfig,
    *,
    task: Task | None = None,
    data_dir: str | None = None,
    model: nn.Module | None = None,
    guard: GuardConfig | None = None,
) -> np.ndarray:
    """Selection step of an improvement run: ``OUT/selection.json`` and ``OUT/ledger.json``.
    Of the ``config.n_labeled`` labels to buy, the guard's share (``guard``; default
    ``GuardConfig(seed=config.seed)``) is drawn at random from the pool and recorded as
    ``validation_indices``; the strategy chooses the rest. ``model``: the architecture of a run
    that trained your own ``nn.Module`` instance. Returns every pool index to label."""
    out = Path(out_dir)
    if (out / "ledger.json").exists():
        raise DpalError(f"{out} already holds an improvement run; choose a new --out.")
    guard = guard or GuardConfig(seed=config.seed)
    ckpt = load_released_model(checkpoint_path, model=model)
    task = task or load_task(ckpt.summary["config"]["dataset"], data_dir=data_dir)
    if task.public is None:
        raise DpalError(f"task {task.name!r} has no public pool to select from.")
    multiple = config.n_each if config.strategy == "diverse-public" else 1
    n_validation = validation_size(config.n_labeled, guard.validation_fraction, multiple)
    strategy_config = replace(config, n_labeled=config.n_labeled - n_validation)
    ledger = lineage_ledger(ckpt, out / "ledger.json")
    net = ckpt.network
    picked, new_entries = select(net.trainable, task, strategy_config, ledger, inputs=net.inputs)
    validation = random_validation(len(task.public), picked, n_validation, guard.seed)
    payload = {
        "checkpoint": str(Path(checkpoint_path).resolve()),
        "dataset": ckpt.summary["config"]["dataset"],
        "strategy": config.strategy,
        "pool_indices": picked.tolist() + validation.tolist(),  # every label to buy
        "validation_indices": validation.tolist(),  # the guard's random share of them
        "config": asdict(config),
        "guard": asdict(guard),
        SNAPSHOT_KEY: snapshot(ledger, new_entries),  # its lineage (dpal.training.lineage)
    }
    atomic_write_text(out / "selection.json", json.dumps(payload))
    for e in new_entries:  # the selection (their output) is saved: done
        ledger.resolve(e, "done")
    return np.concatenate([picked, validation])


def read_selection(out_dir: str | Path) -> dict[str, Any]:
    path = Path(out_dir) / "selection.json"
    if not path.exists():
        raise DpalError(f"{path}: no selection here; run `dpal select ... --out {out_dir}` first.")
    selection: dict[str, Any] = json.loads(path.read_text())
    return selection


def finetune_dir(
    out_dir: str | Path,
    labels: dict[int, int],
    finetune_config: FinetuneConfig,
    *,
    task: Task | None = None,
    data_dir: str | None = None,
    model: nn.Module | None = None,
    guard: GuardConfig | None = None,
) -> ImproveResult:
    """Fine-tuning step: the selection's checkpoint, trained on the bought ``{pool_index: label}``
    (``REJECTED`` ones are paid for but not trained on) behind the guard (``guard``: default
    ``GuardConfig(seed=finetune_config.seed)``; ``dpal.methods.active_learning.guard``) — the
    starting model is shipped instead when it is better on held-out bought labels. Writes
    ``model.pt``, ``result.json``."""
    out = Path(out_dir)
    selection = read_selection(out)
    ckpt = load_released_model(selection["checkpoint"], model=model)
    task = task or load_task(selection["dataset"], data_dir=data_dir)
    if task.public is None:
        raise DpalError(f"task {task.name!r} has no public pool.")
    picked = np.asarray(selection["pool_indices"], dtype=np.int64)
    unknown = sorted(set(labels) - set(picked.tolist()))
    if unknown:
        raise DpalError(f"labels given for pool items that were not selected: {unknown[:10]}.")
    guard = guard or GuardConfig(**selection.get("guard", {"seed": finetune_config.seed}))
    validation_ids = set(selection.get("validation_indices", []))
    bought = np.asarray([i for i in picked.tolist() if i in labels], dtype=np.int64)
    y = np.asarray([labels[i] for i in bought.tolist()], dtype=np.int64)
    keep = y != REJECTED
    is_val = np.asarray([i in validation_ids for i in bought.tolist()], dtype=bool)

    pool = task.public

    def part(mask: np.ndarray, name: str) -> ImageArrays:
        return ImageArrays(pool.x[bought[mask]], y[mask], task.num_classes, name)

    data, val = part(keep & ~is_val, "bought"), part(keep & is_val, "bought-validation")
    net = ckpt.network
    if trains_on_features(net):  # a head on cached features: no images to augment
        guarded = guarded_finetune(net.trainable, data, val,
                                   replace(finetune_config, augment="none"), guard,
                                   unlabelled=task.public, inputs=net.inputs)  # fmt: skip
        test = (
            (net.inputs(task.test), torch.from_numpy(task.test.y))
            if task.test is not None
            else None
        )
    else:
        guarded = guarded_finetune(net.trainable, data, val, finetune_config, guard,
                                   unlabelled=task.public)  # fmt: skip
        test = task.test.tensors() if task.test is not None else None
    tuned = guarded.model
    ledger = open_checked(out)  # fine-tuning reads public data only: the selection's ledger
    summary = {**ckpt.summary, SNAPSHOT_KEY: snapshot(ledger, [])}
    release = {"format": RELEASE_FORMAT, "model": tuned.state_dict(), "summary": summary}
    atomic_torch_save(release, out / "model.pt")  # a release, readable by load_checkpoint
    totals = ledger.totals(delta=ckpt.summary["delta"])
    result = ImproveResult(
        out_dir=out,
        test_accuracy=accuracy(tuned, test) if test is not None else math.nan,
        start_accuracy=ckpt.summary["test_accuracy"],
        epsilon_dp=ckpt.summary["epsilon"],
        epsilon_total=totals.epsilon_pld,
        epsilon_rdp=totals.epsilon_rdp,
        epsilon_naive=totals.epsilon_naive,
        n_labeled=len(bought),
        n_rejected=int((~keep).sum()),
        n_polluted=0 if task.public_valid is None else int((~task.public_valid[picked]).sum()),
        kept=guarded.kept,
        n_validation=guarded.n_validation,
        validation_start=guarded.validation_start,
        validation_tuned=guarded.validation_tuned,
        selected=picked,
    )
    atomic_write_text(out / "result.json", json.dumps(result.to_dict(), indent=1))
    return result


def improve(
    checkpoint_path: str | Path,
    out_dir: str | Path,
    config: SelectConfig,
    finetune_config: FinetuneConfig | None = None,
    *,
    task: Task | None = None,
    data_dir: str | None = None,
    oracle: Oracle | None = None,
    model: nn.Module | None = None,
    guard: GuardConfig | None = None,
) -> ImproveResult:
    """Select ``config.n_labeled`` public points, label them (``oracle``: the pool's true labels
    by default), fine-tune the checkpoint's released model on them behind the guard, evaluate,
    record."""
    if task is None:
        ckpt_summary = load_checkpoint(checkpoint_path)["summary"]
        task = load_task(ckpt_summary["config"]["dataset"], data_dir=data_dir)
    if task.public is None:
        raise DpalError(f"task {task.name!r} has no public pool; use e.g. mnist-offline.")
    guard = guard or GuardConfig(seed=config.seed)
    picked = select_to_dir(checkpoint_path, out_dir, config, task=task, model=model, guard=guard)
    oracle = oracle or Oracle(task.public.y, task.public_valid)
    labels = dict(zip(picked.tolist(), oracle(picked).tolist(), strict=True))
    ft = finetune_config or FinetuneConfig(seed=config.seed)
    return finetune_dir(out_dir, labels, ft, task=task, model=model, guard=guard)
