"""The gradient rule of a training step: the one piece of the loop that differs by method.

A rule maps (model, batch, step) to ``{name: gradient}`` for the trainable parameters:

* :class:`DpsgdGradient` — clipped per-example sum + Gaussian noise, over q·N (``dpsgd``).
* :class:`AdamixGradient` — the same in the public top-k gradient subspace, mixed with the
  public gradient (``adamix``); the same sensitivity C, so the same ledger event.
* :class:`ClippedNonprivateGradient` — DP-SGD's update without noise (σ = 0), over the batch's
  own size: the non-private baselines tuned at a DP learning rate.
* :class:`NonprivateGradient` — the plain mean cross-entropy gradient (ε = ∞).

:func:`gradient_rule` picks one from a :class:`TrainConfig`; the trainer applies it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from dpal.core.errors import DpalError
from dpal.data.arrays import ImageArrays, load_npz
from dpal.data.tasks import Task
from dpal.privacy.noise_source import TorchNoise
from dpal.training.adamix import MixState, adamix_gradient, initial_basis
from dpal.training.config import TrainConfig
from dpal.training.distributed import Group
from dpal.training.dpsgd import Params, private_gradient


class NonprivateGradient:
    """∇ of the batch's mean cross-entropy, for the trainable parameters."""

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int) -> Params:
        named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), [p for _, p in named])
        return {k: g for (k, _), g in zip(named, grads, strict=True)}

    def epoch_summary(self) -> dict[str, float]:
        return {}

    def state(self) -> dict[str, object]:
        """What the rule carries from step to step, for a resume to continue it exactly."""
        return {}

    def load_state(self, state: dict[str, object]) -> None:
        """Continue from :meth:`state` of an interrupted run (a resume)."""


class DpsgdGradient(NonprivateGradient):
    """The released DP-SGD gradient (``dpsgd.private_gradient``) at σ = ``noise_multiplier``."""

    def __init__(
        self,
        config: TrainConfig,
        *,
        noise_multiplier: float,
        expected_batch_size: float,
        generator: TorchNoise,
        group: Group | None = None,
    ) -> None:
        self.config, self.sigma, self.generator = config, noise_multiplier, generator
        self.expected_batch_size, self.group = expected_batch_size, group

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int) -> Params:
        return private_gradient(
            model,
            x,
            y,
            copies=self.config.augment_copies,
            max_grad_norm=self.config.clip,
            noise_multiplier=self.sigma,
            expected_batch_size=self._divisor(x),
            generator=self.generator,
            engine=self.config.engine,
            group=self.group,
        )

    def _divisor(self, x: torch.Tensor) -> float:
        return self.expected_batch_size


class ClippedNonprivateGradient(DpsgdGradient):
    """Each example's gradient clipped at C, averaged over the batch, no noise."""

    def __init__(self, config: TrainConfig, generator: TorchNoise) -> None:
        super().__init__(config, noise_multiplier=0.0, expected_batch_size=1.0, generator=generator)

    def _divisor(self, x: torch.Tensor) -> float:
        return len(x) // self.config.augment_copies  # examples, not augmented copies


class AdamixGradient(NonprivateGradient):
    """AdaMix's released gradient (``adamix.adamix_gradient``), with the run's mixing state and
    the epoch's mean threshold and mix weight (public quantities, free) for the metrics."""

    def __init__(
        self,
        config: TrainConfig,
        public: tuple[torch.Tensor, torch.Tensor],
        *,
        noise_multiplier: float,
        expected_batch_size: float,
        generator: TorchNoise,
        total_steps: int,
        start_model: nn.Module | None = None,
    ) -> None:
        self.config, self.public, self.sigma = config, public, noise_multiplier
        self.expected_batch_size, self.generator = expected_batch_size, generator
        self.mix_state = MixState(horizon=total_steps)  # b̂² across steps, T for the mix
        self.trace: list[tuple[float, float]] = []
        self.basis: torch.Tensor | None = None
        # U at the run's start (public, free); a resumed run restores it with load_state
        if config.projection_subspace == "initial" and start_model is not None:
            px, py = public
            device = next(start_model.parameters()).device
            self.basis = initial_basis(start_model, px.to(device), py.to(device),
                                       config.projection_rank)  # fmt: skip

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int) -> Params:
        cfg = self.config
        if cfg.projection_subspace == "initial" and self.basis is None:
            raise ValueError('projection_subspace="initial" needs the run\'s start_model')
        px, py = self.public
        if len(px) > cfg.public_batch:  # a public subset, seeded by the step: resume-safe
            pick = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            idx = torch.randperm(len(px), generator=pick)[: cfg.public_batch]
            px, py = px[idx], py[idx]
        result = adamix_gradient(
            model,
            x,
            y,
            px.to(x.device),
            py.to(x.device),
            rank=cfg.projection_rank,
            clip=cfg.clip,
            clip_quantile=cfg.clip_quantile,
            mix=cfg.public_mix,
            noise_multiplier=self.sigma,
            expected_batch_size=self.expected_batch_size,
            generator=self.generator,
            mix_state=self.mix_state,
            copies=cfg.augment_copies,
            fixed_basis=self.basis,
        )
        self.trace.append((result.clip, result.mix))
        return result.gradient

    def epoch_summary(self) -> dict[str, float]:
        if not self.trace:
            return {}
        out = {
            "adamix_clip": statistics.fmean(c for c, _ in self.trace),
            "adamix_mix": statistics.fmean(m for _, m in self.trace),
        }
        self.trace.clear()
        return out

    def state(self) -> dict[str, object]:
        # b̂² (post-processing of released gradients) and U (public): exact resume, no ε
        return {"bias_sq": self.mix_state.bias_sq, "basis": self.basis}

    def load_state(self, state: dict[str, object]) -> None:
        bias_sq, basis = state.get("bias_sq"), state.get("basis")
        self.mix_state.bias_sq = None if bias_sq is None else float(bias_sq)  # type: ignore[arg-type]
        if basis is not None:
            assert isinstance(basis, torch.Tensor)
            self.basis = basis


def gradient_rule(
    config: TrainConfig,
    task: Task,
    *,
    noise_multiplier: float,
    expected_batch_size: float,
    generator: TorchNoise,
    total_steps: int,
    inputs: Callable[[ImageArrays], torch.Tensor] | None = None,
    group: Group | None = None,
    start_model: nn.Module | None = None,
) -> NonprivateGradient:
    """The rule ``config`` asks for (module docstring). ``inputs``: the network's map from
    images to its inputs (``Network.inputs``: cached backbone features for a frozen mode), applied
    to AdaMix's public images as to the private ones. ``group``: the torchrun processes, which
    run DP-SGD only (``dpal.training.distributed``). ``start_model``: the weights the run started
    from (also when it resumes), for AdaMix's ``projection_subspace="initial"``."""
    if (
        group is not None
        and group.world_size > 1
        and (not config.private or config.public_set is not None)
    ):
        raise DpalError(
            "under torchrun dpal trains DP-SGD only; run non-private and AdaMix training "
            "(--public-set) in one process."
        )
    if not config.private:
        return (
            ClippedNonprivateGradient(config, generator)
            if config.nonprivate_clip
            else (NonprivateGradient())
        )
    public = public_set(config, task, inputs)
    if public is not None:
        return AdamixGradient(config, public, noise_multiplier=noise_multiplier,
                              expected_batch_size=expected_batch_size, generator=generator,
                              total_steps=total_steps, start_model=start_model)  # fmt: skip
    return DpsgdGradient(config, noise_multiplier=noise_multiplier,
                         expected_batch_size=expected_batch_size, generator=generator,
                         group=group)  # fmt: skip


def public_set(
    config: TrainConfig, task: Task, inputs: Callable[[ImageArrays], torch.Tensor] | None = None
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """AdaMix's labelled public examples as the network's inputs and labels (public: read
    freely, never ledgered)."""
    if config.public_set is None:
        return None
    public = load_npz(config.public_set, name="public set", num_classes=task.num_classes)
    if public.image_shape != task.image_shape:
        raise DpalError(
            f"--public-set {config.public_set} has images of shape {public.image_shape}, the "
            f"private data {task.image_shape}."
        )
    x, y = public.tensors()
    return (inputs(public) if inputs is not None else x), y
