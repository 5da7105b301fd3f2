"""``dpal adamix run``: AdaMix (Golatkar et al. 2022) with its ablations and baselines in one
resumable runner, all on the same network, data and ε.

Per seed: a few-shot labelled public set D_pub (``public_per_class`` images per class, bought from
the task's public pool, or — for a task without one — drawn from a held-out tail of the training
set that is then *not* private); a model trained on D_pub alone to convergence (free; the
"public only" arm and everyone's initialisation); then, per ε, DP fine-tuning on D_priv:

- ``dp-finetune``: plain DP-SGD from the few-shot model;
- ``adamix-no-projection``, ``adamix-no-adaptive-clip``, ``adamix-no-mixing``: AdaMix without
  one ingredient;
- ``adamix``: projection onto the public top-k gradient subspace, clip bound from public norms,
  inverse-variance mixing with the public gradient (:mod:`dpal.training.adamix`);
- ``adamix-initial-subspace`` (beyond the paper; only when ``arms`` names it): AdaMix with the
  subspace computed once, at the few-shot model, instead of at every step;

and the non-private upper bound (D_priv ∪ D_pub, same network, epochs and learning rate,
clipped but noiseless: ``TrainConfig.nonprivate_clip``). The paper's metric is
the error increase over the non-private model, (err − err_np) / err_np. A ``snr`` cell measures
the projection's effect on the gradient's signal-to-noise ratio at the few-shot initialisation.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dpal.core.atomic import atomic_write_text
from dpal.core.errors import DpalError
from dpal.data.arrays import ImageArrays
from dpal.data.tasks import Task, load_task
from dpal.methods.adamix.fewshot import (
    FEWSHOT_SELECTIONS,
    embedder,
    fewshot_config,
    fewshot_split,
    train_fewshot,
)
from dpal.methods.adamix.tables import ARMS, DEFAULT_ARMS, DP_ARMS, adamix_table, plot_adamix
from dpal.models.public_init import save_public_init
from dpal.runs.cells import Cell, run_cells
from dpal.training.config import TrainConfig
from dpal.training.finetune import FinetuneConfig
from dpal.training.network import instance_name, network_for
from dpal.training.trainer import resolve_noise, train


@dataclass(frozen=True, kw_only=True)
class AdamixConfig:
    dataset: str = "mnist-offline"
    public_per_class: int = 10
    epsilons: tuple[float, ...] = (1.0, 3.0, 8.0)
    seeds: int = 1
    # Seeds first_seed … first_seed + seeds − 1: two processes can share one --out folder (one
    # seed each); a later run over all the seeds finds every cell done and writes the table.
    first_seed: int = 0
    arms: tuple[str, ...] = DEFAULT_ARMS
    fewshot: FinetuneConfig = field(
        default_factory=lambda: FinetuneConfig(epochs=100, batch_size=32, lr=0.05)
    )
    # lr chosen on a held-out split of the offline MNIST protocol at ε = 1 among 1, 2, 4, 8
    # (docs/RESULTS.md); at lr 0.5 the runs were limited by steps and ε did not matter.
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            epochs=5, batch_size=1024, lr=4.0, ema=0.99, epsilon=1.0
        )
    )
    projection_rank: int = 16
    clip_quantile: float = 0.5
    public_mix: float | str = "inverse-variance"
    public_holdout: int = 5000  # tasks without a public pool: D_pub is drawn from this tail
    fewshot_selection: str = "random"  # or "diverse-public" (methods/adamix/fewshot.py)

    def __post_init__(self) -> None:
        unknown = set(self.arms) - set(ARMS)
        if unknown:
            raise DpalError(f"unknown arms {sorted(unknown)}; choose from {', '.join(ARMS)}.")
        if self.fewshot_selection not in FEWSHOT_SELECTIONS:
            choices = ", ".join(FEWSHOT_SELECTIONS)
            raise DpalError(f"--fewshot-selection must be one of {choices}, got "
                            f"{self.fewshot_selection!r}.")  # fmt: skip
        if self.public_per_class < 1:
            raise DpalError(f"--public-per-class must be ≥ 1, got {self.public_per_class}.")


def run_adamix(
    config: AdamixConfig,
    out: str | Path,
    *,
    data_dir: str | None = None,
    task: Task | None = None,
    progress: bool = True,
    model: nn.Module | None = None,
) -> list[dict[str, Any]]:
    """Every cell of ``config`` into ``out`` (resumable: finished cells are kept). ``model``: your
    own ``nn.Module`` instead of ``config.train.model``; each arm trains a fresh copy of it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.json", json.dumps(asdict(config), indent=1))
    full_task = task or load_task(config.dataset, data_dir=data_dir)
    rows = run_cells(out, _cells(config, full_task, out, progress, model), progress=progress)
    atomic_write_text(out / "results.json", json.dumps(rows, indent=1))
    atomic_write_text(out / "results.md", adamix_table(rows))
    plot_adamix(rows, out / "error_increase.png", full_task.name)
    return rows


def _cells(
    config: AdamixConfig, full_task: Task, out: Path, progress: bool, user: nn.Module | None
) -> Iterator[Cell]:
    embed = None
    if config.fewshot_selection == "diverse-public":
        embed = embedder(config.train, full_task, progress=progress)
    for seed in range(config.first_seed, config.first_seed + config.seeds):
        seed_dir = out / f"seed{seed}"
        task, public = fewshot_split(full_task, config.public_per_class, seed,
                                     config.public_holdout, selection=config.fewshot_selection,
                                     embed=embed)  # fmt: skip
        public_npz, fewshot_pt = seed_dir / "public.npz", seed_dir / "fewshot.pt"
        base = replace(config.train, dataset=task.name, seed=seed)

        def fewshot(
            _: Path,
            task: Task = task,
            public: ImageArrays = public,
            seed: int = seed,
            public_npz: Path = public_npz,
            fewshot_pt: Path = fewshot_pt,
            base: TrainConfig = base,
        ) -> tuple[dict[str, Any], dict[str, Any]]:
            np.savez(public_npz, x=public.x, y=public.y)
            model, net, acc = train_fewshot(base, task, public, config.fewshot, seed=seed,
                                            progress=progress, model=copy_of(user))  # fmt: skip
            save_public_init(
                fewshot_pt,
                model,
                model_name=instance_name(user) if user is not None else base.model,
                image_shape=task.image_shape,
                learned_from=f"{public.name}: {len(public)} labelled public images",
                with_head=True,  # a model of this very task: AdaMix starts from all of it
                num_classes=task.num_classes,
            )
            row = {
                "arm": "public-only",
                "epsilon_target": 0.0,
                "epsilon": 0.0,
                "test_accuracy": acc,
                "n_public": len(public),
                "public_classes": len(np.unique(public.y)),
            }
            fewshot_used = asdict(fewshot_config(config.fewshot, net, seed))
            return row, {"fewshot": fewshot_used, "public_set": str(public_npz)}

        yield Cell(seed, "public-only", fewshot)
        for eps in config.epsilons:
            for arm in DP_ARMS:
                if arm in config.arms:
                    tc = _arm_config(
                        config, arm, replace(base, epsilon=eps), fewshot_pt, public_npz
                    )
                    yield Cell(
                        seed, f"{arm}-eps{eps}", _trainer(arm, eps, tc, task, progress, user)
                    )
        if "non-private" in config.arms:
            both = ImageArrays(
                np.concatenate([task.private.x, public.x]),
                np.concatenate([task.private.y, public.y]),
                task.num_classes,
                "D_priv ∪ D_pub",
            )
            tc = replace(
                base,
                private=False,
                epsilon=None,
                noise_multiplier=None,
                init=str(fewshot_pt),
                nonprivate_clip=True,  # same update rule and lr as the DP arms, without noise
            )
            yield Cell(
                seed,
                "non-private",
                _trainer("non-private", None, tc, replace(task, private=both), progress, user),
            )
        if "adamix" in config.arms and config.epsilons:
            yield Cell(seed, "snr", _snr_cell(config, task, public, base, fewshot_pt, user))


def copy_of(model: nn.Module | None) -> nn.Module | None:
    """A fresh copy of the user's module for one arm (each trains its own)."""
    return copy.deepcopy(model) if model is not None else None


def _arm_config(
    config: AdamixConfig, arm: str, tc: TrainConfig, fewshot_pt: Path, public_npz: Path
) -> TrainConfig:
    tc = replace(tc, init=str(fewshot_pt))
    if arm == "dp-finetune":
        return tc
    adamix = {
        "public_set": str(public_npz),
        "projection_rank": config.projection_rank,
        "clip_quantile": config.clip_quantile,
        "public_mix": config.public_mix,
    }
    if arm == "adamix-no-projection":
        adamix["projection_rank"] = 0
    elif arm == "adamix-no-adaptive-clip":
        adamix["clip_quantile"] = None
    elif arm == "adamix-no-mixing":
        adamix["public_mix"] = 0.0
    elif arm == "adamix-initial-subspace":
        adamix["projection_subspace"] = "initial"
    return replace(tc, **adamix)  # type: ignore[arg-type]


def _trainer(
    arm: str, eps: float | None, tc: TrainConfig, task: Task, progress: bool, user: nn.Module | None
) -> Callable[[Path], tuple[dict[str, Any], dict[str, Any]]]:
    def compute(cell_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        result = train(tc, cell_dir / "run", task=task, progress=progress, model=copy_of(user))
        row = {
            "arm": arm,
            "epsilon_target": eps,
            "epsilon": result.epsilon,
            "test_accuracy": result.test_accuracy,
        }
        return row, {"train": tc.to_dict(), "delta": tc.delta}

    return compute


def _snr_cell(
    config: AdamixConfig,
    task: Task,
    public: ImageArrays,
    base: TrainConfig,
    fewshot_pt: Path,
    user: nn.Module | None,
) -> Callable[[Path], tuple[dict[str, Any], dict[str, Any]]]:
    """Signal-to-noise of one private batch's gradient at the few-shot model, with and without
    the projection, at the σ of the smallest ε. A diagnostic that reads private data without
    noise: it is reported, never released with a model (and says so in its row)."""

    def compute(cell_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        from dpal.privacy.ledger import Ledger
        from dpal.training.adamix import signal_to_noise, subspace_capture

        # it reads private data without noise: on the record as a non-private mechanism (ε = ∞)
        Ledger(cell_dir / "ledger.json").record(
            "nonprivate",
            mechanism="adamix:snr-diagnostic",
            params={},
            note="gradient SNR of one private batch; reported in results, never released",
            output="cell.json",
            status="done",
        )
        from dpal.models.public_init import load_public_init

        net = network_for(base, task.image_shape, task.num_classes, fit_statistics=False,
                          model=copy_of(user))  # fmt: skip
        model = net.trainable
        load_public_init(model, fewshot_pt, instance_name(user) if user else base.model)
        eps = min(config.epsilons)
        sigma, q = resolve_noise(replace(base, epsilon=eps), len(task.private))
        gen = torch.Generator().manual_seed(0)
        idx = torch.randperm(len(task.private), generator=gen)[: int(q * len(task.private))]
        # inputs of the whole set, then the batch: a frozen backbone's are cached for the whole
        # set, and a random subset's bytes would miss the cache (4,096 images encoded again)
        x, y = net.inputs(task.private)[idx], torch.from_numpy(task.private.y)[idx]
        px, py = net.inputs(public), torch.from_numpy(public.y)
        kw = dict(clip=base.clip, noise_multiplier=sigma)
        full = signal_to_noise(model, x, y, px, py, rank=0, **kw)
        projected = signal_to_noise(model, x, y, px, py, rank=config.projection_rank, **kw)
        captured = subspace_capture(
            model, x, y, px, py, rank=config.projection_rank, clip=base.clip
        )
        row = {
            "arm": "snr",
            "epsilon_target": eps,
            "epsilon": float("nan"),
            "test_accuracy": float("nan"),
            "snr_full": full,
            "snr_projected": projected,
            "captured": captured,
            "rank": config.projection_rank,
            "note": "diagnostic on private data without noise; not released",
        }
        return row, {"noise_multiplier": sigma, "rank": config.projection_rank, "delta": base.delta}

    return compute
