"""The report's privacy section: a ledger's entries, its totals and what each mechanism read."""

from __future__ import annotations

from pathlib import Path

from dpal.privacy.ledger import Entry, Ledger
from dpal.report.document import Doc
from dpal.training.lineage import open_checked


def ledger_section(doc: Doc, ledger_path: Path, delta: float, title: str) -> None:
    run = ledger_path.parent
    # a training run's ledger is checked against its checkpoints' lineage: never under-counted
    checked = (run / "checkpoints").is_dir() or (run / "selection.json").exists()
    ledger = open_checked(run) if checked else Ledger(ledger_path)
    totals = ledger.totals(delta=delta)
    doc.h(3, title)
    groups: list[tuple[Entry, int, int]] = []  # (first entry, count, steps) of runs of alike
    for e in ledger.entries:
        last = groups[-1][0] if groups else None
        if (
            last is not None
            and e.kind == "dpsgd"
            and last.kind == "dpsgd"
            and e.status == last.status
            and e.mechanism == last.mechanism
            and {k: v for k, v in e.params.items() if k != "steps"}
            == {k: v for k, v in last.params.items() if k != "steps"}
        ):
            first, n, steps = groups[-1]
            groups[-1] = (first, n + 1, steps + int(e.params["steps"]))
        else:
            groups.append((e, 1, int(e.params.get("steps", 0))))
    rows = []
    for first, n, steps in groups:
        params = {k: v for k, v in first.params.items() if k != "steps"}
        shown = ", ".join(f"{k} = {v:.6g}" for k, v in params.items())
        if first.kind == "dpsgd":
            shown += f", steps = {steps}"
        rows.append(
            [
                f"{n} entr{'ies' if n > 1 else 'y'}",
                first.mechanism,
                first.kind,
                shown,
                first.status,
                first.note + (f" … ({n} alike)" if n > 1 else ""),
            ]
        )
    doc.table(["entries", "mechanism", "kind", "parameters", "status", "note"], rows)
    doc.p(
        f"**Total at δ = {delta:g}: ε = {totals.epsilon_pld:.4f} (PLD, tight)**, "
        f"{totals.epsilon_rdp:.4f} (RDP); naive sum {totals.epsilon_naive:.4f} "
        f"(each of {len(totals.per_mechanism)} mechanism(s) alone at δ/"
        f"{max(1, len(totals.per_mechanism))}: "
        + ", ".join(f"{m} {eps:.3f}" for m, eps in totals.per_mechanism.items())
        + "). Pending entries count (a crash may have released them); void ones do not."
    )
    every = [
        [
            e.id,
            e.mechanism,
            e.kind,
            ", ".join(f"{k}={v:.6g}" for k, v in e.params.items()),
            e.status,
            e.output,
            e.created,
        ]
        for e in ledger.entries
    ]
    doc.table(
        ["id", "mechanism", "kind", "parameters", "status", "output", "recorded"],
        every,
        folded=f"every ledger event ({len(every)}), as recorded in {ledger_path}",
    )


def audit_section(doc: Doc, run: Path) -> None:
    """``dpal audit`` results saved under ``RUN/audit/*/audit.json``, beside the claimed ε."""
    import json

    found = sorted((run / "audit").glob("*/audit.json"))
    if not found:
        return
    doc.h(2, "Empirical privacy audit (not part of the released model)")
    rows = []
    for path in found:
        a = json.loads(path.read_text())
        verdict = "≤ claim" if a["epsilon_lower"] <= a["claimed_epsilon"] + 1e-9 else "ABOVE CLAIM"
        rows.append([a["mechanism"], a["method"], f"{a['claimed_epsilon']:.3f}",
                     f"{a['epsilon_lower']:.3f}", f"{100 * a['confidence']:g}%", f"{a['delta']:g}",
                     verdict])  # fmt: skip
    doc.table(
        ["mechanism", "method", "claimed ε", "audit lower bound", "confidence", "δ", ""], rows
    )
    doc.p(
        "An audit lower bound is what an attack demonstrates; the claimed ε is what the "
        "accountant proves. A bound below the claim is consistent with it (not a proof); one "
        "above it would mean the mechanism that ran is not the one accounted. The audits run on "
        "synthetic canaries and read no private data, so they cost no ε."
    )
