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

import copy
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from dpal.core.errors import DpalError
from dpal.data.tasks import Task, load_task
from dpal.models.public_init import load_public_init
from dpal.models.standardize import standardize_from_random_process
from dpal.privacy import noise_source
from dpal.privacy.accounting import steps_per_epoch
from dpal.privacy.ledger import Ledger
from dpal.privacy.noise_source import torch_noise_generator
from dpal.training import distributed
from dpal.training.augment import augment_copies
from dpal.training.checkpoint import checkpoint_path, load_checkpoint, load_resume_state
from dpal.training.config import TrainConfig
from dpal.training.ema import Ema
from dpal.training.epoch_end import VALIDATION_KEY, EpochWriter
from dpal.training.gradient_rules import gradient_rule
from dpal.training.lineage import open_run_ledger
from dpal.training.network import instance_name, network_for
from dpal.training.private_inputs import PrivateInputs
from dpal.training.run_setup import (
    check_task,
    lineage_epsilon,
    resolve_noise,
    write_run_config,
)
from dpal.training.sampling import poisson_batches, shuffled_batches
from dpal.training.schedule import set_lr, train_head_only

__all__ = ["MECHANISM", "VALIDATION_KEY", "TrainResult", "resolve_noise", "train"]

MECHANISM = "dpsgd:train"


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    model: nn.Module
    epsilon: float
    test_accuracy: float
    noise_multiplier: float | None
    history: list[dict[str, Any]]
    is_writer: bool = True  # False on torchrun's ranks > 0, which write and report nothing


def train(
    config: TrainConfig | None,
    out_dir: str | Path,
    *,
    task: Task | None = None,
    data_dir: str | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
    device: str = "cpu",
    model: nn.Module | None = None,
) -> TrainResult:
    """Train ``config`` into ``out_dir`` (checkpoints, ledger, metrics); or resume a checkpoint.

    When resuming, the checkpoint's own configuration is used; of ``config`` (which may be None)
    only ``epochs`` is taken: the epoch to continue to. ``model``: your own ``nn.Module`` to
    train instead of the network ``config.model`` names (``dpal.training.network``); give it
    again to resume.
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
    if model is not None:
        config = replace(config, model=instance_name(model), model_args=None)
    if task is None:
        task = load_task(config.dataset, data_dir=data_dir, image_size=config.image_size)
    task = task.hold_out(config.holdout)
    check_task(config, task)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        msg = f"cannot create --out {out} ({err.strerror}); choose a writable folder."
        raise DpalError(msg) from None

    group = distributed.join(device)
    device = distributed.local_device(device)
    torch.manual_seed(config.seed)
    seeds = np.random.SeedSequence(config.seed).generate_state(3)
    augment_gen = torch.Generator().manual_seed(int(seeds[2]))
    net = network_for(config, task.image_shape, task.num_classes, model=model,
                      progress=progress and group.is_writer, device=device,
                      fit_statistics=rstate is None)  # fmt: skip
    model = net.trainable
    if config.init is not None and rstate is None:  # a resumed run loads its own weights below
        load_public_init(model, config.init, config.model)
    if (
        config.standardize_features and rstate is None and net.spec["kind"] == "registry"
    ):  # a resumed run's are in its state
        standardize_from_random_process(model, task.image_shape, seed=config.seed)
    model = model.to(device)
    sampler_gen = torch.Generator().manual_seed(int(seeds[0]))
    noise_gen = torch_noise_generator(
        deterministic=config.deterministic_noise, seed=int(seeds[1]), device=device,
        secure=config.secure_noise,
    )  # fmt: skip
    noise = (
        noise_source.source(config.deterministic_noise, config.secure_noise)
        if config.private
        else ""
    )
    n = len(task.private)
    # under torchrun each rank keeps only the examples it holds (dpal.training.distributed)
    local = group.local_indices(n) if group.world_size > 1 else None
    private = PrivateInputs(task.private, net.inputs, local, device)

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
    # The weights the run starts from, for a subspace fixed there. A resumed run restores the
    # rule's state (its U) below; checkpoints from before that rebuild the start from --init.
    start: nn.Module | None = model
    if rstate is not None and "rule" in rstate:
        start = None
    elif rstate is not None and config.projection_subspace == "initial" and config.init:
        start = copy.deepcopy(model)
        load_public_init(start, config.init, config.model)
    rule = gradient_rule(config, task, noise_multiplier=sigma, expected_batch_size=q * n,
                         generator=noise_gen, total_steps=total_steps,
                         inputs=net.inputs, group=group, start_model=start)  # fmt: skip

    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    ema = Ema(model, config.ema)
    start_epoch, lineage = 0, []
    if rstate is not None and summary0 is not None:
        model.load_state_dict(rstate["model"])
        optimizer.load_state_dict(rstate["optimizer"])
        ema.load(rstate.get("ema"))
        rule.load_state(rstate.get("rule", {}))
        sampler_gen.set_state(rstate["sampler_rng"])
        augment_gen.set_state(rstate["augment_rng"])
        if config.deterministic_noise:  # else: fresh OS entropy, nothing stored to restore
            assert isinstance(noise_gen, torch.Generator)
            noise_gen.set_state(rstate["noise_rng"].cpu())
        start_epoch, lineage = summary0["epoch"], list(summary0["ledger_entries"])

    def open_ledger() -> Ledger:
        ledger = open_run_ledger(out, resume, start_epoch)
        write_run_config(out, config, task, sigma, q, per_epoch)
        return ledger

    ledger = group.on_writer(open_ledger)  # the one writer: rank 0
    writer = (
        EpochWriter(out, ledger, config, net, task, sigma, q, per_epoch, device, progress)
        if ledger is not None
        else None
    )
    history: list[dict[str, Any]] = []
    bar = tqdm(
        total=total_steps,
        initial=start_epoch * per_epoch,
        disable=not progress or not sys.stderr.isatty() or writer is None,  # logs: epoch lines
        unit="step",
        dynamic_ncols=True,
    )
    eps = lineage_epsilon(config, sigma, q, start_epoch * per_epoch)
    test_acc = float("nan")
    try:
        for epoch in range(start_epoch + 1, config.epochs + 1):
            # DP linear probing, then full fine-tuning (DP-RandP): one schedule, one σ, one ledger
            train_head_only(model, epoch <= config.linear_probe_epochs)
            entry = _record_epoch(ledger, config, epoch, sigma, q, per_epoch, noise, out)
            if config.private:
                batches = poisson_batches(n, sample_rate=q, steps=per_epoch, generator=sampler_gen)
            else:
                batches = shuffled_batches(n, batch_size=config.batch_size, generator=sampler_gen)
            for i, idx_cpu in enumerate(batches):
                step = (epoch - 1) * per_epoch + i
                set_lr(optimizer, config, step, total_steps)
                xb, yb = private.batch(group.shard(idx_cpu))
                if config.augment != "none":
                    xb = augment_copies(
                        xb,
                        copies=config.augment_copies,
                        kind=config.augment,
                        max_shift=config.max_shift,
                        generator=augment_gen,
                    )
                    yb = yb.repeat_interleave(config.augment_copies)
                grads = rule(model, xb, yb, step)  # the method's gradient (gradient_rules)
                for name, p in model.named_parameters():
                    p.grad = grads.get(name)  # None for frozen parameters
                optimizer.step()
                ema.update(model)
                bar.update(1)
            eps = lineage_epsilon(config, sigma, q, epoch * per_epoch)
            extra = rule.epoch_summary()
            if writer is None or entry is None:  # not rank 0: the writer records the epoch
                continue
            lineage.append(entry)
            resume_state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "ema": ema.state(),
                "sampler_rng": sampler_gen.get_state(),
                "augment_rng": augment_gen.get_state(),
                "rule": rule.state(),
            }
            if config.deterministic_noise:  # derivable from the seed anyway; never otherwise
                assert isinstance(noise_gen, torch.Generator)
                resume_state["noise_rng"] = noise_gen.get_state().cpu()
            released = ema.model_for_release(model)
            test_acc, row, line = writer.write(
                epoch, entry, lineage, eps, released, extra, resume_state
            )
            history.append(row)
            bar.set_postfix_str(line)
    finally:
        bar.close()
    return TrainResult(
        out, ema.model_for_release(model), eps, test_acc, sigma if config.private else None,
        history, is_writer=group.is_writer,
    )  # fmt: skip


def _record_epoch(
    ledger: Ledger | None,
    config: TrainConfig,
    epoch: int,
    sigma: float,
    q: float,
    per_epoch: int,
    noise: str,
    out: Path,
) -> int | None:
    """The epoch's ledger entry, recorded (pending) before its steps run; None off rank 0."""
    if ledger is None:
        return None
    output = str(checkpoint_path(out, epoch).relative_to(out))
    if config.private:
        return ledger.record_dpsgd(noise_multiplier=sigma, sample_rate=q, steps=per_epoch,
                                   mechanism=MECHANISM, note=f"epoch {epoch}", output=output,
                                   noise=noise)  # fmt: skip
    return ledger.record("nonprivate", mechanism="train:non-private", params={},
                         note=f"epoch {epoch}", output=output)  # fmt: skip
