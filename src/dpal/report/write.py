"""``dpal report RUN_DIR``: one self-contained document for a privacy reviewer.

It reads only what a run saved — ledgers, results, selections, figures — and writes
``RUN_DIR/report/report.md`` (with its images beside it) and ``report.html`` (images embedded,
no outside files). Three kinds of run folder are understood:

- a training run (``dpal train``): its ledger, and test accuracy against ε per checkpoint;
- an improvement (``dpal improve`` / ``select`` + ``finetune``): its ledger (the DP model's
  lineage and the selection's mechanisms), the accuracy before and after, the bought examples;
- an experiment (``dpal run`` or one figure of ``dpal reproduce``): the accuracy table, the
  figures, the ledger of one representative cell per method (every cell's totals are in the
  table), and the examples bought by the most accurate of them.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from dpal.core.errors import DpalError
from dpal.report.document import Doc
from dpal.report.privacy import audit_section, ledger_section
from dpal.report.results import _experiment, _improvement


def write_report(run_dir: str | Path, *, data_dir: str | None = None) -> tuple[Path, Path]:
    """Write ``RUN_DIR/report/report.md`` and ``report.html``; return their paths."""
    from dpal.runs.cells import provenance

    run = Path(run_dir)
    if not run.is_dir():
        raise DpalError(f"{run} is not a folder; give the --out folder of a dpal run.")
    out = run / "report"
    out.mkdir(exist_ok=True)
    doc = Doc()
    doc.h(1, f"dpal report: {run.resolve().name}")
    prov = provenance()
    doc.p(
        f"Folder `{run}`, report written {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by dpal "
        f"{prov['dpal_version']} (commit `{prov['git_commit'] or 'unknown'}`). Adjacency: "
        "add/remove one example. Every ε below is computed by `dp_accounting` from the ledger, "
        "which records each mechanism that read private data as it was run."
    )
    if (run / "selection.json").exists() and (run / "ledger.json").exists():
        _improvement(doc, run, out, data_dir)
    elif (run / "run.json").exists() and (
        (run / "ledger.json").exists() or (run / "checkpoints").is_dir()
    ):
        _training(doc, run, out)
    elif (run / "results.json").exists():
        _experiment(doc, run, out, data_dir)
    else:
        raise DpalError(
            f"{run} holds no dpal run: expected the folder of `dpal train`, `dpal improve`, "
            "`dpal run` or one figure of `dpal reproduce` (e.g. runs/reproduce/fig3)."
        )
    audit_section(doc, run)
    md, page = out / "report.md", out / "report.html"
    md.write_text(doc.markdown())
    page.write_text(doc.html(f"dpal report: {run.resolve().name}"))
    return md, page


def _training(doc: Doc, run: Path, out: Path) -> None:
    from dpal.training.checkpoint import list_checkpoints

    info = json.loads((run / "run.json").read_text())
    config = info["config"]
    doc.h(2, "What was trained")
    doc.p(
        f"A `{config['model']}` trained with DP-SGD on `{info['dataset']}` "
        f"({info['n_private']} private examples), Poisson sampling q = {info['sample_rate']:.4g}, "
        f"noise multiplier σ = {info['noise_multiplier']}, clip norm {config['clip']}. "
        "Hyper-parameter choices are not privacy-accounted."
    )
    doc.h(2, "Privacy")
    ledger_section(doc, run / "ledger.json", config["delta"], "Ledger of the run")
    checkpoints = list_checkpoints(run)
    doc.h(2, "Accuracy")
    doc.table(
        ["epoch", "steps", "ε (PLD)", "test accuracy"],
        [
            [c["epoch"], c["steps"], f"{c['epsilon']:.3f}", f"{100 * c['test_accuracy']:.2f}%"]
            for c in checkpoints
        ],
    )
    doc.p(
        "Each checkpoint's ε covers the steps up to it; releasing a later one spends more. The "
        "test set is public (never a statistic of the private data)."
    )
    if checkpoints:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.6, 3.6))
        ax.plot(
            [c["epsilon"] for c in checkpoints],
            [100 * c["test_accuracy"] for c in checkpoints],
            marker=".",
        )
        ax.set_xlabel("ε (PLD) of the checkpoint")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "accuracy_vs_epsilon.png", dpi=120)
        plt.close(fig)
        doc.image(out / "accuracy_vs_epsilon.png", "test accuracy against ε, per checkpoint")
