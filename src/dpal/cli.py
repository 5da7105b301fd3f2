"""``dpal`` command line: thin — parses arguments and calls the library."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from dpal.errors import DpalError, DpalWarning


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
            init=a.init,
            linear_probe_epochs=a.linear_probe_epochs,
        )
        out = a.out
    result = train(config, out, data_dir=a.data_dir, resume=a.resume, progress=not a.quiet)
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


def cmd_eval(a: argparse.Namespace) -> None:
    from dpal.data.tasks import load_task
    from dpal.methods.active_learning import load_released_model
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


def cmd_ledger(a: argparse.Namespace) -> None:
    from dpal.training.lineage import open_checked, rebuild

    path = Path(a.run_dir) / "ledger.json"
    if a.rebuild:
        _, kept = rebuild(a.run_dir)
        print(
            f"rebuilt {path} from the checkpoints' lineage"
            + (f"; the old file is {kept}" if kept else "")
        )
    ledger = open_checked(a.run_dir)  # a missing or edited ledger is refused, never under-counted
    if a.delta is None:  # the run's own δ, where recorded
        a.delta = _run_delta(Path(a.run_dir))
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
        source = f"  [noise: {e.noise.split(' ')[0]}]" if e.noise else ""
        print(
            f"  #{e.id:<3} {e.status:<7} {e.mechanism:<16} {e.kind:<10} {params}  {e.note}{source}"
        )
    print(
        f"total at δ = {a.delta:g}:  ε = {totals.epsilon_pld:.4f} (PLD)   "
        f"{totals.epsilon_rdp:.4f} (RDP)   {totals.epsilon_naive:.4f} (naive sum over "
        f"{len(totals.per_mechanism)} mechanism(s), each at δ/{max(1, len(totals.per_mechanism))})"
    )
    reads = sorted({e.mechanism for e in ledger.counted() if e.kind == "nonprivate"})
    if reads:
        print(f"  ε = ∞ because of non-private reads of private data: {', '.join(reads)}")


def _run_delta(run_dir: Path) -> float:
    for name in ("run.json", "selection.json"):
        f = run_dir / name
        if f.exists():
            d = json.loads(f.read_text())
            return float(d.get("config", {}).get("delta", 1e-5))
    return 1e-5


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
    if a.data_cmd == "overlap":
        from dpal.data.overlap import overlap
        from dpal.data.tasks import load_task

        task = load_task(a.task, data_dir=a.data_dir)
        if task.public is None:
            raise DpalError(f"task {a.task!r} has no public pool to compare.")
        o = overlap(task.public, task.private, threshold=a.threshold)
        q = np.percentile(o.nearest_rms, [0, 1, 5, 50])
        print(
            f"{a.task}: {len(task.public)} public vs {len(task.private)} private images — "
            f"{o.exact} exact duplicates, {o.near} within RMS pixel difference "
            f"{o.threshold:g}/255; nearest-private RMS min/1%/5%/median = "
            + "/".join(f"{v:.1f}" for v in q)
            + "  (reads private data: for the operator, not a DP release)"
        )
        return
    names = a.datasets or list(DATASETS)
    for name in names:
        if name not in DATASETS:
            raise DpalError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}.")
        for split in DATASETS[name].splits:
            arrays = load_split(name, split, data_dir=a.data_dir, download=True)
            print(f"  {name}/{split}: {len(arrays)} images {arrays.image_shape} ready")


def _select_config(a: argparse.Namespace) -> Any:
    from dpal.methods.active_learning import SelectConfig

    return SelectConfig(
        strategy=a.strategy,
        n_labeled=a.n_labeled,
        k=a.k,
        n_each=a.n_each,
        n_components=a.n_components,
        score=a.score,
        epsilon_pca=a.epsilon_pca,
        epsilon_support=a.epsilon_support,
        private_selection=a.private_selection,
        seed=a.seed,
        deterministic_noise=a.deterministic_noise,
    )


def _finetune_config(a: argparse.Namespace) -> Any:
    from dpal.training.finetune import FinetuneConfig

    return FinetuneConfig(
        epochs=a.ft_epochs,
        batch_size=a.ft_batch_size,
        lr=a.ft_lr,
        momentum=a.ft_momentum,
        augment=a.ft_augment,
        distill_weight=a.ft_distill,
        lr_schedule=a.ft_lr_schedule,
        seed=a.seed,
    )


def _print_result(r: Any) -> None:
    print(
        f"test accuracy {r.start_accuracy:.4f} → {r.test_accuracy:.4f} with {r.n_labeled} "
        f"labels ({r.n_rejected} rejected); ε_dp = {r.epsilon_dp:.3f}, ε_total = "
        f"{r.epsilon_total:.3f} (PLD; RDP {r.epsilon_rdp:.3f}, naive sum {r.epsilon_naive:.3f})"
        f" → {r.out_dir}"
    )


def cmd_select(a: argparse.Namespace) -> None:
    from dpal.methods.active_learning import select_to_dir

    picked = select_to_dir(a.checkpoint, a.out, _select_config(a), data_dir=a.data_dir)
    print(f"selected {len(picked)} public points ({a.strategy}) → {a.out}/selection.json")
    cmd_ledger(argparse.Namespace(run_dir=a.out, delta=None, json=False, rebuild=False))


def cmd_label(a: argparse.Namespace) -> None:
    from dpal.data.tasks import load_task
    from dpal.labeling.files import export_for_labeling, import_labels
    from dpal.methods.active_learning import read_selection

    selection = read_selection(a.selection_dir)
    task = load_task(selection["dataset"], data_dir=a.data_dir)
    assert task.public is not None
    classes = [str(i) for i in range(task.num_classes)]
    folder = Path(a.selection_dir) / "labeling"
    if a.label_cmd == "export":
        manifest = export_for_labeling(
            task.public.x, np.asarray(selection["pool_indices"]), folder, classes=classes
        )
        print(
            f"wrote {len(selection['pool_indices'])} images, {manifest} and "
            f"{folder / 'label_studio_tasks.json'}; fill the manifest's label column (a class "
            "number or 'reject') or export from Label Studio, then `dpal label import`."
        )
        return
    labels = import_labels(
        a.labels_file, folder / "manifest.csv", classes=classes, allow_missing=a.allow_missing
    )
    from dpal.atomic import atomic_write_text

    atomic_write_text(
        Path(a.selection_dir) / "labels.json", json.dumps({str(k): v for k, v in labels.items()})
    )
    rejected = sum(v < 0 for v in labels.values())
    print(f"imported {len(labels)} labels ({rejected} rejected) → {a.selection_dir}/labels.json")


def cmd_finetune(a: argparse.Namespace) -> None:
    from dpal.methods.active_learning import finetune_dir

    path = Path(a.selection_dir) / "labels.json"
    if not path.exists():
        raise DpalError(f"{path}: no labels yet; run `dpal label import` first.")
    labels = {int(k): int(v) for k, v in json.loads(path.read_text()).items()}
    _print_result(finetune_dir(a.selection_dir, labels, _finetune_config(a), data_dir=a.data_dir))


def cmd_improve(a: argparse.Namespace) -> None:
    from dpal.methods.active_learning import improve

    _print_result(
        improve(a.checkpoint, a.out, _select_config(a), _finetune_config(a), data_dir=a.data_dir)
    )


def cmd_budget(a: argparse.Namespace) -> None:
    from dpal.methods.budget import plan_budget

    rows, best = plan_budget(
        a.run_dir,
        epsilon_limit=a.epsilon_limit,
        epsilon_pca=a.epsilon_pca,
        epsilon_support=a.epsilon_support,
    )
    print(
        f"NearPrivate with ε_pca = {a.epsilon_pca}, ε_support = {a.epsilon_support} under "
        f"ε_limit = {a.epsilon_limit} (PLD composition; naive sum beside it):"
    )
    print("  epoch   ε_dp    ε_total  naive   test acc  fits")
    for r in rows:
        print(
            f"  {r.epoch:>5}  {r.epsilon_dp:6.3f}  {r.epsilon_total:7.3f}  "
            f"{r.epsilon_naive:6.3f}  {r.test_accuracy:8.4f}  {'yes' if r.fits else 'no'}"
        )
    if best is None:
        raise DpalError("no checkpoint fits; raise --epsilon-limit or lower ε_pca/ε_support.")
    print(
        f"recommended: {best.path} (epoch {best.epoch}, ε_total {best.epsilon_total:.3f}); "
        "valid as long as the run's later checkpoints are not released."
    )


def cmd_run(a: argparse.Namespace) -> None:
    from dpal.methods.experiment import QUICK, ExperimentConfig, markdown_table, run_experiment

    config = QUICK if a.quick else ExperimentConfig()
    config = replace(config, seeds=a.seeds, label_polluted_as=a.label_polluted_as)
    if a.experiment == "mnist-polluted":
        config = replace(config, dataset="mnist-polluted")
    config = _noise_from_seed(config, a)
    out = a.out or f"runs/{a.experiment}{'-quick' if a.quick else ''}"
    rows = run_experiment(config, out, data_dir=a.data_dir)

    print(markdown_table(rows))
    print(f"results, table and figure in {out}/")


def cmd_reproduce(a: argparse.Namespace) -> None:
    from dpal.reproduce.configs import FULL, QUICK, with_seeds
    from dpal.reproduce.figures import reproduce

    out = a.out or f"runs/reproduce{'-quick' if a.quick else ''}"
    # "all": the figures of the offline MNIST protocols; fig2 needs SVHN's files
    figures = ["fig1", "fig3", "fig4", "fig5"] if a.figure == "all" else [a.figure]
    for figure in figures:
        config = (QUICK if a.quick else FULL)[figure]
        if a.seeds is not None:
            config = with_seeds(config, a.seeds)
        config = _noise_from_seed(config, a)
        reproduce(figure, config, out, data_dir=a.data_dir, plot_only=a.plot_only)
        print(f"{figure}: table, cells and figures in {out}/{figure}/")


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


def cmd_randp_generate(a: argparse.Namespace) -> None:
    from dpal.data.random_process import sample, save_grid

    images = sample(a.kind, a.n, size=a.size, channels=a.channels, seed=a.seed)
    save_grid(images, a.out)
    print(f"{a.n} {a.kind} images ({a.size}×{a.size}×{a.channels}) → {a.out}")


def cmd_randp_run(a: argparse.Namespace) -> None:
    from dpal.randp.run import RECIPES, RandpConfig, run_randp

    recipe = RECIPES[a.recipe]
    train = None  # None: the recipe's
    if a.standardize_features is not None:
        train = replace(recipe.train, standardize_features=a.standardize_features)
    if a.deterministic_noise:
        train = replace(train or recipe.train, deterministic_noise=True)
    prior = None
    if a.prior_steps is not None:
        prior = replace(recipe.prior, steps=a.prior_steps)
    config = RandpConfig(
        prior=prior,
        train=train,
        dataset=a.dataset,
        epsilons=tuple(a.epsilon),
        recipe=a.recipe,
        seeds=a.seeds,
        first_seed=a.first_seed,
        arms=tuple(a.arms),
    )
    out = a.out or f"runs/randp-{a.dataset}-{a.recipe}"
    rows = run_randp(config, out, data_dir=a.data_dir, device=a.device)
    from dpal.randp.run import randp_table

    print(randp_table(rows))
    print(f"cells, table and figure in {out}/")


def cmd_adamix_run(a: argparse.Namespace) -> None:
    from dpal.methods.adamix import AdamixConfig, adamix_table, run_adamix

    defaults = AdamixConfig()
    config = AdamixConfig(
        dataset=a.dataset,
        public_per_class=a.public_per_class,
        epsilons=tuple(a.epsilon),
        seeds=a.seeds,
        first_seed=a.first_seed,
        projection_rank=a.projection_rank,
        clip_quantile=a.clip_quantile,
        train=replace(
            defaults.train,
            **({"epochs": a.epochs} if a.epochs else {}),
            **({"lr": a.lr} if a.lr else {}),
            deterministic_noise=a.deterministic_noise,
        ),
    )
    out = a.out or f"runs/adamix-{a.dataset}-k{a.public_per_class}"
    rows = run_adamix(config, out, data_dir=a.data_dir)
    print(adamix_table(rows))
    print(f"cells, table and figure in {out}/")


def cmd_report(a: argparse.Namespace) -> None:
    from dpal.report import write_report

    md, page = write_report(a.run_dir, data_dir=a.data_dir)
    print(f"report: {md}\n        {page} (self-contained; open it in a browser)")


def _selection_args(p: argparse.ArgumentParser) -> None:
    from dpal.selection.strategies import STRATEGIES

    p.add_argument("--strategy", required=True, choices=STRATEGIES)
    p.add_argument("--n-labeled", type=int, required=True, help="labels to buy")
    p.add_argument("--k", type=int, help="uncertain candidates (default n_labeled + 2000)")
    p.add_argument("--n-each", type=int, default=10, help="diverse-public: points per cluster")
    p.add_argument("--n-components", type=int, default=16, help="PCA components p")
    p.add_argument("--score", default="margin", choices=("margin", "entropy"))
    p.add_argument("--epsilon-pca", type=float, default=0.4, help="near-private: DP-PCA ε")
    p.add_argument("--epsilon-support", type=float, default=0.6, help="near-private: counts ε")
    p.add_argument("--private-selection", default="threshold", choices=("threshold", "top-k"))
    p.add_argument("--seed", type=int, default=0)
    _add_deterministic_noise(p)


def _add_deterministic_noise(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--deterministic-noise",
        action="store_true",
        help="noise from the seed, not OS entropy: bit-reproducible, but anyone who knows the "
        "seed can undo the noise (experiments only; recorded in the ledger)",
    )


def _noise_from_seed(config: Any, a: argparse.Namespace) -> Any:
    """``config`` whose DP training (and NearPrivate) draws noise from the seed, if asked."""
    if not a.deterministic_noise:
        return config
    return replace(config, train=replace(config.train, deterministic_noise=True))


def _finetune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ft-epochs", type=int, default=200)
    p.add_argument("--ft-batch-size", type=int, default=256)
    p.add_argument("--ft-lr", type=float, default=0.1)
    p.add_argument("--ft-momentum", type=float, default=0.0)
    p.add_argument("--ft-augment", default="shift", choices=("none", "shift"))
    p.add_argument("--ft-lr-schedule", default="cosine", choices=("constant", "cosine"))
    p.add_argument(
        "--ft-distill",
        type=float,
        default=0.0,
        help="weight of distillation from the DP model on the unlabelled pool",
    )


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
    do = dsub.add_parser("overlap", help="public images that duplicate private ones")
    do.add_argument("task")
    do.add_argument("--threshold", type=float, default=8.0, help="RMS pixel difference (0–255)")
    _add_data_dir(do)
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
    _add_deterministic_noise(p)
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

    p = sub.add_parser("select", help="choose public points to label (writes OUT/selection.json)")
    p.add_argument("checkpoint")
    _selection_args(p)
    p.add_argument("--out", required=True)
    _add_data_dir(p)
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("label", help="export selected images for people to label; import labels")
    lsub = p.add_subparsers(dest="label_cmd", required=True)
    le = lsub.add_parser("export", help="PNGs, manifest.csv and a Label Studio import")
    le.add_argument("selection_dir")
    _add_data_dir(le)
    li = lsub.add_parser("import", help="labels from a CSV (id,label) or a Label Studio export")
    li.add_argument("selection_dir")
    li.add_argument("labels_file")
    li.add_argument("--allow-missing", action="store_true")
    _add_data_dir(li)
    p.set_defaults(func=cmd_label)

    p = sub.add_parser("finetune", help="fine-tune on imported labels (public: no ε cost)")
    p.add_argument("selection_dir")
    _finetune_args(p)
    p.add_argument("--seed", type=int, default=0)
    _add_data_dir(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("improve", help="select + label (oracle: the pool's labels) + fine-tune")
    p.add_argument("checkpoint")
    _selection_args(p)
    _finetune_args(p)
    p.add_argument("--out", required=True)
    _add_data_dir(p)
    p.set_defaults(func=cmd_improve)

    p = sub.add_parser("budget", help="which checkpoint leaves room for NearPrivate")
    p.add_argument("run_dir")
    p.add_argument("--epsilon-limit", type=float, required=True)
    p.add_argument("--epsilon-pca", type=float, default=0.4)
    p.add_argument("--epsilon-support", type=float, default=0.6)
    p.set_defaults(func=cmd_budget)

    p = sub.add_parser("run", help="a whole experiment: DP baseline, every method, table, plot")
    p.add_argument("experiment", choices=("mnist", "mnist-polluted"))
    p.add_argument(
        "--label-polluted-as",
        type=int,
        default=None,
        help="mnist-polluted: the annotator gives non-digits this class (harsher) "
        "instead of rejecting them",
    )
    p.add_argument("--quick", action="store_true", help="a small version (a few minutes)")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--out")
    _add_data_dir(p)
    _add_deterministic_noise(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "reproduce",
        help="the paper's figures (1, 2 SVHN, 3 pollution, 4 ablations, 5 budgets), resumable",
    )
    p.add_argument(
        "figure",
        choices=("fig1", "fig2", "fig3", "fig4", "fig5", "all"),
        help="fig2 is the SVHN path (needs SVHN); all = fig1, fig3, fig4, fig5 (MNIST)",
    )
    p.add_argument("--quick", action="store_true", help="a small version of the same shape")
    p.add_argument("--seeds", type=int, help="seeds (default 1; ≥ 3 for error bars)")
    p.add_argument("--out", help="default runs/reproduce[-quick]; DP models shared in OUT/dp")
    p.add_argument(
        "--plot-only",
        action="store_true",
        help="redraw tables and figures from the finished cells, training nothing",
    )
    _add_data_dir(p)
    _add_deterministic_noise(p)
    p.set_defaults(func=cmd_reproduce)

    adamix = sub.add_parser(
        "adamix", help="AdaMix: few-shot public model, then adaptive private fine-tuning"
    ).add_subparsers(dest="adamix_command", required=True)
    p = adamix.add_parser("run", help="AdaMix, its ablations and baselines at each ε")
    p.add_argument("--dataset", default="mnist-offline")
    p.add_argument("--public-per-class", type=int, default=10)
    p.add_argument("--epsilon", type=float, nargs="+", default=[1.0, 3.0, 8.0])
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument(
        "--first-seed", type=int, default=0, help="run seeds FIRST … FIRST+SEEDS−1 (default 0)"
    )
    p.add_argument(
        "--projection-rank", type=int, default=16, help="k: dimension of the public subspace"
    )
    p.add_argument(
        "--clip-quantile",
        type=float,
        default=0.5,
        help="the clip threshold: this quantile of the public projected gradient norms",
    )
    p.add_argument("--epochs", type=int, help="epochs of private fine-tuning (default 5)")
    p.add_argument("--lr", type=float, help="learning rate of every fine-tuning arm (default 4)")
    p.add_argument("--out")
    _add_data_dir(p)
    _add_deterministic_noise(p)
    p.set_defaults(func=cmd_adamix_run)

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
    _add_data_dir(p)
    p.set_defaults(func=cmd_pretrain)

    randp = sub.add_parser(
        "randp", help="DP-RandP: priors from random-process images"
    ).add_subparsers(dest="randp_command", required=True)
    p = randp.add_parser("generate", help="a PNG grid of random-process images, to look at")
    p.add_argument(
        "--kind", default="mixture", help="dead-leaves, spectrum, stylegan-random, mixture"
    )
    p.add_argument("--n", type=int, default=96)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3, choices=(1, 3))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="randp_samples.png")
    p.set_defaults(func=cmd_randp_generate)
    p = randp.add_parser(
        "run", help="prior from random processes, DP linear probe, DP fine-tuning; baselines"
    )
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--epsilon", type=float, nargs="+", default=[1.0, 3.0, 8.0])
    p.add_argument("--recipe", default="cpu", choices=("cpu", "full"))
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument(
        "--first-seed", type=int, default=0, help="run seeds FIRST … FIRST+SEEDS−1 (default 0)"
    )
    p.add_argument(
        "--arms",
        nargs="+",
        default=["dp-randp", "dp-scratch", "non-private"],
        choices=("dp-randp", "dp-scratch", "non-private"),
    )
    p.add_argument(
        "--prior-steps", type=int, help="Phase I steps (default: the recipe's: cpu 2,000)"
    )
    p.add_argument(
        "--standardize-features",
        action=argparse.BooleanOptionalAction,
        help="every arm: centre and scale the head's input with statistics of random-process "
        "images (free in privacy); default: the recipe's choice (cpu: on, full: off)",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (the full recipe wants a GPU)")
    p.add_argument("--out")
    _add_data_dir(p)
    _add_deterministic_noise(p)
    p.set_defaults(func=cmd_randp_run)

    p = sub.add_parser("report", help="a markdown + HTML report of a run for a privacy reviewer")
    p.add_argument("run_dir", help="a dpal train / improve / run / reproduce figure folder")
    _add_data_dir(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("ledger", help="a run's privacy ledger and its total ε")
    p.add_argument("run_dir")
    p.add_argument("--delta", type=float, help="default: the run's own δ (else 1e-5)")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--rebuild",
        action="store_true",
        help="write the ledger anew from the lineage its checkpoints carry (the damaged file is "
        "kept as ledger.json.damaged-N); over-counts, never under-counts",
    )
    p.set_defaults(func=cmd_ledger)
    return parser


def _one_line_warnings(show: Any) -> Any:
    """``warnings.showwarning`` that prints dpal's warnings as one line, others as Python does."""

    def showwarning(message: Any, category: Any, *rest: Any) -> None:
        if issubclass(category, DpalWarning):
            print(f"dpal: warning: {message}", file=sys.stderr)
        else:
            show(message, category, *rest)

    return showwarning


def main(argv: list[str] | None = None) -> int:
    import warnings

    args = build_parser().parse_args(argv)
    show = warnings.showwarning
    warnings.showwarning = _one_line_warnings(show)
    try:
        args.func(args)
    except DpalError as err:
        print(f"dpal: error: {err}", file=sys.stderr)
        return 2
    except PermissionError as err:
        print(f"dpal: error: {err.filename}: permission denied; choose a writable path.",
              file=sys.stderr)  # fmt: skip
        return 2
    except KeyboardInterrupt:
        print("dpal: interrupted; checkpoints and the ledger so far are kept.", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = show
    return 0


if __name__ == "__main__":
    sys.exit(main())
