"""``dpal`` command line: thin — parses arguments and calls the library."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dpal.errors import DpalError


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="dataset root (default: $DPAL_DATA, else ~/.cache/dpal)")


def _schedule_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sample-rate", "-q", type=float, help="Poisson sampling rate q")
    p.add_argument("--batch-size", type=int, help="expected batch size (with --dataset-size)")
    p.add_argument("--dataset-size", type=int, help="number of private examples N")
    p.add_argument("--epochs", type=int, help="passes of ⌊1/q⌋ steps each")
    p.add_argument("--steps", type=int, help="number of DP-SGD steps")
    p.add_argument("--delta", type=float, default=1e-5)


def _sample_rate_and_steps(a: argparse.Namespace) -> tuple[float, int]:
    from dpal.privacy.accounting import check_sample_rate, steps_for_epochs

    if a.sample_rate is not None:
        if a.batch_size is not None:
            raise DpalError("give --sample-rate, or --batch-size with --dataset-size, not both.")
        q = a.sample_rate
    elif a.batch_size is not None and a.dataset_size is not None:
        if a.dataset_size <= 0 or a.batch_size <= 0:
            raise DpalError("--batch-size and --dataset-size must be positive.")
        q = a.batch_size / a.dataset_size
    else:
        raise DpalError("give --sample-rate Q, or --batch-size B with --dataset-size N (q = B/N).")
    check_sample_rate(q)
    if (a.epochs is None) == (a.steps is None):
        raise DpalError("give exactly one of --epochs and --steps.")
    if a.steps is not None and a.steps <= 0:
        raise DpalError(f"--steps must be > 0, got {a.steps}.")
    return q, (a.steps if a.steps is not None else steps_for_epochs(a.epochs, q))


def cmd_account(a: argparse.Namespace) -> None:
    from dpal.privacy.accounting import DpsgdSchedule, epsilon

    q, steps = _sample_rate_and_steps(a)
    if a.noise_multiplier is None or a.noise_multiplier <= 0:
        raise DpalError("--noise-multiplier must be given and > 0.")
    event = DpsgdSchedule(noise_multiplier=a.noise_multiplier, sample_rate=q, steps=steps).event()
    eps = epsilon(event, delta=a.delta, accountant=a.accountant)
    print(
        f"ε = {eps:.4f} at δ = {a.delta:g}  ({a.accountant}; σ = {a.noise_multiplier}, "
        f"q = {q:.6g}, steps = {steps}, Poisson sampling, add/remove-one)"
    )


def cmd_calibrate(a: argparse.Namespace) -> None:
    from dpal.privacy.accounting import calibrate_noise_multiplier

    q, steps = _sample_rate_and_steps(a)
    sigma = calibrate_noise_multiplier(
        target_epsilon=a.epsilon, delta=a.delta, sample_rate=q, steps=steps, accountant=a.accountant
    )
    print(
        f"σ = {sigma:.4f} gives ε ≤ {a.epsilon} at δ = {a.delta:g}  ({a.accountant}; "
        f"q = {q:.6g}, steps = {steps})"
    )


def cmd_train(a: argparse.Namespace) -> None:
    from dpal.training.config import TrainConfig
    from dpal.training.trainer import train

    if a.resume:
        # Only the epoch to continue to is taken from the command line; the rest is stored.
        config = TrainConfig(epochs=a.epochs, epsilon=1.0) if a.epochs else None
        out = a.out or str(Path(a.resume).resolve().parent.parent)
    else:
        if not a.out:
            raise DpalError("--out RUN_DIR is required (checkpoints and the ledger go there).")
        config = TrainConfig(
            dataset=a.dataset,
            model=a.model,
            epochs=a.epochs or TrainConfig.epochs,
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
        )
        out = a.out
    result = train(config, out, data_dir=a.data_dir, resume=a.resume, progress=not a.quiet)
    sigma = f"σ = {result.noise_multiplier:.4f}" if result.noise_multiplier else "non-private"
    print(
        f"test accuracy {result.test_accuracy:.4f} at ε = {result.epsilon:.3f} "
        f"(δ = {result.history[-1]['delta'] if result.history else '-'}, PLD; {sigma}) → {out}"
    )


def cmd_eval(a: argparse.Namespace) -> None:
    from dpal.data.tasks import load_task
    from dpal.models.registry import build_model
    from dpal.training.checkpoint import load_checkpoint
    from dpal.training.evaluate import accuracy

    state = load_checkpoint(a.checkpoint)
    s = state["summary"]
    model = build_model(s["config"]["model"], tuple(s["image_shape"]), s["num_classes"])
    model.load_state_dict(state["release"])
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


def cmd_ledger(a: argparse.Namespace) -> None:
    from dpal.privacy.ledger import Ledger

    path = Path(a.run_dir) / "ledger.json"
    if not path.exists():
        raise DpalError(f"{path}: no ledger here; give the --out directory of a dpal run.")
    ledger = Ledger(path)
    totals = ledger.totals(delta=a.delta)
    if a.json:
        print(
            json.dumps(
                {"entries": [e.__dict__ for e in ledger.entries], "totals": totals.__dict__},
                indent=1,
                default=str,
            )
        )
        return
    print(f"privacy ledger {path}  (adjacency: add/remove-one example)")
    for e in ledger.entries:
        params = ", ".join(f"{k}={v:.6g}" for k, v in e.params.items())
        print(f"  #{e.id:<3} {e.status:<7} {e.mechanism:<16} {e.kind:<10} {params}  {e.note}")
    print(
        f"total at δ = {a.delta:g}:  ε = {totals.epsilon_pld:.4f} (PLD)   "
        f"{totals.epsilon_rdp:.4f} (RDP)   {totals.epsilon_naive:.4f} (naive sum over "
        f"{len(totals.per_mechanism)} mechanism(s), each at δ/{max(1, len(totals.per_mechanism))})"
    )


def cmd_data(a: argparse.Namespace) -> None:
    from dpal.data.registry import DATASETS, load_split, split_status
    from dpal.data.root import resolve_data_root
    from dpal.data.tasks import TASKS

    root = resolve_data_root(a.data_dir)
    if a.data_cmd == "list":
        print(f"data root: {root}")
        for name, info in DATASETS.items():
            status = ", ".join(f"{s}: {split_status(name, s, root)}" for s in info.splits)
            print(f"  {name:<8} {info.description}  [{status}]")
        print("tasks (private / public / test): " + ", ".join(TASKS) + ", npz:PATH, folder:PATH")
        return
    names = a.datasets or list(DATASETS)
    for name in names:
        if name not in DATASETS:
            raise DpalError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}.")
        for split in DATASETS[name].splits:
            arrays = load_split(name, split, data_dir=a.data_dir, download=True)
            print(f"  {name}/{split}: {len(arrays)} images {arrays.image_shape} ready")


def build_parser() -> argparse.ArgumentParser:
    from dpal.privacy.accounting import ACCOUNTANTS

    parser = argparse.ArgumentParser(
        prog="dpal",
        description="Differentially private image "
        "classifiers, improved with public data, under one ledger.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data", help="list or download datasets")
    dsub = p.add_subparsers(dest="data_cmd", required=True)
    dl = dsub.add_parser("list", help="datasets and whether each split is present")
    _add_data_dir(dl)
    dp = dsub.add_parser("prepare", help="download (torchvision) and cache datasets")
    dp.add_argument("datasets", nargs="*")
    _add_data_dir(dp)
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("account", help="ε of a DP-SGD schedule")
    p.add_argument("--noise-multiplier", "-s", type=float, required=True)
    _schedule_args(p)
    p.add_argument("--accountant", choices=ACCOUNTANTS, default="pld")
    p.set_defaults(func=cmd_account)

    p = sub.add_parser("calibrate", help="σ for a target ε")
    p.add_argument("--epsilon", type=float, required=True)
    _schedule_args(p)
    p.add_argument("--accountant", choices=("pld", "rdp"), default="pld")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("train", help="DP-SGD training (or --non-private)")
    p.add_argument("--dataset", default="mnist", help="task name, npz:PATH or folder:PATH")
    p.add_argument("--model", default="cnn-tanh")
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
    p.add_argument("--max-shift", type=int, default=2, help="pixels, for --augment shift")
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--holdout", type=int, default=0, help="last N training images → validation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="run directory")
    p.add_argument("--resume", help="checkpoint to continue from")
    p.add_argument("--quiet", action="store_true")
    _add_data_dir(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="test accuracy of a checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("--dataset", help="task to evaluate on (default: the one trained on)")
    _add_data_dir(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("ledger", help="a run's privacy ledger and its total ε")
    p.add_argument("run_dir")
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ledger)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except DpalError as err:
        print(f"dpal: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dpal: interrupted; checkpoints and the ledger so far are kept.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
