"""Rows for docs/results/secure_noise_i18.json from `dpal train` run folders and their audits,
or for docs/results/audit_i18.json from `dpal audit` outputs (arguments ending in audit.json).

    python scripts/secure_noise_results.py OUT.json RUN_DIR [RUN_DIR ...]
    python scripts/secure_noise_results.py OUT.json AUDIT_DIR/audit.json [...]

Each row: the run's dataset, model, noise mode (from its ledger), seed, ε (the last checkpoint's,
PLD), test accuracy of the last checkpoint, wall seconds; and, where `dpal audit dpsgd` ran in
RUN_DIR/audit/dpsgd, the audit's lower bound, confidence and canaries.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def row(run: Path) -> dict[str, object]:
    info = json.loads((run / "run.json").read_text())
    last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    ledger = json.loads((run / "ledger.json").read_text())
    modes = sorted({e.get("noise", "") for e in ledger["entries"] if e["kind"] == "dpsgd"})
    out: dict[str, object] = {
        "dataset": info["dataset"], "model": info["config"]["model"],
        "noise": "secure" if info["config"].get("secure_noise") else "default",
        "noise_source": modes, "seed": info["config"]["seed"], "epochs": last["epoch"],
        "epsilon_total": last["epsilon"], "test_accuracy": last["test_accuracy"],
        "wall_seconds": last["wall_seconds"], "run": str(run),
    }  # fmt: skip
    audit = run / "audit" / "dpsgd" / "audit.json"
    if audit.exists():
        a = json.loads(audit.read_text())
        out.update(audit_epsilon_lower=a["epsilon_lower"], audit_confidence=a["confidence"],
                   audit_canaries=a["canaries"])  # fmt: skip
    return out


def audit_row(path: Path) -> dict[str, object]:
    a = json.loads(path.read_text())
    out = {k: a[k] for k in ("mechanism", "method", "claimed_epsilon", "epsilon_lower",
                             "confidence", "delta")}  # fmt: skip
    out["noise"] = "secure" if a["noise"].startswith("os-csprng") else "default"
    out.update({k: a[k] for k in ("canaries", "guesses", "correct", "noise_multiplier",
                                  "sample_rate", "steps") if k in a})  # fmt: skip
    if "events" in a:
        out["trials"] = a["config"]["trials"]
        out["events"] = a["events"]
    out["audit"] = str(path)
    return out


if __name__ == "__main__":
    paths = [Path(r) for r in sys.argv[2:]]
    if all(p.name == "audit.json" for p in paths):
        audits = [audit_row(p) for p in paths]
        Path(sys.argv[1]).write_text(json.dumps(audits, indent=1, ensure_ascii=False) + "\n")
        for r in audits:
            print(r["mechanism"], r["noise"], r["claimed_epsilon"], r["epsilon_lower"])
        raise SystemExit(0)
    rows = [row(p) for p in paths]
    Path(sys.argv[1]).write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
    for r in rows:
        print(r["noise"], r["seed"], f"{100 * float(r['test_accuracy']):.2f}", r["epsilon_total"])
