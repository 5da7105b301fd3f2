"""Training configuration: one frozen object from which the sampler, the noise and the ledger's
DP-SGD event are all built, so they cannot drift apart."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from dpal.core.errors import DpalError
from dpal.privacy import noise_source
from dpal.privacy.accounting import check_delta, check_epsilon
from dpal.training.augment import AUGMENTATIONS

LR_SCHEDULES = ("constant", "cosine")
PROJECTION_SUBSPACES = ("every-step", "initial")
# Below this σ the PLD accountant's privacy-loss grid explodes (measured: σ = 0.1 takes 18 s for
# 20 steps at q = 0.1 and gives ε ≈ 466; σ = 1e-6 asks for 35 PiB). No DP run uses it.
MIN_NOISE_MULTIPLIER = 0.1


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """``batch_size`` is the *expected* batch size q·N of Poisson sampling when ``private``.

    Give exactly one of ``epsilon`` (σ is calibrated so the whole run has ε ≤ epsilon at
    ``delta``, PLD accountant) and ``noise_multiplier``; neither when ``private`` is False.
    """

    dataset: str = "mnist"
    # A dpal network, a pretrained backbone, or your own as "package.module:factory" with
    # keyword arguments ``model_args`` (dpal.training.network).
    model: str = "cnn-tanh"
    model_args: dict[str, Any] | None = None
    # Backbones: "linear-probe" (default), "last-blocks" (the last ``tail_blocks`` blocks and the
    # head) or "full"; images resized to ``image_size`` (default: the backbone's own);
    # frozen-mode features cached in ``feature_cache`` (default ~/.cache/dpal/features).
    finetune: str | None = None
    image_size: int | None = None
    tail_blocks: int = 1
    feature_cache: str | None = None
    # Defaults: the configuration chosen on a held-out split of MNIST at ε = 3 (docs/RESULTS.md).
    epochs: int = 60
    batch_size: int = 1024
    lr: float = 1.0
    momentum: float = 0.0
    lr_schedule: str = "constant"
    clip: float = 1.0
    epsilon: float | None = None
    noise_multiplier: float | None = None
    delta: float = 1e-5
    private: bool = True
    ema: float = 0.999
    holdout: int = 0
    seed: int = 0
    # Noise from a generator seeded by ``seed`` (bit-reproducible runs) instead of fresh OS
    # entropy. Anyone who knows the seed — it is in every released summary — can then undo the
    # noise: for experiments only (dpal.privacy.noise_source).
    deterministic_noise: bool = False
    # Every noise draw from the OS CSPRNG, Gaussian as a sum of four draws
    # (dpal.privacy.secure_noise); excludes deterministic_noise.
    secure_noise: bool = False
    engine: str = "auto"
    augment: str = "none"
    augment_copies: int = 1
    max_shift: int = 2
    # Weights learned from public data only (`dpal pretrain`), for every layer but the head.
    # DP-SGD's guarantee holds for any initialisation chosen without the private data.
    init: str | None = None
    # DP-RandP: the first epochs train only the classifier head (DP linear probing of the
    # initialisation's features), the rest every layer; the same σ and q throughout.
    linear_probe_epochs: int = 0
    # Before training, standardise the head's input with the feature mean and spread of
    # random-process images (dpal.models.standardize): no private data, so no privacy cost.
    standardize_features: bool = False
    # AdaMix (dpal.training.adamix): a labelled *public* set (npz with x, y) read at every step
    # for the top-k gradient subspace (projection_rank; 0 = none), the clip bound (a quantile of
    # the public projected norms; None = ``clip``) and the public gradient mixed in
    # (public_mix: a weight in [0, 1] or "inverse-variance").
    public_set: str | None = None
    projection_rank: int = 0
    clip_quantile: float | None = None
    public_mix: float | str = 0.0
    public_batch: int = 256
    # "every-step": U from the public gradients at the current weights (the paper); "initial":
    # once, at the weights the run starts from (public too), so fitting the public set during
    # the run cannot collapse it (docs/RESULTS.md, AdaMix on a pretrained backbone).
    projection_subspace: str = "every-step"
    # Non-private runs only: clip each example's gradient at ``clip`` and add no noise — DP-SGD's
    # update rule without its noise, so the learning rate tuned for DP-SGD serves the
    # non-private baseline too (plain SGD at a DP learning rate of 2–4 diverges or stalls).
    nonprivate_clip: bool = False

    def __post_init__(self) -> None:
        noise_source.check_mode(deterministic=self.deterministic_noise, secure=self.secure_noise)
        if self.epochs <= 0:
            raise DpalError(f"--epochs must be ≥ 1, got {self.epochs}.")
        if self.batch_size <= 0:
            raise DpalError(f"--batch-size must be ≥ 1, got {self.batch_size}.")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise DpalError(f"--lr must be a positive number, got {self.lr}.")
        if not 0 <= self.momentum < 1:
            raise DpalError(f"--momentum must be in [0, 1), got {self.momentum}.")
        if self.lr_schedule not in LR_SCHEDULES:
            raise DpalError(
                f"--lr-schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}."
            )
        if not 0 <= self.ema < 1:
            raise DpalError(f"--ema must be a decay in [0, 1) (0 = off), got {self.ema}.")
        if self.augment not in AUGMENTATIONS:
            raise DpalError(f"--augment must be one of {AUGMENTATIONS}, got {self.augment!r}.")
        if self.augment_copies < 1:
            raise DpalError(f"--augment-copies must be ≥ 1, got {self.augment_copies}.")
        if self.augment_copies > 1 and self.augment == "none":
            raise DpalError("--augment-copies > 1 needs --augment shift or shift-flip.")
        if not 0 <= self.linear_probe_epochs <= self.epochs:
            raise DpalError(
                f"--linear-probe-epochs must be in [0, --epochs = {self.epochs}], "
                f"got {self.linear_probe_epochs}."
            )
        adamix = self.projection_rank or self.clip_quantile is not None or self.public_mix != 0.0
        if adamix and self.public_set is None:
            raise DpalError(
                "--projection-rank, --clip-quantile and --public-mix read a labelled public set: "
                "give --public-set PATH.npz."
            )
        if self.projection_rank < 0 or self.public_batch < 2:
            raise DpalError("--projection-rank must be ≥ 0 and --public-batch ≥ 2.")
        if self.projection_subspace not in PROJECTION_SUBSPACES:
            raise DpalError(
                f"projection_subspace must be one of {PROJECTION_SUBSPACES}, got "
                f"{self.projection_subspace!r}."
            )
        if self.projection_subspace == "initial" and not self.projection_rank:
            raise DpalError('projection_subspace="initial" needs --projection-rank ≥ 1.')
        if self.clip_quantile is not None and not 0 < self.clip_quantile <= 1:
            raise DpalError(f"--clip-quantile must be in (0, 1], got {self.clip_quantile}.")
        if self.public_mix != "inverse-variance" and not (
            isinstance(self.public_mix, int | float) and 0 <= self.public_mix <= 1
        ):
            raise DpalError(
                f"--public-mix must be a weight in [0, 1] or 'inverse-variance', "
                f"got {self.public_mix!r}."
            )
        if self.holdout < 0:
            raise DpalError(f"--holdout must be ≥ 0, got {self.holdout}.")
        if self.image_size is not None and not 16 <= self.image_size <= 1024:
            raise DpalError(f"--image-size must be in [16, 1024] pixels, got {self.image_size}.")
        check_delta(self.delta)
        if not self.private:
            if self.epsilon is not None or self.noise_multiplier is not None:
                raise DpalError(
                    "--non-private training takes neither --epsilon nor --noise-multiplier."
                )
            if self.nonprivate_clip and not self.clip > 0:
                raise DpalError(f"clipping needs --clip > 0, got {self.clip}.")
            return
        if self.nonprivate_clip:
            raise DpalError("nonprivate_clip is for non-private runs (private=False) only.")
        if not (self.clip > 0):
            raise DpalError(f"--clip must be > 0 for DP-SGD, got {self.clip}.")
        if (self.epsilon is None) == (self.noise_multiplier is None):
            raise DpalError(
                "give exactly one of --epsilon (σ is calibrated to it) and --noise-multiplier "
                "(ε is computed from it), or --non-private for the non-private upper bound."
            )
        if self.epsilon is not None:
            check_epsilon(self.epsilon, "--epsilon")
        if self.noise_multiplier is not None and not (
            self.noise_multiplier > 0 and math.isfinite(self.noise_multiplier)
        ):
            raise DpalError(f"--noise-multiplier must be > 0, got {self.noise_multiplier}.")
        if self.noise_multiplier is not None and self.noise_multiplier < MIN_NOISE_MULTIPLIER:
            raise DpalError(
                f"--noise-multiplier {self.noise_multiplier:g} is below {MIN_NOISE_MULTIPLIER}: "
                "ε would run into the hundreds or more, and the PLD accountant needs minutes to "
                "petabytes to say so (σ = 0.05: 46 s for 20 steps; 1e-6: 35 PiB); use σ ≥ "
                f"{MIN_NOISE_MULTIPLIER}, or --non-private for a model without privacy."
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
