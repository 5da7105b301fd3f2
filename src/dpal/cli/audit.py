"""``dpal audit dpsgd RUN_DIR`` and ``dpal audit near-private``: empirical lower bounds on ε
beside the accountant's claim (``dpal.audit``); results in ``RUN_DIR/audit/*/audit.json``,
which ``dpal report RUN_DIR`` shows."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from dpal.core.errors import DpalError


def _print(report: dict[str, Any], out: Path) -> None:
    above = report["epsilon_lower"] > report["claimed_epsilon"] + 1e-9
    print(
        f"{report['mechanism']}: audit lower bound ε ≥ {report['epsilon_lower']:.3f} at "
        f"{100 * report['confidence']:g}% confidence (δ = {report['delta']:g}; "
        f"{report['method']}); claimed ε = {report['claimed_epsilon']:.3f}"
        + ("  — ABOVE THE CLAIM: the mechanism that ran is not the one accounted" if above else "")
    )
    print(f"audit runs in {out}/ (synthetic data only: not part of any release)")
    if above:
        raise DpalError("the audit found more privacy loss than the accountant claims; report it.")


def cmd_audit_dpsgd(a: argparse.Namespace) -> None:
    from dpal.audit.dpsgd import DpsgdAuditConfig, audit_dpsgd

    config = DpsgdAuditConfig.from_run(
        Path(a.run_dir), canaries=a.canaries, epochs=a.epochs, confidence=a.confidence,
        seed=a.seed, dataset_size=a.dataset_size,
    )  # fmt: skip
    out = Path(a.out) if a.out else Path(a.run_dir) / "audit" / "dpsgd"
    _print(audit_dpsgd(config, out), out)


def cmd_audit_near_private(a: argparse.Namespace) -> None:
    from dpal.audit.near_private import NearPrivateAuditConfig, audit_near_private

    values: dict[str, Any] = {}
    if a.run_dir:
        path = Path(a.run_dir) / "selection.json"
        if not path.exists():
            raise DpalError(f"{a.run_dir} has no selection.json: give a `dpal select` folder.")
        sel = json.loads(path.read_text())["config"]
        if sel.get("strategy") != "near-private" or sel.get("pool_filter", "density") != "density":
            raise DpalError(
                f"{a.run_dir} is not a NearPrivate selection with the density filter (the "
                "default), the configuration this audit attacks."
            )
        values = {k: sel[k] for k in ("epsilon_density", "epsilon_support", "private_selection")}
        values["secure_noise"] = sel.get("secure_noise", False)
    for key in ("epsilon_density", "epsilon_support", "private_selection"):
        if getattr(a, key) is not None:
            values[key] = getattr(a, key)
    if a.secure_noise:
        values["secure_noise"] = True
    config = NearPrivateAuditConfig(**values, trials=a.trials, confidence=a.confidence, seed=a.seed)
    if a.out:
        out = Path(a.out)
    elif a.run_dir:
        out = Path(a.run_dir) / "audit" / "near-private"
    else:
        raise DpalError("give --run SELECT_DIR (its configuration is audited) or --out DIR.")
    _print(audit_near_private(config, out), out)


def register(sub: Any) -> None:
    p = sub.add_parser("audit", help="empirical lower bounds on ε beside the claimed ε")
    kinds = p.add_subparsers(dest="audit", required=True)
    d = kinds.add_parser("dpsgd", help="one-run canary audit of a `dpal train` run's DP-SGD")
    d.add_argument("run_dir", help="a `dpal train` folder: its σ, q, steps, clip and noise mode")
    d.add_argument("--canaries", type=int, default=1000)
    d.add_argument("--epochs", type=int, help="audit fewer epochs (the claim is recomputed)")
    d.add_argument("--dataset-size", type=int, help="blank-filled set size (default: the run's N)")
    d.add_argument("--out", help="default: RUN_DIR/audit/dpsgd")
    d.set_defaults(func=cmd_audit_dpsgd)
    n = kinds.add_parser("near-private", help="NearPrivate on neighbouring private sets")
    n.add_argument("--run", dest="run_dir", help="a `dpal select` folder whose ε's to audit")
    n.add_argument("--epsilon-density", type=float)
    n.add_argument("--epsilon-support", type=float)
    n.add_argument("--private-selection", choices=("threshold", "top-k"))
    n.add_argument("--secure-noise", action="store_true", help="audit the --secure-noise mode")
    n.add_argument("--trials", type=int, default=4000, help="runs on each neighbouring set")
    n.add_argument("--out", help="default: RUN/audit/near-private")
    n.set_defaults(func=cmd_audit_near_private)
    for q in (d, n):
        q.add_argument("--confidence", type=float, default=0.95)
        q.add_argument("--seed", type=int, default=0, help="the canaries / synthetic sets")
