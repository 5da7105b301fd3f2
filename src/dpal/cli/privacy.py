"""``dpal account`` (ε of a schedule), ``dpal calibrate`` (σ for an ε), ``dpal ledger``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from dpal.core.errors import DpalError


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


def register(sub: Any) -> None:
    from dpal.privacy.accounting import ACCOUNTANTS

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
