"""``dpal train``, ``dpal eval``, ``dpal pretrain``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from dpal.cli.common import add_data_dir, add_deterministic_noise
from dpal.core.errors import DpalError


def cmd_train(a: argparse.Namespace) -> None:
    from dpal.training.config import TrainConfig
    from dpal.training.trainer import VALIDATION_KEY, train

    if a.resume:
        # Only the epoch to continue to is taken from the command line; the rest is stored.
        config = TrainConfig(epochs=a.epochs, epsilon=1.0) if a.epochs is not None else None
        out = a.out or str(Path(a.resume).resolve().parent.parent)
    else:
        if not a.out:
            raise DpalError("--out RUN_DIR is required (checkpoints and the ledger go there).")
        config = TrainConfig(
            dataset=a.dataset,
            model=a.model,
            model_args=_model_args(a.model_args),
            finetune=a.finetune,
            image_size=a.image_size,
            tail_blocks=a.tail_blocks,
            feature_cache=a.feature_cache,
            standardize_features=a.standardize_features,
            epochs=TrainConfig.epochs if a.epochs is None else a.epochs,
            batch_size=a.batch_size,
            lr=a.lr,
            momentum=a.momentum,
            lr_schedule=a.lr_schedule,
            clip=a.clip,
            epsilon=None if a.non_private else a.epsilon,
            noise_multiplier=None if a.non_private else a.noise_multiplier,
            delta=a.delta,
            private=not a.non_private,
            ema=a.ema,
            augment=a.augment,
            augment_copies=a.augment_copies,
            max_shift=a.max_shift,
            holdout=a.holdout,
            seed=a.seed,
            deterministic_noise=a.deterministic_noise,
            secure_noise=a.secure_noise,
            init=a.init,
            linear_probe_epochs=a.linear_probe_epochs,
        )
        out = a.out
    result = train(
        config, out, data_dir=a.data_dir, resume=a.resume, progress=not a.quiet, device=a.device
    )
    if not result.is_writer:  # torchrun: rank 0 reports for the group
        return
    sigma = f"σ = {result.noise_multiplier:.4f}" if result.noise_multiplier else "non-private"
    print(
        f"test accuracy {result.test_accuracy:.4f} at ε = {result.epsilon:.3f} "
        f"(δ = {result.history[-1]['delta'] if result.history else '-'}, PLD; {sigma}) → {out}"
    )
    if result.history and VALIDATION_KEY in result.history[-1]:
        print(
            "  the model's ε is above; the run's total is ε = ∞: --holdout accuracy read "
            "held-out private images without noise (see `dpal ledger`)"
        )


def _model_args(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        args = json.loads(text)
    except json.JSONDecodeError as err:
        msg = f"--model-args must be a JSON object, e.g. '{{\"width\": 64}}' ({err})."
        raise DpalError(msg) from None
    if not isinstance(args, dict):
        raise DpalError("--model-args must be a JSON object of keyword arguments.")
    return args


def cmd_eval(a: argparse.Namespace) -> None:
    from dpal.data.tasks import load_task
    from dpal.methods.active_learning.improve import load_released_model
    from dpal.training.evaluate import accuracy

    released = load_released_model(a.checkpoint)
    model, s = released.model, released.summary
    task = load_task(a.dataset or s["config"]["dataset"], data_dir=a.data_dir)
    if task.test is None:
        raise DpalError(f"dataset {task.name!r} has no test split to evaluate on.")
    acc = accuracy(model, task.test)
    print(
        json.dumps(
            {
                "checkpoint": a.checkpoint,
                "test_accuracy": acc,
                "epsilon": s["epsilon"],
                "delta": s["delta"],
                "epoch": s["epoch"],
            },
            indent=1,
        )
    )


def cmd_pretrain(a: argparse.Namespace) -> None:
    from dpal.data.registry import load_split
    from dpal.training.rotation import RotationConfig, rotation_pretrain

    if a.split == "train":
        raise DpalError(
            "pre-training reads its images without privacy: give a public split (--split extra "
            "for SVHN), never the private training split."
        )
    images = load_split(a.dataset, a.split, data_dir=a.data_dir)
    config = RotationConfig(
        model=a.model, epochs=a.epochs, max_images=a.max_images or None, seed=a.seed
    )
    path = rotation_pretrain(images, config, a.out, progress=True)
    print(f"pre-trained weights (no privacy cost: public {a.dataset}/{a.split}) → {path}")
    print(f"use them with: dpal train --init {path} ...")


def register(sub: Any) -> None:
    p = sub.add_parser("train", help="DP-SGD training (or --non-private)")
    p.add_argument("--dataset", default="mnist", help="task name, npz:PATH or folder:PATH")
    p.add_argument(
        "--model",
        default="cnn-tanh",
        help="cnn-tanh, cnn-relu, cnn-gn, wrn-16-4; a pretrained backbone (efficientnet-lite0 "
        "offline; resnet18, resnet50, vit_b_16 from torchvision); or package.module:factory",
    )
    p.add_argument("--model-args", help="JSON keyword arguments for a package.module:factory")
    p.add_argument(
        "--finetune",
        choices=("linear-probe", "last-blocks", "full"),
        help="backbones: train the head on frozen features (default), the last blocks and "
        "the head, or everything",
    )
    p.add_argument("--image-size", type=int, help="backbones: pixels (default: the backbone's)")
    p.add_argument("--tail-blocks", type=int, default=1, help="last-blocks: how many blocks")
    p.add_argument("--feature-cache", help="folder for cached features (private data!)")
    p.add_argument(
        "--standardize-features",
        action="store_true",
        help="centre and scale the head's input with statistics of random-process images (free)",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--epsilon", type=float, help="target ε for the whole run (σ calibrated)")
    p.add_argument("--noise-multiplier", type=float, help="σ (ε is then computed)")
    p.add_argument("--non-private", action="store_true", help="no clipping, no noise (ε = ∞)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, default=1024, help="expected batch size q·N")
    p.add_argument("--lr", type=float, default=1.0)
    p.add_argument("--momentum", type=float, default=0.0)
    p.add_argument("--lr-schedule", default="constant", choices=("constant", "cosine"))
    p.add_argument("--clip", type=float, default=1.0, help="per-example L2 clip bound C")
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay of weights (0 = off)")
    p.add_argument("--augment", default="none", choices=("none", "shift", "shift-flip"))
    p.add_argument("--augment-copies", type=int, default=1, help="K copies averaged per example")
    p.add_argument(
        "--init",
        help="weights pre-trained on public data (`dpal pretrain`) for every layer but the head",
    )
    p.add_argument(
        "--linear-probe-epochs",
        type=int,
        default=0,
        help="train only the head for the first N epochs (DP linear probing), then all layers",
    )
    p.add_argument("--max-shift", type=int, default=2, help="pixels, for --augment shift")
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument(
        "--holdout",
        type=int,
        default=0,
        help="last N training images → validation, for tuning; their accuracy "
        "is printed without noise: a non-private statistic of private data",
    )
    p.add_argument("--seed", type=int, default=0)
    add_deterministic_noise(p)
    p.add_argument("--out", help="run directory")
    p.add_argument("--resume", help="checkpoint to continue from")
    p.add_argument("--quiet", action="store_true")
    add_data_dir(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="test accuracy of a checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("--dataset", help="task to evaluate on (default: the one trained on)")
    add_data_dir(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "pretrain", help="self-supervised rotation pre-training on a public split (free)"
    )
    p.add_argument("--dataset", default="svhn")
    p.add_argument("--split", default="extra", help="a PUBLIC split (never the private one)")
    p.add_argument("--model", default="cnn-tanh")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--max-images", type=int, default=200_000, help="0: all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="the .pt file to write")
    add_data_dir(p)
    p.set_defaults(func=cmd_pretrain)
