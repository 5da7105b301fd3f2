"""The DP-SGD training loop: Poisson batches, private gradients, a checkpoint and a ledger entry
per epoch, and resumption with no privacy step lost or counted twice.

Per epoch: the epoch's ⌊1/q⌋ steps are recorded in the ledger (pending) *before* they run; the
model is evaluated on the test set (never the private data); the checkpoint is saved; the entry
is marked done. Only test accuracy and ε are shown while training — never a training loss, which
would be a statistic of the private data.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from dpal.data.tasks import Task, load_task
from dpal.errors import DpalError
from dpal.models.public_init import head_name, load_public_init
from dpal.models.registry import build_model
from dpal.privacy.accounting import (
    DpsgdSchedule,
    calibrate_noise_multiplier,
    epsilon,
    steps_for_epochs,
    steps_per_epoch,
)
from dpal.privacy.ledger import Ledger, atomic_write_text
from dpal.randp.standardize import standardize_from_random_process
from dpal.training.adamix import AdamixStep, MixState, adamix_gradient
from dpal.training.augment import augment_copies
from dpal.training.checkpoint import (
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from dpal.training.config import TrainConfig
from dpal.training.dpsgd import private_gradient
from dpal.training.evaluate import accuracy
from dpal.training.sampling import poisson_batches, shuffled_batches

MECHANISM = "dpsgd:train"


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    model: nn.Module
    epsilon: float
    test_accuracy: float
    noise_multiplier: float | None
    history: list[dict[str, Any]]


def resolve_noise(config: TrainConfig, n_private: int) -> tuple[float, float]:
    """(σ, q) for ``config`` on ``n_private`` examples; σ calibrated when ε is the target."""
    q = min(1.0, config.batch_size / n_private)
    if config.noise_multiplier is not None:
        return config.noise_multiplier, q
    assert config.epsilon is not None
    steps = steps_for_epochs(config.epochs, q)
    sigma = calibrate_noise_multiplier(
        target_epsilon=config.epsilon, delta=config.delta, sample_rate=q, steps=steps
    )
    return sigma, q


def train(
    config: TrainConfig | None,
    out_dir: str | Path,
    *,
    task: Task | None = None,
    data_dir: str | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
    device: str = "cpu",
) -> TrainResult:
    """Train ``config`` into ``out_dir`` (checkpoints, ledger, metrics); or resume a checkpoint.

    When resuming, the checkpoint's own configuration is used; of ``config`` (which may be None)
    only ``epochs`` is taken: the epoch to continue to.
    """
    out = Path(out_dir)
    state: dict[str, Any] | None = None
    if resume is not None:
        state = load_checkpoint(resume)
        stored = TrainConfig.from_dict(state["summary"]["config"])
        config = stored if config is None else replace(stored, epochs=config.epochs)
        if config.epochs <= state["summary"]["epoch"]:
            raise DpalError(
                f"{resume} is already at epoch {state['summary']['epoch']}; pass --epochs larger "
                "than that to continue training."
            )
    elif config is None:
        raise DpalError("give a TrainConfig, or a checkpoint to resume.")
    if task is None:
        task = load_task(config.dataset, data_dir=data_dir)
    task = task.hold_out(config.holdout)
    if len(task.private) == 0:
        raise DpalError(f"dataset {task.name!r} has no training images.")

    torch.manual_seed(config.seed)
    seeds = np.random.SeedSequence(config.seed).generate_state(3)
    augment_gen = torch.Generator().manual_seed(int(seeds[2]))
    model = build_model(config.model, task.image_shape, task.num_classes)
    if config.init is not None and state is None:  # a resumed run loads its own weights below
        load_public_init(model, config.init, config.model)
    if config.standardize_features and state is None:  # a resumed run's are in its checkpoint
        standardize_from_random_process(model, task.image_shape, seed=config.seed)
    model = model.to(device)
    sampler_gen = torch.Generator().manual_seed(int(seeds[0]))
    noise_gen = torch.Generator(device=device).manual_seed(int(seeds[1]))
    x, y = (t.to(device) for t in task.private.tensors())
    n = len(x)
    public = _public_set(config, task)
    adamix_trace: list[tuple[float, float]] = []

    if config.private:
        sigma, q = (
            (state["summary"]["noise_multiplier"], state["summary"]["sample_rate"])
            if state
            else resolve_noise(config, n)
        )
        per_epoch = steps_per_epoch(q)
    else:
        sigma, q = 0.0, 1.0
        per_epoch = math.ceil(n / config.batch_size)
    total_steps = config.epochs * per_epoch
    mix_state = MixState(horizon=total_steps)  # AdaMix: b̂² across steps, T for the mix

    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    ema = _Ema(model, config.ema)
    start_epoch, lineage = 0, []
    if state is not None:
        model.load_state_dict(state["model"])
        state["noise_rng"] = state["noise_rng"].cpu()
        optimizer.load_state_dict(state["optimizer"])
        ema.load(state.get("ema"))
        sampler_gen.set_state(state["sampler_rng"])
        noise_gen.set_state(state["noise_rng"])
        augment_gen.set_state(state["augment_rng"])
        start_epoch, lineage = state["summary"]["epoch"], list(state["summary"]["ledger_entries"])
    ledger = _open_ledger(out, resume, start_epoch)
    _write_run_config(out, config, task, sigma, q, per_epoch)

    history: list[dict[str, Any]] = []
    bar = tqdm(
        total=total_steps,
        initial=start_epoch * per_epoch,
        disable=not progress or not sys.stderr.isatty(),  # in a log: the epoch lines only
        unit="step",
        dynamic_ncols=True,
    )
    eps = _lineage_epsilon(config, sigma, q, start_epoch * per_epoch)
    test_acc = float("nan")
    started = time.perf_counter()
    try:
        for epoch in range(start_epoch + 1, config.epochs + 1):
            ckpt = checkpoint_path(out, epoch)
            # DP linear probing, then full fine-tuning (DP-RandP): one schedule, one σ, one ledger
            _train_head_only(model, epoch <= config.linear_probe_epochs)
            if config.private:
                entry = ledger.record_dpsgd(
                    noise_multiplier=sigma,
                    sample_rate=q,
                    steps=per_epoch,
                    mechanism=MECHANISM,
                    note=f"epoch {epoch}",
                    output=str(ckpt.relative_to(out)),
                )
                batches = poisson_batches(n, sample_rate=q, steps=per_epoch, generator=sampler_gen)
            else:
                entry = ledger.record(
                    "nonprivate",
                    mechanism="train:non-private",
                    params={},
                    note=f"epoch {epoch}",
                    output=str(ckpt.relative_to(out)),
                )
                batches = shuffled_batches(n, batch_size=config.batch_size, generator=sampler_gen)
            for i, idx_cpu in enumerate(batches):
                idx = idx_cpu.to(device)
                step = (epoch - 1) * per_epoch + i
                _set_lr(optimizer, config, step, total_steps)
                xb, yb = x[idx], y[idx]
                if config.augment != "none":
                    xb = augment_copies(
                        xb,
                        copies=config.augment_copies,
                        kind=config.augment,
                        max_shift=config.max_shift,
                        generator=augment_gen,
                    )
                    yb = yb.repeat_interleave(config.augment_copies)
                if config.private or config.nonprivate_clip:
                    if config.private and public is not None:  # AdaMix: in a public subspace
                        adamix = _adamix_step(
                            model, xb, yb, public, config, sigma, q * n, noise_gen, step, mix_state
                        )
                        grads = adamix.gradient
                        adamix_trace.append((adamix.clip, adamix.mix))
                    else:  # DP-SGD; non-private with nonprivate_clip: σ = 0, the batch's own size
                        grads = private_gradient(
                            model,
                            xb,
                            yb,
                            copies=config.augment_copies,
                            max_grad_norm=config.clip,
                            noise_multiplier=sigma,
                            expected_batch_size=q * n if config.private else len(idx),
                            generator=noise_gen,
                            engine=config.engine,
                        )
                    for name, p in model.named_parameters():
                        p.grad = grads.get(name)  # None for frozen parameters
                else:
                    optimizer.zero_grad(set_to_none=True)
                    F.cross_entropy(model(xb), yb).backward()
                optimizer.step()
                ema.update(model)
                bar.update(1)
            lineage.append(entry)
            eps = _lineage_epsilon(config, sigma, q, epoch * per_epoch)
            released = ema.model_for_release(model)
            test_acc = accuracy(released, task.test, device) if task.test is not None else math.nan
            val_acc = (
                accuracy(released, task.validation, device) if task.validation is not None else None
            )
            summary = {
                "epoch": epoch,
                "steps": epoch * per_epoch,
                "epsilon": eps,
                "delta": config.delta,
                "noise_multiplier": sigma if config.private else None,
                "sample_rate": q,
                "test_accuracy": test_acc,
                "validation_accuracy": val_acc,
                "ledger_entries": lineage,
                "config": config.to_dict(),
                "image_shape": list(task.image_shape),
                "num_classes": task.num_classes,
                "wall_seconds": time.perf_counter() - started,
            }
            if adamix_trace:  # the epoch's mean public quantities (free): threshold, mix weight
                summary["adamix_clip"] = statistics.fmean(c for c, _ in adamix_trace)
                summary["adamix_mix"] = statistics.fmean(m for _, m in adamix_trace)
                adamix_trace.clear()
            save_checkpoint(
                ckpt,
                {
                    "model": model.state_dict(),
                    "release": released.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "ema": ema.state(),
                    "sampler_rng": sampler_gen.get_state(),
                    "noise_rng": noise_gen.get_state(),
                    "augment_rng": augment_gen.get_state(),
                },
                summary,
            )
            ledger.resolve(entry, "done")
            history.append(summary)
            with (out / "metrics.jsonl").open("a") as f:
                f.write(json.dumps({k: v for k, v in summary.items() if k != "config"}) + "\n")
            line = f"epoch {epoch}/{config.epochs}  ε={eps:.3f}  test acc={test_acc:.4f}"
            if val_acc is not None:
                line += f"  val acc={val_acc:.4f}"
            bar.set_postfix_str(line)
            if progress:
                tqdm.write(line)
    finally:
        bar.close()
    return TrainResult(
        out, ema.model_for_release(model), eps, test_acc, sigma if config.private else None, history
    )


def _lineage_epsilon(config: TrainConfig, sigma: float, q: float, steps: int) -> float:
    """ε of the steps behind one checkpoint (its own lineage), PLD."""
    if not config.private:
        return math.inf
    schedule = DpsgdSchedule(noise_multiplier=sigma, sample_rate=q, steps=steps)
    return epsilon(schedule.event(), delta=config.delta, accountant="pld")


def _open_ledger(out: Path, resume: str | Path | None, start_epoch: int) -> Ledger:
    """The run's ledger, with interrupted entries resolved when resuming.

    Resuming in the checkpoint's own run: a pending entry whose checkpoint was saved is done (the
    run died between saving and marking); one whose checkpoint is missing released nothing and
    is void — its epoch is re-run and recorded anew. Later checkpoints than the one resumed from
    would be overwritten, so that needs a new ``out`` (a fork), whose ledger starts as a copy of
    the parent's: every release of the parent run stays counted.
    """
    if resume is None:
        if (out / "ledger.json").exists():
            raise DpalError(
                f"{out} already holds a run; pass --resume {out}/checkpoints/epoch_NNN.pt to "
                "continue it, or choose a new --out."
            )
        return Ledger(out / "ledger.json")
    source = Path(resume).resolve().parent.parent
    ledger = Ledger(source / "ledger.json")
    for e in ledger.pending():
        done = e.output and (source / e.output).exists()
        ledger.resolve(
            e.id,
            "done" if done else "void",
            "" if done else "interrupted before its checkpoint was saved; re-run",
        )
    if source == out.resolve():
        later = [c for c in list_checkpoints(out) if c["epoch"] > start_epoch]
        if later:
            raise DpalError(
                f"{out} has checkpoints after epoch {start_epoch} (up to {later[-1]['epoch']}); "
                "resume from the latest, or fork into a new --out directory."
            )
        return ledger
    if (out / "ledger.json").exists():
        raise DpalError(f"{out} already holds a run; fork into a new, empty --out directory.")
    return ledger.copy_to(out / "ledger.json")


def _write_run_config(
    out: Path, config: TrainConfig, task: Task, sigma: float, q: float, per_epoch: int
) -> None:
    from dpal import __version__

    payload = {
        "config": config.to_dict(),
        "dataset": task.name,
        "n_private": len(task.private),
        "noise_multiplier": sigma if config.private else None,
        "sample_rate": q,
        "steps_per_epoch": per_epoch,
        "dpal_version": __version__,
        "note": "hyper-parameter choices are not privacy-accounted",
    }
    atomic_write_text(out / "run.json", json.dumps(payload, indent=1))


def _public_set(config: TrainConfig, task: Task) -> tuple[torch.Tensor, torch.Tensor] | None:
    """AdaMix's labelled public examples, as tensors (public: read freely, never ledgered)."""
    if config.public_set is None:
        return None
    from dpal.data.arrays import load_npz

    public = load_npz(config.public_set, name="public set", num_classes=task.num_classes)
    if public.image_shape != task.image_shape:
        raise DpalError(
            f"--public-set {config.public_set} has images of shape {public.image_shape}, the "
            f"private data {task.image_shape}."
        )
    return public.tensors()


def _adamix_step(
    model: nn.Module,
    xb: torch.Tensor,
    yb: torch.Tensor,
    public: tuple[torch.Tensor, torch.Tensor],
    config: TrainConfig,
    sigma: float,
    expected_batch_size: float,
    noise_gen: torch.Generator,
    step: int,
    mix_state: MixState,
) -> AdamixStep:
    px, py = public
    if len(px) > config.public_batch:  # a public subset, seeded by the step: resume-safe
        pick = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        idx = torch.randperm(len(px), generator=pick)[: config.public_batch]
        px, py = px[idx], py[idx]
    return adamix_gradient(
        model,
        xb,
        yb,
        px.to(xb.device),
        py.to(xb.device),
        rank=config.projection_rank,
        clip=config.clip,
        clip_quantile=config.clip_quantile,
        mix=config.public_mix,
        noise_multiplier=sigma,
        expected_batch_size=expected_batch_size,
        generator=noise_gen,
        mix_state=mix_state,
    )


def _train_head_only(model: nn.Module, head_only: bool) -> None:
    """Freeze every parameter but the classifier head's (the last ``nn.Linear``), or none.
    Clipping then bounds the norm of the trainable parameters' gradient: sensitivity stays C."""
    head = head_name(model)
    for name, p in model.named_parameters():
        p.requires_grad_(not head_only or name.startswith(head + "."))


def _set_lr(optimizer: torch.optim.Optimizer, config: TrainConfig, step: int, total: int) -> None:
    lr = config.lr
    if config.lr_schedule == "cosine":
        lr = 0.5 * config.lr * (1 + math.cos(math.pi * step / total))
    for group in optimizer.param_groups:
        group["lr"] = lr


class _Ema:
    """Exponential moving average of the weights — post-processing of the DP iterates, free."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = (
            {k: v.detach().clone() for k, v in model.state_dict().items()} if decay > 0 else None
        )
        self._copy: nn.Module | None = None
        self.updates = 0

    def update(self, model: nn.Module) -> None:
        if self.shadow is None:
            return
        # Warm-up (as TensorFlow's ExponentialMovingAverage with num_updates): early on the
        # average would be dominated by the random initialisation.
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        with torch.no_grad():
            for k, v in model.state_dict().items():
                self.shadow[k].mul_(decay).add_(v, alpha=1 - decay)

    def model_for_release(self, model: nn.Module) -> nn.Module:
        if self.shadow is None:
            return model
        import copy

        self._copy = copy.deepcopy(model)
        self._copy.load_state_dict(self.shadow)
        return self._copy

    def state(self) -> dict[str, Any] | None:
        return None if self.shadow is None else {"shadow": self.shadow, "updates": self.updates}

    def load(self, state: dict[str, Any] | None) -> None:
        if self.shadow is not None and state is not None:
            self.shadow = {k: v.clone() for k, v in state["shadow"].items()}
            self.updates = int(state["updates"])
