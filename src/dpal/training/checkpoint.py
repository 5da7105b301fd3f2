"""Checkpoints: written atomically, each with a JSON sidecar that lists it without loading it."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from dpal.errors import DpalError
from dpal.privacy.ledger import atomic_write_text


def checkpoint_path(run_dir: Path, epoch: int) -> Path:
    return run_dir / "checkpoints" / f"epoch_{epoch:03d}.pt"


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: a crash leaves the old
    file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(path: Path, state: dict[str, Any], summary: dict[str, Any]) -> None:
    """``state`` (tensors etc.) to ``path``; ``summary`` (JSON-able) to ``path.json``."""
    atomic_torch_save({**state, "summary": summary}, path)
    atomic_write_text(path.with_suffix(".json"), json.dumps(summary, indent=1))


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise DpalError(f"{path}: no such checkpoint.") from None
    except Exception as err:
        raise DpalError(f"{path}: not a readable dpal checkpoint ({err}).") from err
    if "summary" not in state or "model" not in state:
        raise DpalError(f"{path}: not a dpal checkpoint (no model/summary inside).")
    return state


def list_checkpoints(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Summaries of a run's checkpoints, by epoch (each with its ``path``)."""
    out = []
    for sidecar in sorted((Path(run_dir) / "checkpoints").glob("epoch_*.json")):
        pt = sidecar.with_suffix(".pt")
        if pt.exists():
            out.append({**json.loads(sidecar.read_text()), "path": str(pt)})
    return out
