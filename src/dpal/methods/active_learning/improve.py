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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from dpal.core.atomic import atomic_torch_save, atomic_write_text
from dpal.core.errors import DpalError
from dpal.data.arrays import ImageArrays
from dpal.data.tasks import Task, load_task
from dpal.labeling.oracle import REJECTED, Oracle
from dpal.models.embedding import logits_and_embeddings
from dpal.privacy import noise_source
from dpal.privacy.ledger import Ledger
from dpal.privacy.noise_source import numpy_noise_rng
from dpal.selection.near_private import NearPrivateConfig, near_private
from dpal.selection.scores import uncertainty
from dpal.selection.strategies import (
    STRATEGIES,
    diverse_public,
    random_selection,
    top_uncertain,
)
from dpal.training.checkpoint import RELEASE_FORMAT, load_checkpoint
from dpal.training.evaluate import accuracy, logits_of
from dpal.training.finetune import FinetuneConfig, finetune
from dpal.training.lineage import SNAPSHOT_KEY, open_checked, snapshot
from dpal.training.network import rebuild_release


@dataclass(frozen=True, kw_only=True)
class SelectConfig:
    strategy: str
    n_labeled: int
    k: int | None = None  # candidates; default n_labeled + 2000
    n_each: int = 10
    n_components: int = 16
    score: str = "margin"  # uncertainty used by diverse-public and near-private
    epsilon_pca: float = 0.4
    epsilon_support: float = 0.6
    private_selection: str = "threshold"
    delta: float = 1e-5
    seed: int = 0
    # DP-PCA and support-count noise from ``seed`` instead of OS entropy (experiments only:
    # whoever knows the seed can undo the noise; dpal.privacy.noise_source).
    deterministic_noise: bool = False

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise DpalError(
                f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}."
            )
        if self.n_labeled < 1:
            raise DpalError(f"--n-labeled must be ≥ 1, got {self.n_labeled}.")
        if self.strategy == "diverse-public" and self.n_labeled % self.n_each:
            raise DpalError(
                f"diverse-public takes n_labeled = n_clusters × n_each: {self.n_labeled} is not a "
                f"multiple of n_each = {self.n_each}; change --n-labeled or --n-each."
            )

    @property
    def candidates(self) -> int:
        return self.k if self.k is not None else self.n_labeled + 2000


@dataclass
class Checkpoint:
    model: nn.Module
    summary: dict[str, Any]
    path: Path

    @property
    def run_dir(self) -> Path:
        return self.path.resolve().parent.parent


def load_released_model(path: str | Path, *, model: nn.Module | None = None) -> Checkpoint:
    """A checkpoint's released image classifier, rebuilt from what its summary records
    (``model``: the architecture, for a run that trained your own ``nn.Module`` instance)."""
    state = load_checkpoint(path)
    s = state["summary"]
    return Checkpoint(rebuild_release(s, state["model"], model=model), s, Path(path))


def lineage_ledger(checkpoint: Checkpoint, path: Path) -> Ledger:
    """A new ledger holding exactly the entries behind ``checkpoint`` (the run's ledger checked
    against its checkpoints' lineage first: an edited one is refused)."""
    source = open_checked(checkpoint.run_dir)
    ids = set(checkpoint.summary["ledger_entries"])
    entries = [e for e in source.entries if e.id in ids]
    if len(entries) != len(ids):
        raise DpalError(f"{checkpoint.run_dir}/ledger.json lacks entries of {checkpoint.path}.")
    return source.subset_to(path, entries, note=f"from {checkpoint.run_dir.name}")


def select(
    model: nn.Module, task: Task, config: SelectConfig, ledger: Ledger
) -> tuple[np.ndarray, list[int]]:
    """Pool indices to label, and the ledger entries (pending) the selection added."""
    if task.public is None:
        raise DpalError(f"task {task.name!r} has no public pool to select from.")
    rng = np.random.default_rng(config.seed)
    n_pool = len(task.public)
    if config.strategy == "random":
        return random_selection(n_pool, config.n_labeled, rng=rng), []
    pool_x, _ = task.public.tensors()
    if config.strategy in ("entropy", "margin"):
        logits = logits_of(model, pool_x).numpy()
        return top_uncertain(uncertainty(logits, config.strategy), config.n_labeled), []
    logits_t, emb_t = logits_and_embeddings(model, pool_x)  # one pass over the pool
    unc, pool_emb = uncertainty(logits_t.numpy(), config.score), emb_t.numpy()
    if config.strategy == "diverse-public":
        picked = diverse_public(
            pool_emb,
            unc,
            config.n_labeled,
            k=config.candidates,
            n_clusters=config.n_labeled // config.n_each,
            n_each=config.n_each,
            n_components=config.n_components,
            rng=rng,
        )
        return picked, []
    # near-private: reads the private training data (recorded in the ledger)
    priv_x, _ = task.private.tensors()
    priv_logits, priv_emb = logits_and_embeddings(model, priv_x)
    result = near_private(
        pool_emb,
        unc,
        priv_emb.numpy(),
        uncertainty(priv_logits.numpy(), config.score),
        config.n_labeled,
        config=NearPrivateConfig(
            k=config.candidates,
            n_components=config.n_components,
            epsilon_pca=config.epsilon_pca,
            epsilon_support=config.epsilon_support,
            delta=config.delta,
            private_selection=config.private_selection,
        ),
        ledger=ledger,
        rng=numpy_noise_rng(deterministic=config.deterministic_noise, seed=config.seed),
        noise=noise_source.source(config.deterministic_noise),
    )
    return result.indices, list(result.ledger_entries)


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
) -> np.ndarray:
    """Selection step of an improvement run: ``OUT/selection.json`` and ``OUT/ledger.json``.
    ``model``: the architecture of a run that trained your own ``nn.Module`` instance."""
    out = Path(out_dir)
    if (out / "ledger.json").exists():
        raise DpalError(f"{out} already holds an improvement run; choose a new --out.")
    ckpt = load_released_model(checkpoint_path, model=model)
    task = task or load_task(ckpt.summary["config"]["dataset"], data_dir=data_dir)
    ledger = lineage_ledger(ckpt, out / "ledger.json")
    picked, new_entries = select(ckpt.model, task, config, ledger)
    payload = {
        "checkpoint": str(Path(checkpoint_path).resolve()),
        "dataset": ckpt.summary["config"]["dataset"],
        "strategy": config.strategy,
        "pool_indices": picked.tolist(),
        "config": asdict(config),
        SNAPSHOT_KEY: snapshot(ledger, new_entries),  # its lineage (dpal.training.lineage)
    }
    atomic_write_text(out / "selection.json", json.dumps(payload))
    for e in new_entries:  # the selection (their output) is saved: done
        ledger.resolve(e, "done")
    return picked


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
) -> ImproveResult:
    """Fine-tuning step: the selection's checkpoint, trained on the bought ``{pool_index: label}``
    (``REJECTED`` ones are paid for but not trained on); writes ``model.pt``, ``result.json``."""
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
    bought = np.asarray([i for i in picked.tolist() if i in labels], dtype=np.int64)
    y = np.asarray([labels[i] for i in bought.tolist()], dtype=np.int64)
    keep = y != REJECTED
    data = ImageArrays(task.public.x[bought[keep]], y[keep], task.num_classes, "bought")
    tuned = finetune(ckpt.model, data, finetune_config, unlabelled=task.public)
    ledger = open_checked(out)  # fine-tuning reads public data only: the selection's ledger
    summary = {**ckpt.summary, SNAPSHOT_KEY: snapshot(ledger, [])}
    release = {"format": RELEASE_FORMAT, "model": tuned.state_dict(), "summary": summary}
    atomic_torch_save(release, out / "model.pt")  # a release, readable by load_checkpoint
    totals = ledger.totals(delta=ckpt.summary["delta"])
    result = ImproveResult(
        out_dir=out,
        test_accuracy=accuracy(tuned, task.test) if task.test is not None else math.nan,
        start_accuracy=ckpt.summary["test_accuracy"],
        epsilon_dp=ckpt.summary["epsilon"],
        epsilon_total=totals.epsilon_pld,
        epsilon_rdp=totals.epsilon_rdp,
        epsilon_naive=totals.epsilon_naive,
        n_labeled=len(bought),
        n_rejected=int((~keep).sum()),
        n_polluted=0 if task.public_valid is None else int((~task.public_valid[picked]).sum()),
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
) -> ImproveResult:
    """Select ``config.n_labeled`` public points, label them (``oracle``: the pool's true labels
    by default), fine-tune the checkpoint's released model on them, evaluate, record."""
    if task is None:
        ckpt_summary = load_checkpoint(checkpoint_path)["summary"]
        task = load_task(ckpt_summary["config"]["dataset"], data_dir=data_dir)
    if task.public is None:
        raise DpalError(f"task {task.name!r} has no public pool; use e.g. mnist-offline.")
    picked = select_to_dir(checkpoint_path, out_dir, config, task=task, model=model)
    oracle = oracle or Oracle(task.public.y, task.public_valid)
    labels = dict(zip(picked.tolist(), oracle(picked).tolist(), strict=True))
    ft = finetune_config or FinetuneConfig(seed=config.seed)
    return finetune_dir(out_dir, labels, ft, task=task, model=model)
