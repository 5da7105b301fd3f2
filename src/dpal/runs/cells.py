"""Cells: the unit of work of an experiment, run once, skipped when finished, never silently lost.

A cell is a folder ``FIG/seed{s}/{name}/`` whose ``cell.json`` — written last, atomically — holds
the row it contributes to the figure's table, the resolved configuration it ran with, its seed,
the package version and git commit, and its ledger totals. A folder without ``cell.json`` was
interrupted; it is moved aside to ``{name}.interrupted-{k}`` (its ledger kept, since it may have
spent privacy) and the cell runs again.

DP training is shared: one model per (dataset, ε, seed, training config) under ``OUT/dp/``,
reused by every cell and every figure that starts from it, resumed after an interruption.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpal.data.tasks import Task
from dpal.core.errors import DpalError
from dpal.core.atomic import atomic_write_text
from dpal.privacy.ledger import Ledger
from dpal.training.checkpoint import list_checkpoints
from dpal.training.config import TrainConfig
from dpal.training.trainer import train

CELL_FILE = "cell.json"

# compute(cell_dir) -> (row for the table, resolved configuration of the cell)
Compute = Callable[[Path], tuple[dict[str, Any], dict[str, Any]]]


@dataclass(frozen=True)
class Cell:
    seed: int
    name: str  # folder name under seed{s}/: plain ASCII
    compute: Compute


@functools.cache
def provenance() -> dict[str, Any]:
    """Package version and, when running from a git checkout, the commit and whether the
    working tree had uncommitted changes — read once, when the process first asks (the code it
    imported then is the code that runs)."""
    from dpal import __version__

    here = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(here), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {
        "dpal_version": __version__,
        "git_commit": commit,
        "git_dirty": None if status is None else bool(status),
    }


def run_cells(fig_dir: Path, cells: Iterable[Cell], *, progress: bool = True) -> list[dict]:
    """Run every unfinished cell; return all rows, in the order of ``cells``."""
    rows = []
    for cell in cells:
        rows.append(run_cell(fig_dir / f"seed{cell.seed}" / cell.name, cell, progress=progress))
    return rows


def run_cell(cell_dir: Path, cell: Cell, *, progress: bool = True) -> dict[str, Any]:
    done = cell_dir / CELL_FILE
    if done.exists():
        row: dict[str, Any] = json.loads(done.read_text())["row"]
        return row
    if cell_dir.exists():
        _set_aside(cell_dir)
    cell_dir.mkdir(parents=True)
    row, resolved = cell.compute(cell_dir)
    row = {**row, "seed": cell.seed, "cell": cell.name}
    payload = {
        "row": row,
        "seed": cell.seed,
        "resolved": resolved,
        **provenance(),
        "ledger": _ledger_totals(cell_dir, resolved.get("delta")),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    atomic_write_text(done, json.dumps(payload, indent=1, default=str))
    if progress:
        shown = {k: v for k, v in row.items() if isinstance(v, int | float | str)}
        print(f"{cell_dir}: " + "  ".join(f"{k}={_fmt(v)}" for k, v in shown.items()), flush=True)
    return row


def saved_rows(fig_dir: Path, cells: Iterable[Cell]) -> list[dict[str, Any]]:
    """The rows of the finished cells, without running anything (for plotting)."""
    rows = []
    for cell in cells:
        path = fig_dir / f"seed{cell.seed}" / cell.name / CELL_FILE
        if path.exists():
            rows.append(json.loads(path.read_text())["row"])
    return rows


def _set_aside(cell_dir: Path) -> None:
    k = 1
    while cell_dir.with_name(f"{cell_dir.name}.interrupted-{k}").exists():
        k += 1
    cell_dir.rename(cell_dir.with_name(f"{cell_dir.name}.interrupted-{k}"))


def _ledger_totals(cell_dir: Path, delta: float | None) -> dict[str, Any] | None:
    path = cell_dir / "ledger.json"
    if not path.exists() or delta is None:
        return None
    totals = Ledger(path).totals(delta=delta)
    return {
        "delta": delta,
        "epsilon_pld": totals.epsilon_pld,
        "epsilon_rdp": totals.epsilon_rdp,
        "epsilon_naive": totals.epsilon_naive,
    }


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def dp_model(
    root: Path,
    train_config: TrainConfig,
    task: Task,
    *,
    progress: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """The DP training run for ``train_config`` under ``root``: trained if missing, resumed if
    interrupted, reused if finished. Returns its folder and its final checkpoint's summary."""
    dp_dir = (
        root / f"{_safe(train_config.dataset)}-eps{train_config.epsilon}-seed{train_config.seed}"
    )
    done = list_checkpoints(dp_dir)
    if done:
        stored = TrainConfig.from_dict(json.loads((dp_dir / "run.json").read_text())["config"])
        if stored != train_config:
            raise DpalError(
                f"{dp_dir} was trained with another configuration ({stored}); "
                "use a new --out directory for this one."
            )
        if done[-1]["epoch"] < train_config.epochs:
            train(None, dp_dir, task=task, resume=done[-1]["path"], progress=progress)
    else:
        if dp_dir.exists():  # started, no epoch finished: keep its ledger aside, start cleanly
            _set_aside(dp_dir)
        train(train_config, dp_dir, task=task, progress=progress)
    return dp_dir, list_checkpoints(dp_dir)[-1]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
