"""Where one figure runs (its folder, the shared DP models), and the helpers every figure uses."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpal.core.atomic import atomic_write_text
from dpal.core.errors import DpalError
from dpal.data.tasks import Task, load_task
from dpal.methods.active_learning.experiment import (
    ExperimentConfig,
    experiment_cells,
)
from dpal.runs.cells import Cell, run_cells, saved_rows


@dataclass(frozen=True)
class FigureRun:
    """Where one figure runs, and whether it trains or only re-plots finished cells."""

    fig_dir: Path
    dp_root: Path  # DP models shared by every figure under the same --out
    data_dir: str | None
    task: Task | None  # a task given directly (tests); else loaded by name
    plot_only: bool
    progress: bool

    def task_for(self, dataset: str) -> Task:
        task = self.task or load_task(dataset, data_dir=self.data_dir)
        if task.public is None:
            raise DpalError(f"task {dataset!r} has no public pool to buy labels from.")
        return task

    def rows(self, cells: Iterable[Cell], sub: str = "") -> list[dict[str, Any]]:
        where = self.fig_dir / sub if sub else self.fig_dir
        if self.plot_only:
            return saved_rows(where, cells)
        return run_cells(where, cells, progress=self.progress)

    def curves(self, experiment: ExperimentConfig, sub: str, task: Task) -> list[dict[str, Any]]:
        return self.rows(
            experiment_cells(experiment, task, self.dp_root, progress=self.progress), sub
        )


def write_results(fig_dir: Path, rows: list[dict[str, Any]], table: str) -> None:
    atomic_write_text(fig_dir / "results.json", json.dumps(rows, indent=1))
    atomic_write_text(fig_dir / "results.md", table)


def group_by(rows: list[dict[str, Any]], key: Callable[[dict[str, Any]], Any]) -> dict[Any, list]:
    groups: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    return groups


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0
