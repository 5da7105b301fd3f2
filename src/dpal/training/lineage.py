"""A run's ledger checked against the privacy lineage its checkpoints carry.

Every released checkpoint holds a snapshot of the run's ledger as it stood at its release
(``summary["ledger_snapshot"]``, the entry of the epoch it releases marked done). A ledger can
only grow: entries are appended and a pending one may become done or void, nothing else. So the
snapshot lets anyone detect, from the released files alone, a ledger that was deleted, truncated,
replaced or edited to spend less — and rebuild one that over-counts rather than under-counts:

* :func:`open_checked` — the run's ledger, refused with a one-line error when it is missing but
  checkpoints exist, or when it disagrees with any checkpoint's snapshot: an entry missing, its
  mechanism or parameters changed, or a released (done) entry turned void. Resume, ``dpal
  ledger`` and ``dpal report`` read ledgers through it.
* :func:`rebuild` — a ledger from the largest snapshot (the latest release: it holds every
  entry of the earlier ones), the damaged file kept beside it. Entries after the latest release
  released nothing (their epoch is re-run on resume), so the rebuilt total is never lower than
  what the released files paid for.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dpal.core.errors import DpalError
from dpal.privacy.ledger import REPAIR, Entry, Ledger, parse_entry
from dpal.training.checkpoint import list_checkpoints, load_checkpoint

SNAPSHOT_KEY = "ledger_snapshot"


def snapshot(ledger: Ledger, released: list[int]) -> list[dict[str, Any]]:
    """The ledger's entries as a checkpoint carries them, the ``released`` ones marked done."""
    return [
        {**asdict(e), "status": "done"} if e.id in released else asdict(e) for e in ledger.entries
    ]


def _snapshots(run_dir: Path) -> list[tuple[Path, list[Entry]]]:
    """(artefact, its snapshot) for every release of ``run_dir``: the checkpoints by epoch, and
    an improvement run's ``selection.json``."""
    out: list[tuple[Path, list[Entry]]] = []
    for pt in sorted((run_dir / "checkpoints").glob("epoch_*.pt")):
        sidecar = pt.with_suffix(".json")
        try:
            summary = json.loads(sidecar.read_text())
        except (OSError, json.JSONDecodeError):  # the release holds the same summary
            summary = load_checkpoint(pt)["summary"]
        out.append((pt, _parse_snapshot(pt, summary)))
    selection = run_dir / "selection.json"
    if selection.exists():
        try:
            payload = json.loads(selection.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise DpalError(f"{selection}: unreadable ({err}); restore it.") from err
        out.append((selection, _parse_snapshot(selection, payload)))
    return out


def _parse_snapshot(where: Path, summary: Any) -> list[Entry]:
    raw = summary.get(SNAPSHOT_KEY) if isinstance(summary, dict) else None
    if raw is None:  # written by dpal ≤ 0.1: history, but no lineage to check against
        return []
    if not isinstance(raw, list):
        raise DpalError(f"{where}: its ledger snapshot is damaged; restore the file.")
    return [parse_entry(where, i, r) for i, r in enumerate(raw)]


def _agrees(now: Entry, then: Entry) -> bool:
    same = (now.kind, now.mechanism, now.params, now.output, now.noise) == (
        then.kind,
        then.mechanism,
        then.params,
        then.output,
        then.noise,
    )
    # a released entry may still read pending (killed between saving and marking: it counts),
    # never void; a pending one may have become done or void (resume's verdict)
    return same and not (then.status == "done" and now.status == "void")


def open_checked(run_dir: str | Path) -> Ledger:
    """``run_dir``'s ledger, checked against every checkpoint's snapshot (module docstring)."""
    run = Path(run_dir)
    path = run / "ledger.json"
    snaps = _snapshots(run)
    if not path.exists():
        if snaps:
            raise DpalError(
                f"{path} is missing, but {run} has {len(snaps)} release(s) that spent "
                f"privacy budget; {REPAIR.replace('RUN_DIR', str(run))}."
            )
        raise DpalError(f"{path}: no ledger here; give the --out directory of a dpal run.")
    ledger = Ledger(path)
    for pt, entries in snaps:
        for then in entries:
            if then.id >= len(ledger.entries) or not _agrees(ledger.entries[then.id], then):
                raise DpalError(
                    f"{path} disagrees with {pt.name}'s record of entry {then.id} "
                    f"({then.mechanism}, {then.note!r}): the ledger was truncated, edited or "
                    f"replaced; {REPAIR.replace('RUN_DIR', str(run))}."
                )
    return ledger


def rebuild(run_dir: str | Path) -> tuple[Ledger, Path | None]:
    """Write ``run_dir/ledger.json`` from the latest snapshot; returns it and where the old file
    was moved (None when there was none)."""
    run = Path(run_dir)
    snaps = _snapshots(run)
    if not snaps:
        raise DpalError(f"{run} has no releases (checkpoints, selection) to rebuild a ledger from.")
    _, entries = max(snaps, key=lambda s: len(s[1]))
    if not entries:
        raise DpalError(
            f"{run}'s checkpoints were written by an older dpal and carry no ledger snapshot: "
            "the ledger cannot be rebuilt from them; restore it from a backup."
        )
    path = run / "ledger.json"
    kept = None
    if path.exists():
        k = 1
        while (run / f"ledger.json.damaged-{k}").exists():
            k += 1
        kept = run / f"ledger.json.damaged-{k}"
        path.rename(kept)
    return Ledger.from_entries(path, entries), kept


def open_run_ledger(out: Path, resume: str | Path | None, start_epoch: int) -> Ledger:
    """The run's ledger, with interrupted entries resolved when resuming.

    Resuming in the checkpoint's own run: a pending entry whose checkpoint was saved is done (the
    run died between saving and marking); one whose checkpoint is missing released nothing and
    is void — its epoch is re-run and recorded anew. Later checkpoints than the one resumed from
    would be overwritten, so that needs a new ``out`` (a fork), whose ledger starts as a copy of
    the parent's: every release of the parent run stays counted.
    """
    if resume is None:
        if (out / "ledger.json").exists() or any((out / "checkpoints").glob("epoch_*.pt")):
            raise DpalError(
                f"{out} already holds a run; pass --resume {out}/checkpoints/epoch_NNN.pt to "
                "continue it, or choose a new --out."
            )
        return Ledger(out / "ledger.json")
    source = Path(resume).resolve().parent.parent
    ledger = open_checked(source)  # refuses a missing or edited ledger: never a fresh one
    for e in ledger.pending():
        done = e.output and (source / e.output).exists()
        ledger.resolve(
            e.id,
            "done" if done else "void",
            "" if done else "interrupted before its checkpoint was saved; re-run",
        )
    if source == out.resolve():
        later = [c for c in list_checkpoints(out) if c["epoch"] > start_epoch]
        if later:
            raise DpalError(
                f"{out} has checkpoints after epoch {start_epoch} (up to {later[-1]['epoch']}); "
                "resume from the latest, or fork into a new --out directory."
            )
        return ledger
    if (out / "ledger.json").exists():
        raise DpalError(f"{out} already holds a run; fork into a new, empty --out directory.")
    return ledger.copy_to(out / "ledger.json")
