"""The report's sections on bought labels and experiments: tables, the images bought, figures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from dpal.core.errors import DpalError
from dpal.report.document import Doc, markdown_into
from dpal.report.privacy import ledger_section


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
            " NearPrivate read the private data twice: "
            + (
                f"DP-PCA (ε_pca = {cfg['epsilon_pca']})"
                if cfg.get("pool_filter", "none") == "none"
                else f"a Laplace histogram over public clusters (ε_density = "
                f"{cfg['epsilon_density']})"
            )
            + f" and Laplace support counts (ε_support = {cfg['epsilon_support']})."
            if selection["strategy"] == "near-private"
            else " The selection read only the public pool and the released model "
            "(post-processing)."
        )
    )
    doc.h(2, "Privacy")
    ledger_section(doc, run / "ledger.json", float(cfg["delta"]), "Ledger of the released model")
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
        markdown_into(doc, (run / "results.md").read_text())
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
        ledger_section(doc, cell / "ledger.json", float(delta), f"{method}: `{cell}`")
    top = max(cells.values(), key=lambda c: c[1]["test_accuracy"])
    if (top[0] / "selection.json").exists():
        doc.p(
            f"The bought examples below are those of the most accurate representative cell, "
            f"`{top[0]}` (chosen on the test set, for display only)."
        )
        _bought_grid(
            doc, top[0], out, json.loads((top[0] / "selection.json").read_text()), data_dir
        )
