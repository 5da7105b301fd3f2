"""The selection step of an improvement (Zhao et al. 2019): which public points to label —
random, entropy, margin, DiversePublic (free: public data and a released model) or NearPrivate
(DP-PCA and noisy support counts on the private embeddings, recorded in the ledger)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dpal.core.errors import DpalError
from dpal.data.arrays import ImageArrays
from dpal.data.tasks import Task
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
from dpal.training.evaluate import logits_of
from dpal.training.network import image_inputs


@dataclass(frozen=True, kw_only=True)
class SelectConfig:
    strategy: str
    n_labeled: int
    k: int | None = None  # candidates; default n_labeled + 2000
    n_each: int = 10
    n_components: int = 16
    score: str = "margin"  # uncertainty used by diverse-public and near-private
    epsilon_pca: float = 0.4  # near-private with pool_filter="none" (the paper's DP-PCA)
    epsilon_density: float = 0.4  # near-private with pool_filter="density" (the default)
    epsilon_support: float = 0.6
    private_selection: str = "threshold"
    pool_filter: str = "density"  # dpal.selection.near_private
    delta: float = 1e-5
    seed: int = 0
    # DP-PCA and support-count noise from ``seed`` instead of OS entropy (experiments only:
    # whoever knows the seed can undo the noise; dpal.privacy.noise_source).
    deterministic_noise: bool = False
    secure_noise: bool = False  # every draw from the OS CSPRNG (dpal.privacy.secure_noise)

    def __post_init__(self) -> None:
        noise_source.check_mode(deterministic=self.deterministic_noise, secure=self.secure_noise)
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

    def near_private(self) -> NearPrivateConfig:
        """NearPrivate's configuration (also what ``plan_budget`` accounts for)."""
        return NearPrivateConfig(
            k=self.candidates,
            n_components=self.n_components,
            epsilon_pca=self.epsilon_pca,
            epsilon_density=self.epsilon_density,
            epsilon_support=self.epsilon_support,
            delta=self.delta,
            private_selection=self.private_selection,
            pool_filter=self.pool_filter,
            discrete_laplace=self.secure_noise,
        )


def select(
    model: nn.Module,
    task: Task,
    config: SelectConfig,
    ledger: Ledger,
    inputs: Callable[[ImageArrays], torch.Tensor] | None = None,
) -> tuple[np.ndarray, list[int]]:
    """Pool indices to label, and the ledger entries (pending) the selection added. ``inputs``:
    images → ``model``'s inputs (``Network.inputs``: a frozen backbone's cached features, whose
    head is then ``model``); the images themselves by default."""
    to_inputs = inputs or image_inputs
    if task.public is None:
        raise DpalError(f"task {task.name!r} has no public pool to select from.")
    rng = np.random.default_rng(config.seed)
    n_pool = len(task.public)
    if config.strategy == "random":
        return random_selection(n_pool, config.n_labeled, rng=rng), []
    pool_x = to_inputs(task.public)
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
    priv_x = to_inputs(task.private)
    priv_logits, priv_emb = logits_and_embeddings(model, priv_x)
    result = near_private(
        pool_emb,
        unc,
        priv_emb.numpy(),
        uncertainty(priv_logits.numpy(), config.score),
        config.n_labeled,
        config=config.near_private(),
        ledger=ledger,
        rng=numpy_noise_rng(
            deterministic=config.deterministic_noise, seed=config.seed, secure=config.secure_noise
        ),
        noise=noise_source.source(config.deterministic_noise, config.secure_noise),
    )
    return result.indices, list(result.ledger_entries)
