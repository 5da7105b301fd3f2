"""The run's privacy ledger: an append-only, atomically written record of every mechanism that
read private data, and the total ε it adds up to.

Entries are written *before* their mechanism runs (status ``pending``), so a process killed at
any moment leaves a ledger that over-counts, never under-counts. A pending entry becomes
``done`` once its output is saved, or ``void`` when a resumed run finds that it was interrupted
before releasing any output (a checkpoint, a selection): such an execution released nothing,
and its steps are run — and recorded — again.

The total composes every non-void entry with ``dp_accounting`` (PLD, tight; RDP beside it) and
shows the naive sum: the ε of each mechanism (entries sharing a ``mechanism`` name) computed
alone at δ/m, summed over the m mechanisms — basic composition, a valid but loose bound.

Example:
    >>> import tempfile, os
    >>> ledger = Ledger(os.path.join(tempfile.mkdtemp(), "ledger.json"))
    >>> e = ledger.record_dpsgd(
    ...     noise_multiplier=1.1, sample_rate=0.01, steps=100, mechanism="train"
    ... )
    >>> ledger.resolve(e, "done")
    >>> round(ledger.totals(delta=1e-5).epsilon_pld, 2) > 0
    True
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from dp_accounting import dp_event

from dpal.core.atomic import atomic_write_text
from dpal.core.errors import DpalError
from dpal.privacy.accounting import DpsgdSchedule, check_delta, epsilon

FORMAT = "dpal-ledger/1"
Kind = Literal["dpsgd", "gaussian", "laplace", "discrete-laplace", "nonprivate"]
Status = Literal["pending", "done", "void"]
KINDS = ("dpsgd", "gaussian", "laplace", "discrete-laplace", "nonprivate")
STATUSES = ("pending", "done", "void")
REPAIR = (
    "restore it from a backup, or rebuild it from the run's checkpoints with "
    "`dpal ledger RUN_DIR --rebuild`"
)


@dataclass(frozen=True)
class Entry:
    """One mechanism run on private data.

    ``params`` by kind — ``dpsgd``: noise_multiplier, sample_rate, steps; ``gaussian``:
    noise_multiplier (noise std / L2 sensitivity); ``laplace``: noise_multiplier (scale / L1
    sensitivity, i.e. 1/ε); ``discrete-laplace`` (``--secure-noise``): scale (t of
    P(z) ∝ exp(−|z|/t)) and sensitivity (an integer L1 bound); ``nonprivate``: none (ε = ∞).
    """

    id: int
    kind: Kind
    mechanism: str
    params: dict[str, float]
    status: Status
    note: str = ""
    output: str = ""  # the artifact whose release this entry pays for (a checkpoint file, ...)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    noise: str = ""  # where its noise came from (dpal.privacy.noise_source); "" = no noise

    def event(self) -> dp_event.DpEvent:
        return event_for(self.kind, self.params)


def event_for(kind: Kind, p: dict[str, float]) -> dp_event.DpEvent:
    """The dp_accounting event of an entry of ``kind`` with params ``p`` (see :class:`Entry`)."""
    if kind == "dpsgd":
        return DpsgdSchedule(
            noise_multiplier=p["noise_multiplier"],
            sample_rate=p["sample_rate"],
            steps=int(p["steps"]),
        ).event()
    if kind == "gaussian":
        return dp_event.GaussianDpEvent(p["noise_multiplier"])
    if kind == "laplace":
        return dp_event.LaplaceDpEvent(p["noise_multiplier"])
    if kind == "discrete-laplace":
        if p["scale"] <= 0 or p["sensitivity"] != int(p["sensitivity"]):
            raise DpalError(f"discrete-laplace needs scale > 0, integer sensitivity: {p}")
        return dp_event.DiscreteLaplaceDpEvent(1.0 / p["scale"], int(p["sensitivity"]))
    return dp_event.NonPrivateDpEvent()


@dataclass(frozen=True)
class Totals:
    delta: float
    epsilon_pld: float
    epsilon_rdp: float
    epsilon_naive: float
    per_mechanism: dict[str, float]  # ε of each mechanism alone at δ/m (the naive sum's terms)


def compose(entries: list[Entry]) -> dp_event.DpEvent:
    """One event for all counted entries. DP-SGD entries with the same (σ, q) are merged into
    one self-composition (composition is commutative), which keeps PLD fast."""
    merged: dict[tuple[float, float], int] = {}
    others: list[dp_event.DpEvent] = []
    for e in entries:
        if e.kind == "dpsgd":
            key = (e.params["noise_multiplier"], e.params["sample_rate"])
            merged[key] = merged.get(key, 0) + int(e.params["steps"])
        else:
            others.append(e.event())
    events = [
        DpsgdSchedule(noise_multiplier=s, sample_rate=q, steps=n).event()
        for (s, q), n in merged.items()
    ] + others
    if not events:
        return dp_event.NoOpDpEvent()
    return events[0] if len(events) == 1 else dp_event.ComposedDpEvent(events)


class Ledger:
    """The ledger file of one run (``RUN_DIR/ledger.json``)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.entries: list[Entry] = []
        if self.path.exists():
            self.entries = _read(self.path)

    # -- recording -----------------------------------------------------------------------------
    def record(
        self,
        kind: Kind,
        *,
        mechanism: str,
        params: dict[str, float],
        note: str = "",
        output: str = "",
        status: Status = "pending",
        noise: str = "",
    ) -> int:
        """Append an entry (pending unless told) and write the ledger; returns its id."""
        entry = Entry(
            len(self.entries), kind, mechanism, dict(params), status, note, output, noise=noise
        )
        entry.event()  # validates the parameters before anything is written
        self.entries.append(entry)
        self._write()
        return entry.id

    def record_dpsgd(
        self,
        *,
        noise_multiplier: float,
        sample_rate: float,
        steps: int,
        mechanism: str,
        note: str = "",
        output: str = "",
        noise: str = "",
    ) -> int:
        params = {"noise_multiplier": noise_multiplier, "sample_rate": sample_rate, "steps": steps}
        return self.record(
            "dpsgd", mechanism=mechanism, params=params, note=note, output=output, noise=noise
        )

    def resolve(self, entry_id: int, status: Literal["done", "void"], note: str = "") -> None:
        """pending → done (its output was released) or → void (it released nothing)."""
        old = self.entries[entry_id]
        if old.status != "pending":
            raise DpalError(f"ledger entry {entry_id} is already {old.status}; entries are final.")
        self.entries[entry_id] = replace(
            old,
            status=status,
            note=f"{old.note}; {note}" if note and old.note else (note or old.note),
        )
        self._write()

    def pending(self) -> list[Entry]:
        return [e for e in self.entries if e.status == "pending"]

    # -- totals --------------------------------------------------------------------------------
    def counted(self) -> list[Entry]:
        """Entries that count: done and pending (a pending one may have run)."""
        return [e for e in self.entries if e.status != "void"]

    def totals(self, *, delta: float) -> Totals:
        check_delta(delta)
        counted = self.counted()
        event = compose(counted)
        mechanisms = sorted({e.mechanism for e in counted})
        per: dict[str, float] = {}
        for m in mechanisms:
            sub = compose([e for e in counted if e.mechanism == m])
            per[m] = epsilon(sub, delta=delta / len(mechanisms), accountant="pld")
        return Totals(
            delta=delta,
            epsilon_pld=epsilon(event, delta=delta, accountant="pld"),
            epsilon_rdp=epsilon(event, delta=delta, accountant="rdp"),
            epsilon_naive=math.fsum(per.values()) if per else 0.0,
            per_mechanism=per,
        )

    # -- persistence ---------------------------------------------------------------------------
    def _write(self) -> None:
        payload = {
            "format": FORMAT,
            "adjacency": "add/remove-one example",
            "entries": [asdict(e) for e in self.entries],
        }
        atomic_write_text(self.path, json.dumps(payload, indent=1))

    def subset_to(self, path: str | os.PathLike[str], entries: list[Entry], note: str) -> Ledger:
        """A new ledger file holding ``entries`` (renumbered, their origin noted)."""
        other = Ledger.__new__(Ledger)
        other.path = Path(path)
        other.entries = [
            replace(e, id=i, note=f"{note} #{e.id}: {e.note}") for i, e in enumerate(entries)
        ]
        other._write()
        return other

    def copy_to(self, path: str | os.PathLike[str]) -> Ledger:
        """A new ledger file holding every entry of this one (for a run forked from it)."""
        return Ledger.from_entries(path, self.entries)

    @classmethod
    def from_entries(cls, path: str | os.PathLike[str], entries: list[Entry]) -> Ledger:
        """A ledger file written anew with ``entries`` (ids must be their positions)."""
        if any(e.id != i for i, e in enumerate(entries)):
            raise DpalError("ledger entries must be numbered by position.")
        other = cls.__new__(cls)
        other.path, other.entries = Path(path), list(entries)
        other._write()
        return other


def _read(path: Path) -> list[Entry]:
    """The entries of a ledger file, each checked: a damaged or edited file is refused with a
    one-line error, never half-read (a half-read ledger would under-count)."""
    try:
        payload: Any = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DpalError(f"{path}: cannot read the privacy ledger ({err}); {REPAIR}.") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise DpalError(f"{path}: not a dpal ledger (format {got!r}).")
    entries = payload.get("entries")
    if not isinstance(entries, list):
        raise DpalError(f"{path}: damaged privacy ledger (no list of 'entries'); {REPAIR}.")
    return [parse_entry(path, i, raw) for i, raw in enumerate(entries)]


def parse_entry(path: Path, position: int, raw: Any) -> Entry:
    where = f"{path}: entry {position}"
    if not isinstance(raw, dict):
        raise DpalError(f"{where} is not an object; {REPAIR}.")
    known = {f.name for f in fields(Entry)}
    if unknown := sorted(set(raw) - known):
        raise DpalError(f"{where} has unknown field(s) {', '.join(unknown)}; {REPAIR}.")
    if missing := sorted({"id", "kind", "mechanism", "params", "status"} - set(raw)):
        raise DpalError(f"{where} lacks field(s) {', '.join(missing)}; {REPAIR}.")
    if raw["id"] != position:
        raise DpalError(f"{where} has id {raw['id']!r}, not its position; {REPAIR}.")
    if raw["kind"] not in KINDS or raw["status"] not in STATUSES:
        raise DpalError(
            f"{where}: kind {raw['kind']!r} / status {raw['status']!r} unknown; {REPAIR}."
        )
    params = raw["params"]
    if not isinstance(params, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in params.values()
    ):
        raise DpalError(f"{where}: params must map names to numbers; {REPAIR}.")
    if not all(isinstance(raw.get(k, ""), str) for k in ("mechanism", "note", "output", "noise")):
        raise DpalError(f"{where}: mechanism, note, output and noise must be strings; {REPAIR}.")
    entry = Entry(**raw)
    try:
        entry.event()
    except (KeyError, TypeError, ValueError) as err:
        raise DpalError(f"{where}: invalid {entry.kind} parameters {params}; {REPAIR}.") from err
    return entry
