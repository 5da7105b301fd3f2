"""Active learning by hand: ``dpal select``, ``label``, ``finetune``, ``improve``, ``budget``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from dpal.cli.common import add_data_dir, add_deterministic_noise
from dpal.core.errors import DpalError


def cmd_select(a: argparse.Namespace) -> None:
    from dpal.methods.active_learning.improve import select_to_dir

    picked = select_to_dir(
        a.checkpoint, a.out, _select_config(a), data_dir=a.data_dir, guard=_guard(a)
    )
    print(
        f"selected {len(picked)} public points ({a.strategy}; the guard's random share "
        f"{a.validation_fraction:g}) → {a.out}/selection.json"
    )
    from dpal.cli.privacy import cmd_ledger

    cmd_ledger(argparse.Namespace(run_dir=a.out, delta=None, json=False, rebuild=False))


def cmd_label(a: argparse.Namespace) -> None:
    from dpal.data.tasks import load_task
    from dpal.labeling.files import export_for_labeling, import_labels
    from dpal.methods.active_learning.improve import read_selection

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
    from dpal.core.atomic import atomic_write_text

    atomic_write_text(
        Path(a.selection_dir) / "labels.json", json.dumps({str(k): v for k, v in labels.items()})
    )
    rejected = sum(v < 0 for v in labels.values())
    print(f"imported {len(labels)} labels ({rejected} rejected) → {a.selection_dir}/labels.json")


def cmd_finetune(a: argparse.Namespace) -> None:
    from dpal.methods.active_learning.improve import finetune_dir

    path = Path(a.selection_dir) / "labels.json"
    if not path.exists():
        raise DpalError(f"{path}: no labels yet; run `dpal label import` first.")
    labels = {int(k): int(v) for k, v in json.loads(path.read_text()).items()}
    _print_result(finetune_dir(a.selection_dir, labels, _finetune_config(a), data_dir=a.data_dir))


def cmd_improve(a: argparse.Namespace) -> None:
    from dpal.methods.active_learning.improve import improve

    _print_result(
        improve(
            a.checkpoint,
            a.out,
            _select_config(a),
            _finetune_config(a),
            data_dir=a.data_dir,
            guard=_guard(a),
        )
    )


def cmd_budget(a: argparse.Namespace) -> None:
    from dpal.methods.active_learning.budget import plan_budget
    from dpal.selection.near_private import NearPrivateConfig

    config = NearPrivateConfig(
        k=1,
        epsilon_pca=a.epsilon_pca,
        epsilon_density=a.epsilon_density,
        epsilon_support=a.epsilon_support,
        pool_filter=a.pool_filter,
    )
    rows, best = plan_budget(a.run_dir, epsilon_limit=a.epsilon_limit, near_private=config)
    first = "ε_density" if a.pool_filter == "density" else "ε_pca"
    print(
        f"NearPrivate ({a.pool_filter} filter) with {first} = {config.epsilon_first}, ε_support = "
        f"{a.epsilon_support} under ε_limit = {a.epsilon_limit} (PLD composition; naive sum "
        "beside it):"
    )
    print("  epoch   ε_dp    ε_total  naive   test acc  fits")
    for r in rows:
        print(
            f"  {r.epoch:>5}  {r.epsilon_dp:6.3f}  {r.epsilon_total:7.3f}  "
            f"{r.epsilon_naive:6.3f}  {r.test_accuracy:8.4f}  {'yes' if r.fits else 'no'}"
        )
    if best is None:
        raise DpalError(f"no checkpoint fits; raise --epsilon-limit or lower {first}/ε_support.")
    print(
        f"recommended: {best.path} (epoch {best.epoch}, ε_total {best.epsilon_total:.3f}); "
        "valid as long as the run's later checkpoints are not released."
    )


def _select_config(a: argparse.Namespace) -> Any:
    from dpal.methods.active_learning.improve import SelectConfig

    return SelectConfig(
        strategy=a.strategy,
        n_labeled=a.n_labeled,
        k=a.k,
        n_each=a.n_each,
        n_components=a.n_components,
        score=a.score,
        epsilon_pca=a.epsilon_pca,
        epsilon_density=a.epsilon_density,
        epsilon_support=a.epsilon_support,
        private_selection=a.private_selection,
        pool_filter=a.pool_filter,
        seed=a.seed,
        deterministic_noise=a.deterministic_noise,
        secure_noise=a.secure_noise,
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


def _guard(a: argparse.Namespace) -> Any:
    from dpal.methods.active_learning.guard import GuardConfig

    return GuardConfig(validation_fraction=a.validation_fraction, seed=a.seed)


def _print_result(r: Any) -> None:
    guard = (
        f"; the guard kept the {r.kept} model ({100 * r.validation_start:.1f}% start vs "
        f"{100 * r.validation_tuned:.1f}% fine-tuned on {r.n_validation} held-out bought labels)"
        if r.n_validation
        else ""
    )
    print(
        f"test accuracy {r.start_accuracy:.4f} → {r.test_accuracy:.4f} with {r.n_labeled} "
        f"labels ({r.n_rejected} rejected){guard}; ε_dp = {r.epsilon_dp:.3f}, ε_total = "
        f"{r.epsilon_total:.3f} (PLD; RDP {r.epsilon_rdp:.3f}, naive sum {r.epsilon_naive:.3f})"
        f" → {r.out_dir}"
    )


def _selection_args(p: argparse.ArgumentParser) -> None:
    from dpal.selection.strategies import STRATEGIES

    p.add_argument("--strategy", required=True, choices=STRATEGIES)
    p.add_argument("--n-labeled", type=int, required=True, help="labels to buy")
    p.add_argument("--k", type=int, help="uncertain candidates (default n_labeled + 2000)")
    p.add_argument("--n-each", type=int, default=10, help="diverse-public: points per cluster")
    p.add_argument("--n-components", type=int, default=16, help="PCA components p")
    p.add_argument("--score", default="margin", choices=("margin", "entropy"))
    _near_private_budget_args(p)
    p.add_argument("--private-selection", default="threshold", choices=("threshold", "top-k"))
    p.add_argument(
        "--validation-fraction",
        type=float,
        default=0.2,
        help="share of the labels the guard buys at random to compare the fine-tuned with the "
        "DP model; the better is shipped (0: no guard)",
    )
    p.add_argument("--seed", type=int, default=0)
    add_deterministic_noise(p)


def _near_private_budget_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--pool-filter",
        default="density",
        choices=("density", "none"),
        help="near-private: density = private support over the whole pool first (default); "
        "none = the paper's Algorithm 2 (DP-PCA, candidates by public uncertainty only)",
    )
    p.add_argument(
        "--epsilon-density", type=float, default=0.4, help="near-private: histogram ε (density)"
    )
    p.add_argument(
        "--epsilon-pca", type=float, default=0.4, help="near-private: DP-PCA ε (--pool-filter none)"
    )
    p.add_argument("--epsilon-support", type=float, default=0.6, help="near-private: counts ε")


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


def register(sub: Any) -> None:
    p = sub.add_parser("select", help="choose public points to label (writes OUT/selection.json)")
    p.add_argument("checkpoint")
    _selection_args(p)
    p.add_argument("--out", required=True)
    add_data_dir(p)
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("label", help="export selected images for people to label; import labels")
    lsub = p.add_subparsers(dest="label_cmd", required=True)
    le = lsub.add_parser("export", help="PNGs, manifest.csv and a Label Studio import")
    le.add_argument("selection_dir")
    add_data_dir(le)
    li = lsub.add_parser("import", help="labels from a CSV (id,label) or a Label Studio export")
    li.add_argument("selection_dir")
    li.add_argument("labels_file")
    li.add_argument("--allow-missing", action="store_true")
    add_data_dir(li)
    p.set_defaults(func=cmd_label)

    p = sub.add_parser("finetune", help="fine-tune on imported labels (public: no ε cost)")
    p.add_argument("selection_dir")
    _finetune_args(p)
    p.add_argument("--seed", type=int, default=0)
    add_data_dir(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("improve", help="select + label (oracle: the pool's labels) + fine-tune")
    p.add_argument("checkpoint")
    _selection_args(p)
    _finetune_args(p)
    p.add_argument("--out", required=True)
    add_data_dir(p)
    p.set_defaults(func=cmd_improve)

    p = sub.add_parser("budget", help="which checkpoint leaves room for NearPrivate")
    p.add_argument("run_dir")
    p.add_argument("--epsilon-limit", type=float, required=True)
    _near_private_budget_args(p)
    p.set_defaults(func=cmd_budget)
