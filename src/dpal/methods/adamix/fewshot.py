"""AdaMix's few-shot public set D_pub and the model trained on it alone (free: public data).

Two ways to get D_pub from the task's public pool (or, for a task without one, from a held-out
tail of the training set, which is then *not* private):

* ``random`` — the paper's setting: ``per_class`` labelled images of each class, drawn at random
  (which presumes the labeller can hand out images by class);
* ``diverse-public`` — as a user with an unlabelled pool would buy them: ``per_class × K``
  images chosen by DiversePublic (:func:`dpal.selection.strategies.diverse_public`) on the
  backbone's embeddings of the pool, with no model yet (every point equally uncertain, so the
  candidates are the whole pool): k-means in the top principal components, the image nearest
  each centre. Class balance is not promised: what is bought is what the pool looks like. Free:
  it reads public images and a public network only. Bought images that the pool marks invalid
  (a polluted pool's non-class images) are paid for and dropped, as a labeller would reject
  them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from dpal.core.errors import DpalError
from dpal.data.arrays import ImageArrays
from dpal.data.tasks import Task
from dpal.selection.strategies import diverse_public
from dpal.training.config import TrainConfig
from dpal.training.evaluate import accuracy
from dpal.training.finetune import FinetuneConfig, finetune
from dpal.training.network import Network, network_for, trains_on_features

FEWSHOT_SELECTIONS = ("random", "diverse-public")


def _pool(task: Task, holdout: int) -> tuple[ImageArrays, ImageArrays, np.ndarray]:
    """(source of D_pub, the private set, validity of the source's images)."""
    if task.public is not None:
        valid = np.ones(len(task.public), bool) if task.public_valid is None else task.public_valid
        return task.public, task.private, valid
    if len(task.private) <= holdout:  # no public pool: a fixed tail becomes public, never private
        raise DpalError(f"{task.name}: {len(task.private)} training images ≤ holdout {holdout}.")
    cut = len(task.private) - holdout
    source = task.private.subset(slice(cut, None), name=f"{task.name} public tail")
    return source, task.private.subset(slice(0, cut)), np.ones(len(source), bool)


def fewshot_split(
    task: Task,
    per_class: int,
    seed: int,
    holdout: int,
    *,
    selection: str = "random",
    embed: Callable[[ImageArrays], np.ndarray] | None = None,
) -> tuple[Task, ImageArrays]:
    """(the private task, D_pub) — module docstring. ``embed``: images → embeddings (public
    network), needed by ``diverse-public``."""
    if selection not in FEWSHOT_SELECTIONS:
        choices = ", ".join(FEWSHOT_SELECTIONS)
        raise DpalError(f"--fewshot-selection must be one of {choices}, got {selection!r}.")
    source, private, valid = _pool(task, holdout)
    rng = np.random.default_rng(seed)
    if selection == "random":
        picks = []
        for k in range(task.num_classes):
            members = np.flatnonzero((source.y == k) & valid)
            if len(members) < per_class:
                raise DpalError(
                    f"class {k} has {len(members)} public images, fewer than {per_class}."
                )
            picks.append(rng.choice(members, per_class, replace=False))
        chosen = np.sort(np.concatenate(picks))
    else:
        if embed is None:
            raise DpalError(
                "--fewshot-selection diverse-public clusters a pretrained network's embeddings of "
                "the pool: use --model efficientnet-lite0 (or another backbone)."
            )
        n = per_class * task.num_classes
        emb = np.asarray(embed(source), dtype=np.float64)
        bought = diverse_public(emb, np.zeros(len(source)), n, k=len(source), n_clusters=n,
                                n_each=1, rng=seed)  # fmt: skip
        chosen = np.sort(bought[valid[bought]])
    name = f"D_pub ({per_class}/class, {selection})"
    public = source.subset(chosen, name=name)
    return replace(task, private=private, public=None, public_valid=None), public


def fewshot_config(fewshot: FinetuneConfig, net: Network, seed: int) -> FinetuneConfig:
    # a head on cached features has no images to shift: the few-shot model trains unaugmented
    augment = "none" if trains_on_features(net) else fewshot.augment
    return replace(fewshot, seed=seed, augment=augment)


def train_fewshot(
    base: TrainConfig, task: Task, public: ImageArrays, fewshot: FinetuneConfig, *, seed: int,
    progress: bool = False, model: nn.Module | None = None
) -> tuple[nn.Module, Network, float]:  # fmt: skip
    """The model trained on D_pub alone from the network ``base`` names (a backbone's head from
    zero; ``model``: your own module instead), its network, and its test accuracy (nan without a
    test split)."""
    torch.manual_seed(seed)
    net = network_for(base, task.image_shape, task.num_classes, progress=progress, model=model)
    inputs = net.inputs if trains_on_features(net) else None  # else images, augmented as usual
    model = finetune(net.trainable, public, fewshot_config(fewshot, net, seed), inputs=inputs)
    acc = float("nan")
    if task.test is not None:
        acc = accuracy(model, (net.inputs(task.test), torch.from_numpy(task.test.y)))
    return model, net, acc


def embedder(
    base: TrainConfig, task: Task, *, progress: bool
) -> Callable[[ImageArrays], np.ndarray] | None:
    """Images → the backbone's pooled features (public network, no private data), or None when
    ``base`` names no pretrained backbone."""
    from dpal.models.backbones import is_backbone

    if not is_backbone(base.model):
        return None
    net = network_for(replace(base, finetune="linear-probe", standardize_features=False),
                      task.image_shape, task.num_classes, progress=progress)  # fmt: skip
    return lambda arrays: net.inputs(arrays).numpy()
