"""The figures' configurations: typed, frozen, one per figure, a full and a ``--quick`` scale,
and a JSON round trip (each figure folder keeps the ``config.json`` it ran with)."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from dpal.core.errors import DpalError
from dpal.methods.active_learning.experiment import ExperimentConfig
from dpal.training.config import TrainConfig
from dpal.training.finetune import FinetuneConfig
from dpal.training.rotation import RotationConfig


def _train(dataset: str, epochs: int = 60) -> TrainConfig:
    return TrainConfig(dataset=dataset, epsilon=3.2, epochs=epochs)


# The figures reproduce the paper, so NearPrivate runs as Algorithm 2 was published (DP-PCA,
# candidates by public uncertainty); dpal's default puts private support first
# (dpal.selection.near_private).
PAPER = "none"


@dataclass(frozen=True, kw_only=True)
class Fig1Config:
    experiment: ExperimentConfig = field(
        default_factory=lambda: ExperimentConfig(pool_filter=PAPER)
    )


@dataclass(frozen=True, kw_only=True)
class Fig2Config:
    """The SVHN recipe: rotation pre-training on the public ``extra`` split, DP-SGD from it on
    ``train`` (private), then active learning with ``extra`` as the pool (needs SVHN's files)."""

    experiment: ExperimentConfig = field(
        default_factory=lambda: ExperimentConfig(
            dataset="svhn",
            epsilon_dp=6.0,
            train=TrainConfig(dataset="svhn", epsilon=6.0, epochs=30),
            n_labeled=(1000, 2000, 4000, 7000, 10000),
        )
    )
    rotation: RotationConfig = field(default_factory=RotationConfig)


@dataclass(frozen=True, kw_only=True)
class Fig3Config:
    curves: ExperimentConfig = field(
        default_factory=lambda: ExperimentConfig(
            dataset="mnist-polluted",
            train=_train("mnist-polluted"),
            near_private_from="equal",
            pool_filter=PAPER,
        )
    )
    harsh_label: int | None = 0  # the harsher annotator's class for non-digits; None: skip
    harsh_methods: tuple[str, ...] = ("diverse-public", "near-private")
    # A wider candidate set (k = N + this): the top-k uncertain points of a polluted pool are
    # mostly non-digits, so with a small k NearPrivate can only choose among them. None: skip.
    wide_extra_candidates: int | None = 10_000


@dataclass(frozen=True, kw_only=True)
class Fig4Config:
    dataset: str = "mnist-offline"
    epsilon_dp: float = 3.2
    train: TrainConfig = field(default_factory=lambda: _train("mnist-offline"))
    n_labeled: tuple[int, ...] = (1000, 2000, 4000)
    n_each: tuple[int, ...] = (1, 5, 10, 50)
    extra_candidates: int = 2000
    grid_clusters: int = 100  # Figure 4b: clusters shown (n_each = 1)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    seeds: int = 1


@dataclass(frozen=True, kw_only=True)
class Fig5Config:
    dataset: str = "mnist-offline"
    epsilon_dp: float = 3.2
    train: TrainConfig = field(default_factory=lambda: _train("mnist-offline"))
    checkpoint_epochs: tuple[int, ...] = (10, 20, 30, 40, 50, 60)
    n_labeled: tuple[int, ...] = (1000, 4000)
    epsilon_pca: float = 0.4
    epsilon_support: float = 0.6
    epsilon_limit: float = 3.2  # right panel: ε_total ≤ this, ε_support varies
    support_sweep: tuple[float, ...] = (0.1, 0.2, 0.4, 0.6, 1.0)
    sweep_n_labeled: int = 2000
    extra_candidates: int = 2000
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    seeds: int = 1


FigureConfig = Fig1Config | Fig2Config | Fig3Config | Fig4Config | Fig5Config

_QUICK_TRAIN = {"epochs": 4}
_QUICK_FT = FinetuneConfig(epochs=20)

FULL: dict[str, FigureConfig] = {
    "fig1": Fig1Config(),
    "fig2": Fig2Config(),
    "fig3": Fig3Config(),
    "fig4": Fig4Config(),
    "fig5": Fig5Config(),
}
QUICK: dict[str, FigureConfig] = {
    "fig1": Fig1Config(
        experiment=ExperimentConfig(
            train=_train("mnist-offline", 4),
            n_labeled=(200, 500),
            finetune=_QUICK_FT,
            pool_filter=PAPER,
        )
    ),
    "fig2": Fig2Config(
        experiment=ExperimentConfig(
            dataset="svhn",
            epsilon_dp=6.0,
            train=TrainConfig(dataset="svhn", epsilon=6.0, epochs=3),
            n_labeled=(500, 1000),
            finetune=_QUICK_FT,
        ),
        rotation=RotationConfig(epochs=1, max_images=20_000),
    ),
    "fig3": Fig3Config(
        curves=ExperimentConfig(
            dataset="mnist-polluted",
            train=_train("mnist-polluted", 4),
            n_labeled=(200, 500),
            finetune=_QUICK_FT,
            near_private_from="equal",
            pool_filter=PAPER,
        )
    ),
    "fig4": Fig4Config(
        train=_train("mnist-offline", 4),
        n_labeled=(200, 500),
        n_each=(1, 10),
        grid_clusters=36,
        finetune=_QUICK_FT,
    ),
    "fig5": Fig5Config(
        train=_train("mnist-offline", 4),
        checkpoint_epochs=(2, 4),
        n_labeled=(200,),
        support_sweep=(0.3, 1.0),
        sweep_n_labeled=200,
        finetune=_QUICK_FT,
    ),
}


def with_seeds(config: FigureConfig, seeds: int) -> FigureConfig:
    if seeds < 1:
        raise DpalError(f"--seeds must be ≥ 1, got {seeds}.")
    if isinstance(config, Fig1Config | Fig2Config):
        return replace(config, experiment=replace(config.experiment, seeds=seeds))
    if isinstance(config, Fig3Config):
        return replace(config, curves=replace(config.curves, seeds=seeds))
    return replace(config, seeds=seeds)


# --- configs to and from JSON ------------------------------------------------------------------


def config_to_dict(config: Any) -> dict[str, Any]:
    return asdict(config)


def config_from_dict(cls: type[Any], data: dict[str, Any]) -> Any:
    """Inverse of :func:`config_to_dict` for the figure configs and everything they nest."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise DpalError(f"{cls.__name__}: unknown fields {unknown}; known: {sorted(known)}.")
    return cls(**{k: _from_json(hints[k], v) for k, v in data.items()})


def _from_json(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return _from_json(inner[0], value) if len(inner) == 1 else value
    if origin is tuple:
        (item, *_) = typing.get_args(hint)
        return tuple(_from_json(item, v) for v in value)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return config_from_dict(hint, value)
    return value


CONFIG_CLASSES: dict[str, type[Any]] = {
    "fig1": Fig1Config,
    "fig2": Fig2Config,
    "fig3": Fig3Config,
    "fig4": Fig4Config,
    "fig5": Fig5Config,
}
