"""Checkpoints: a released model file per epoch, and the private state that resumes it.

Two files per epoch, written atomically:

* ``RUN_DIR/checkpoints/epoch_NNN.pt`` — the **release**: the model's weights (EMA when on), and a
  summary (configuration, ε, test accuracy, the privacy lineage) that inference and review need.
  Nothing of the training state: whoever holds it learns only the DP output. A JSON sidecar
  (``epoch_NNN.json``) holds the same summary, to list checkpoints without loading them.
* ``RUN_DIR/private/epoch_NNN.state.pt`` — the **resume state** (last iterate, optimiser,
  EMA, sampler and augmentation generators; the noise generator only under
  ``--deterministic-noise``). It reveals which examples were sampled when, and with a noise
  generator state it would let its reader subtract the noise: never share it.

Files are read with ``torch.load(weights_only=True)``: tensors and plain containers only, so a
checkpoint someone sent cannot run code when it is loaded.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from dpal.core.atomic import atomic_torch_save, atomic_write_text
from dpal.core.errors import DpalError

RELEASE_FORMAT = "dpal-release/2"
STATE_FORMAT = "dpal-resume-state/2"
# Checkpoints of dpal ≤ 0.1 (before 2026-12-02) were one file with no format: the release under
# "release", the iterate under "model", and the training state beside them. Still read.
LEGACY_KEYS = ("release", "model", "optimizer", "sampler_rng", "summary")
PRIVATE_README = """\
This folder holds the private resume state of a dpal run: the sampler's (and, under
--deterministic-noise, the noise generator's) state and the optimiser. It reveals which examples
were sampled when and can undo the noise. Never share it; share checkpoints/epoch_NNN.pt.
"""


def checkpoint_path(run_dir: Path, epoch: int) -> Path:
    return run_dir / "checkpoints" / f"epoch_{epoch:03d}.pt"


def resume_state_path(checkpoint: str | os.PathLike[str]) -> Path:
    """The private resume state that belongs to ``checkpoint`` (``RUN/checkpoints/X.pt``)."""
    path = Path(checkpoint)
    return path.parent.parent / "private" / f"{path.stem}.state.pt"


def save_checkpoint(
    path: Path,
    weights: dict[str, torch.Tensor],
    summary: dict[str, Any],
    resume_state: dict[str, Any],
) -> None:
    """The resume state first (so a release never lacks it), then the release and its sidecar."""
    state_path = resume_state_path(path)
    if not (state_path.parent / "README.txt").exists():
        atomic_write_text(state_path.parent / "README.txt", PRIVATE_README)
    atomic_torch_save({"format": STATE_FORMAT, **resume_state}, state_path)
    atomic_torch_save({"format": RELEASE_FORMAT, "model": weights, "summary": summary}, path)
    atomic_write_text(path.with_suffix(".json"), json.dumps(summary, indent=1))


def _safe_load(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DpalError(f"{path}: no such {what}.") from None
    except IsADirectoryError:
        raise DpalError(f"{path} is a folder; give a {what} file (epoch_NNN.pt).") from None
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DpalError(
            f"{path}: refused — not a plain dpal {what} (it holds objects beyond tensors and "
            f"containers; loading it could run code): {first}"
        ) from err
    except Exception as err:
        raise DpalError(f"{path}: not a readable dpal {what} ({type(err).__name__}).") from err
    if not isinstance(obj, dict):
        raise DpalError(f"{path}: not a dpal {what} (a {type(obj).__name__}, not a dict).")
    return obj


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The release: ``{"model": weights, "summary": {...}}``."""
    state = _safe_load(path, "checkpoint")
    if "format" not in state and all(k in state for k in LEGACY_KEYS):
        return {"format": "legacy", "model": state["release"], "summary": state["summary"]}
    if "summary" not in state or "model" not in state:
        raise DpalError(f"{path}: not a dpal checkpoint (no model/summary inside).")
    if state.get("format") != RELEASE_FORMAT:
        raise DpalError(
            f"{path}: a checkpoint of format {state.get('format')!r}, this dpal reads "
            f"{RELEASE_FORMAT!r}; re-train with this version."
        )
    return state


def load_resume_state(checkpoint: str | os.PathLike[str]) -> dict[str, Any]:
    """The private state that continues training from ``checkpoint``."""
    path = resume_state_path(checkpoint)
    if not path.exists() and Path(checkpoint).exists():
        legacy = _safe_load(checkpoint, "checkpoint")
        if "format" not in legacy and all(k in legacy for k in LEGACY_KEYS):
            legacy["format"] = STATE_FORMAT  # its training state travels inside it
            return legacy
    if not path.exists():
        raise DpalError(
            f"{checkpoint} has no resume state ({path} is missing): a released checkpoint "
            "alone cannot continue its run; resume from the run folder that trained it."
        )
    state = _safe_load(path, "resume state")
    if state.get("format") != STATE_FORMAT:
        raise DpalError(f"{path}: not a dpal resume state (format {state.get('format')!r}).")
    return state


def list_checkpoints(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Summaries of a run's checkpoints, by epoch (each with its ``path``)."""
    out = []
    for sidecar in sorted((Path(run_dir) / "checkpoints").glob("epoch_*.json")):
        pt = sidecar.with_suffix(".pt")
        if pt.exists():
            out.append({**json.loads(sidecar.read_text()), "path": str(pt)})
    return out
