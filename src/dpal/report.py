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

import base64
import datetime as dt
import html
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dpal.errors import DpalError
from dpal.privacy.ledger import Entry, Ledger
from dpal.training.lineage import open_checked


@dataclass
class Doc:
    """Blocks rendered to both markdown and HTML: heading, text, table, image, details."""

    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", (level, text)))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, header: list[str], rows: list[list[Any]], *, folded: str = "") -> None:
        self.blocks.append(("table", (header, rows, folded)))

    def image(self, path: Path, caption: str) -> None:
        self.blocks.append(("img", (path, caption)))

    def markdown(self) -> str:
        out = []
        for kind, value in self.blocks:
            if kind == "h":
                out.append("#" * value[0] + " " + value[1])
            elif kind == "p":
                out.append(value)
            elif kind == "table":
                header, rows, folded = value
                lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
                if folded:
                    lines = [f"<details><summary>{folded}</summary>", "", *lines, "", "</details>"]
                out.append("\n".join(lines))
            else:
                path, caption = value
                out.append(f"![{caption}]({path.name})\n\n*{caption}*")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        body = []
        for kind, value in self.blocks:
            if kind == "h":
                body.append(f"<h{value[0]}>{html.escape(value[1])}</h{value[0]}>")
            elif kind == "p":
                body.append(f"<p>{_inline(value)}</p>")
            elif kind == "table":
                header, rows, folded = value
                t = "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
                for r in rows:
                    t += "<tr>" + "".join(f"<td>{_inline(str(c))}</td>" for c in r) + "</tr>"
                t += "</table>"
                if folded:
                    t = f"<details><summary>{html.escape(folded)}</summary>{t}</details>"
                body.append(t)
            else:
                path, caption = value
                data = base64.b64encode(path.read_bytes()).decode()
                body.append(
                    f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>"
                )
        style = (
            "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
            "line-height:1.45}table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
            "td,th{border:1px solid #bbb;padding:3px 8px;text-align:left}th{background:#eee}"
            "img{max-width:100%}figcaption{font-style:italic;color:#444}code{background:#f3f3f3}"
        )
        return (
            f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>'
            f"{html.escape(title)}</title><style>{style}</style></head><body>"
            + "\n".join(body)
            + "</body></html>\n"
        )


def _inline(text: str) -> str:
    """Markdown's `code` and **bold** in HTML; everything else escaped."""
    import re

    s = html.escape(text)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", s)


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
    md, page = out / "report.md", out / "report.html"
    md.write_text(doc.markdown())
    page.write_text(doc.html(f"dpal report: {run.resolve().name}"))
    return md, page


def _ledger_section(doc: Doc, ledger_path: Path, delta: float, title: str) -> None:
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
    _ledger_section(doc, run / "ledger.json", config["delta"], "Ledger of the run")
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


def _improvement(doc: Doc, run: Path, out: Path, data_dir: str | None) -> None:
    selection = json.loads((run / "selection.json").read_text())
    cfg = selection["config"]
    doc.h(2, "What was released")
    doc.p(
        f"The DP model `{selection['checkpoint']}` improved with `{selection['strategy']}`: "
        f"{len(selection['pool_indices'])} public pool images of `{selection['dataset']}` were "
        "selected for labelling, then the model was fine-tuned on them (public data: no "
        "privacy cost)."
        + (
            f" NearPrivate read the private data twice: DP-PCA (ε_pca = {cfg['epsilon_pca']}) "
            f"and Laplace support counts (ε_support = {cfg['epsilon_support']})."
            if selection["strategy"] == "near-private"
            else " The selection read only the public pool and the released model "
            "(post-processing)."
        )
    )
    doc.h(2, "Privacy")
    _ledger_section(doc, run / "ledger.json", float(cfg["delta"]), "Ledger of the released model")
    if (run / "result.json").exists():
        r = json.loads((run / "result.json").read_text())
        doc.h(2, "Accuracy")
        doc.table(
            ["model", "test accuracy", "ε_total (PLD)", "naive sum"],
            [
                [
                    "DP model (start)",
                    f"{100 * r['start_accuracy']:.2f}%",
                    f"{r['epsilon_dp']:.3f}",
                    f"{r['epsilon_dp']:.3f}",
                ],
                [
                    "after fine-tuning on the bought labels",
                    f"{100 * r['test_accuracy']:.2f}%",
                    f"{r['epsilon_total']:.3f}",
                    f"{r['epsilon_naive']:.3f}",
                ],
            ],
        )
        doc.p(
            f"Labels bought: {r['n_labeled']}, rejected by the annotator: {r['n_rejected']}"
            + (f", not of any class: {r['n_polluted']}." if "n_polluted" in r else ".")
        )
    _bought_grid(doc, run, out, selection, data_dir)


def _bought_grid(
    doc: Doc, cell: Path, out: Path, selection: dict[str, Any], data_dir: str | None
) -> None:
    from dpal.data.tasks import load_task

    try:
        task = load_task(selection["dataset"], data_dir=data_dir)
    except DpalError as err:
        doc.p(f"(The bought examples are not shown: {err})")
        return
    if task.public is None:
        return
    picked = np.asarray(selection["pool_indices"][:100], dtype=np.int64)
    valid = None if task.public_valid is None else task.public_valid[picked]
    path = out / f"bought_{cell.name}.png"
    _image_grid(task.public.x[picked], task.public.y[picked], valid, path)
    doc.h(2, "Bought examples")
    doc.image(
        path,
        f"the first {len(picked)} of {len(selection['pool_indices'])} pool images bought by "
        f"{selection['strategy']} ({cell.name}), with their labels; red: not of any class "
        "(rejected or mislabelled by the annotator)",
    )


def _image_grid(x: np.ndarray, y: np.ndarray, valid: np.ndarray | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(20, len(x))
    rows = int(np.ceil(len(x) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.6, rows * 0.72), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, ax in enumerate(axes.flat[: len(x)]):
        img = x[k]
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255)
        bad = valid is not None and not valid[k]
        ax.set_title(
            "✗" if bad else str(int(y[k])), fontsize=6, color="tab:red" if bad else "black", pad=1
        )
    fig.tight_layout(pad=0.2)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _markdown_into(doc: Doc, text: str) -> None:
    """The tables and paragraphs of a results.md, as blocks (so the HTML shows real tables)."""
    for block in text.strip().split("\n\n"):
        lines = [line for line in block.strip().splitlines() if line.strip()]
        if lines and all(line.startswith("|") for line in lines):
            cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
            body = [r for r in cells[1:] if not all(set(c) <= set("-: ") for c in r)]
            doc.table(cells[0], body)
        elif lines:
            doc.p(" ".join(lines))


def _experiment(doc: Doc, run: Path, out: Path, data_dir: str | None) -> None:
    rows = json.loads((run / "results.json").read_text())
    doc.h(2, "What was run")
    config = run / "config.json"
    doc.p(
        f"An experiment of {len(rows)} cells (seeds × methods × labels bought); its "
        f"configuration is `{config}`. Each cell has its own ledger; the table gives every "
        "cell's ε (PLD and naive sum), averaged over seeds."
    )
    doc.h(2, "Accuracy")
    if (run / "results.md").exists():
        _markdown_into(doc, (run / "results.md").read_text())
    pngs = sorted(run.glob("*.png"))
    if pngs:
        doc.h(2, "Figures")
        for png in pngs:
            shutil.copy2(png, out / png.name)
            doc.image(out / png.name, png.stem)
    cells: dict[str, tuple[Path, dict[str, Any]]] = {}
    for cell_json in sorted(run.rglob("cell.json")):
        if "report" in cell_json.parts:
            continue
        row = json.loads(cell_json.read_text())["row"]
        if not (cell_json.parent / "ledger.json").exists():
            continue
        key = row.get("method", "?")
        best = cells.get(key)
        if row.get("seed") == 0 and (best is None or row["n_labeled"] > best[1]["n_labeled"]):
            cells[key] = (cell_json.parent, row)
    if not cells:
        return
    doc.h(2, "Privacy")
    doc.p(
        "The ledger of one representative cell per method (seed 0, the most labels bought); the "
        "other cells of a method differ only in how many labels were bought, which costs nothing."
    )
    for method, (cell, _) in cells.items():
        delta = json.loads((cell / "cell.json").read_text())["resolved"].get("delta", 1e-5)
        _ledger_section(doc, cell / "ledger.json", float(delta), f"{method}: `{cell}`")
    top = max(cells.values(), key=lambda c: c[1]["test_accuracy"])
    if (top[0] / "selection.json").exists():
        doc.p(
            f"The bought examples below are those of the most accurate representative cell, "
            f"`{top[0]}` (chosen on the test set, for display only)."
        )
        _bought_grid(
            doc, top[0], out, json.loads((top[0] / "selection.json").read_text()), data_dir
        )
