"""The DP-SGD training loop: Poisson batches, private gradients, a checkpoint and a ledger entry
per epoch, and resumption with no privacy step lost or counted twice.

Per epoch: the epoch's ⌊1/q⌋ steps are recorded in the ledger (pending) *before* they run; the
model is evaluated on the test set (never the private data); the checkpoint is saved — the
released weights apart from the private resume state (``dpal.training.checkpoint``), with the
ledger's snapshot as its lineage (``dpal.training.lineage``); the entry is marked done. Only test
accuracy and ε are shown while training — never a training loss, which would be a statistic of
the private data; ``--holdout`` accuracy is one, and is recorded in the ledger as such.

The noise generator is seeded from OS entropy unless ``deterministic_noise``
(``dpal.privacy.noise_source``): the seed is in every released summary.
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
from dpal.errors import DpalError, warn
from dpal.models.public_init import head_name, load_public_init
from dpal.models.registry import build_model
from dpal.privacy import noise_source
from dpal.privacy.accounting import (
    DpsgdSchedule,
    calibrate_noise_multiplier,
    epsilon,
    steps_for_epochs,
    steps_per_epoch,
)
from dpal.privacy.ledger import Ledger, atomic_write_text
from dpal.privacy.noise_source import torch_noise_generator
from dpal.randp.standardize import standardize_from_random_process
from dpal.training.adamix import AdamixStep, MixState, adamix_gradient
from dpal.training.augment import augment_copies
from dpal.training.checkpoint import (
    checkpoint_path,
    load_checkpoint,
    load_resume_state,
    save_checkpoint,
)
from dpal.training.config import TrainConfig
from dpal.training.dpsgd import private_gradient
from dpal.training.ema import Ema
from dpal.training.evaluate import accuracy
from dpal.training.lineage import SNAPSHOT_KEY, open_run_ledger, snapshot
from dpal.training.sampling import poisson_batches, shuffled_batches

MECHANISM = "dpsgd:train"
VALIDATION_KEY = "validation_accuracy_nonprivate"  # metrics.jsonl; never in a release


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
    summary0: dict[str, Any] | None = None  # the resumed checkpoint's summary
    rstate: dict[str, Any] | None = None  # and its private resume state
    if resume is not None:
        summary0 = load_checkpoint(resume)["summary"]
        rstate = load_resume_state(resume)
        stored = TrainConfig.from_dict(summary0["config"])
        config = stored if config is None else replace(stored, epochs=config.epochs)
        if config.epochs <= summary0["epoch"]:
            raise DpalError(
                f"{resume} is already at epoch {summary0['epoch']}; pass --epochs larger "
                "than that to continue training."
            )
    elif config is None:
        raise DpalError("give a TrainConfig, or a checkpoint to resume.")
    if task is None:
        task = load_task(config.dataset, data_dir=data_dir)
    task = task.hold_out(config.holdout)
    _check_task(config, task)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        msg = f"cannot create --out {out} ({err.strerror}); choose a writable folder."
        raise DpalError(msg) from None

    torch.manual_seed(config.seed)
    seeds = np.random.SeedSequence(config.seed).generate_state(3)
    augment_gen = torch.Generator().manual_seed(int(seeds[2]))
    model = build_model(config.model, task.image_shape, task.num_classes)
    if config.init is not None and rstate is None:  # a resumed run loads its own weights below
        load_public_init(model, config.init, config.model)
    if config.standardize_features and rstate is None:  # a resumed run's are in its state
        standardize_from_random_process(model, task.image_shape, seed=config.seed)
    model = model.to(device)
    sampler_gen = torch.Generator().manual_seed(int(seeds[0]))
    noise_gen = torch_noise_generator(
        deterministic=config.deterministic_noise, seed=int(seeds[1]), device=device
    )
    noise = noise_source.source(config.deterministic_noise) if config.private else ""
    x, y = (t.to(device) for t in task.private.tensors())
    n = len(x)
    public = _public_set(config, task)
    adamix_trace: list[tuple[float, float]] = []

    if config.private:
        sigma, q = (
            (summary0["noise_multiplier"], summary0["sample_rate"])
            if summary0
            else resolve_noise(config, n)
        )
        per_epoch = steps_per_epoch(q)
    else:
        sigma, q = 0.0, 1.0
        per_epoch = math.ceil(n / config.batch_size)
    total_steps = config.epochs * per_epoch
    mix_state = MixState(horizon=total_steps)  # AdaMix: b̂² across steps, T for the mix

    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    ema = Ema(model, config.ema)
    start_epoch, lineage = 0, []
    if rstate is not None and summary0 is not None:
        model.load_state_dict(rstate["model"])
        optimizer.load_state_dict(rstate["optimizer"])
        ema.load(rstate.get("ema"))
        sampler_gen.set_state(rstate["sampler_rng"])
        augment_gen.set_state(rstate["augment_rng"])
        if config.deterministic_noise:  # else: fresh OS entropy, nothing stored to restore
            noise_gen.set_state(rstate["noise_rng"].cpu())
        start_epoch, lineage = summary0["epoch"], list(summary0["ledger_entries"])
    ledger = open_run_ledger(out, resume, start_epoch)
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
                    noise=noise,
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
            val_acc, val_entry = _holdout_accuracy(released, task, ledger, epoch, device)
            summary = {
                "epoch": epoch,
                "steps": epoch * per_epoch,
                "epsilon": eps,
                "delta": config.delta,
                "noise_multiplier": sigma if config.private else None,
                "sample_rate": q,
                "test_accuracy": test_acc,
                "ledger_entries": lineage,
                SNAPSHOT_KEY: snapshot(ledger, [entry]),
                "config": config.to_dict(),
                "image_shape": list(task.image_shape),
                "num_classes": task.num_classes,
                "wall_seconds": time.perf_counter() - started,
            }
            if adamix_trace:  # the epoch's mean public quantities (free): threshold, mix weight
                summary["adamix_clip"] = statistics.fmean(c for c, _ in adamix_trace)
                summary["adamix_mix"] = statistics.fmean(m for _, m in adamix_trace)
                adamix_trace.clear()
            resume_state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "ema": ema.state(),
                "sampler_rng": sampler_gen.get_state(),
                "augment_rng": augment_gen.get_state(),
            }
            if config.deterministic_noise:  # derivable from the seed anyway; never otherwise
                resume_state["noise_rng"] = noise_gen.get_state().cpu()
            save_checkpoint(ckpt, released.state_dict(), summary, resume_state)
            ledger.resolve(entry, "done")
            metrics = {k: v for k, v in summary.items() if k not in ("config", SNAPSHOT_KEY)}
            if val_acc is not None:  # beside the release, never in it: not a DP statistic
                metrics[VALIDATION_KEY] = val_acc
            history.append({**summary, **metrics})
            with (out / "metrics.jsonl").open("a") as f:
                f.write(json.dumps(metrics) + "\n")
            if val_entry is not None:
                ledger.resolve(val_entry, "done")
            line = f"epoch {epoch}/{config.epochs}  ε={eps:.3f}  " + (
                f"test acc={test_acc:.4f}" if task.test is not None else "test acc=n/a (no test)"
            )
            if val_acc is not None:
                line += f"  val acc={val_acc:.4f} [non-private: held-out private images]"
            bar.set_postfix_str(line)
            if progress:
                tqdm.write(line)
    finally:
        bar.close()
    return TrainResult(
        out, ema.model_for_release(model), eps, test_acc, sigma if config.private else None, history
    )


def _check_task(config: TrainConfig, task: Task) -> None:
    """Refuse what cannot be private; warn about what is private only in name."""
    n = len(task.private)
    if n == 0:
        raise DpalError(f"dataset {task.name!r} has no training images.")
    if config.private and config.batch_size > n:
        raise DpalError(
            f"--batch-size {config.batch_size} is larger than the {n} private training images: "
            f"Poisson sampling would take every image at every step (q = 1, no amplification "
            f"by sampling); choose --batch-size < {n}."
        )
    if config.private and config.batch_size == n:
        warn(
            f"--batch-size equals the {n} training images: q = 1, every image every step "
            "(no amplification by sampling); a smaller --batch-size is usual."
        )
    if config.private and config.delta >= 1 / n:
        warn(
            f"δ = {config.delta:g} ≥ 1/N = {1 / n:.3g}: a mechanism that publishes one "
            f"of the {n} training images at random meets it; choose --delta < {1 / n:.1g}."
        )
    if task.test is None:
        warn(f"dataset {task.name!r} has no test split: test accuracy will not be measured.")


def _holdout_accuracy(
    model: nn.Module, task: Task, ledger: Ledger, epoch: int, device: str
) -> tuple[float | None, int | None]:
    """Accuracy on the held-out private images, recorded first as what it is: a noiseless
    statistic of private data (ε = ∞). The model never read those images, so the released
    checkpoint's own ε is unchanged; the run's total ε is ∞ (the ledger says why)."""
    if task.validation is None:
        return None, None
    entry = ledger.record(
        "nonprivate",
        mechanism="holdout:validation-accuracy",
        params={},
        note=f"epoch {epoch}: accuracy on {len(task.validation)} held-out private images, "
        "no noise (for tuning; not DP)",
        output="metrics.jsonl",
    )
    return accuracy(model, task.validation, device), entry


def _lineage_epsilon(config: TrainConfig, sigma: float, q: float, steps: int) -> float:
    """ε of the steps behind one checkpoint (its own lineage), PLD."""
    if not config.private:
        return math.inf
    schedule = DpsgdSchedule(noise_multiplier=sigma, sample_rate=q, steps=steps)
    return epsilon(schedule.event(), delta=config.delta, accountant="pld")


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
        copies=config.augment_copies,
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
