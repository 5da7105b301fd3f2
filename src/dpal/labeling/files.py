"""The human route: selected images out as PNG files with a manifest (CSV and a Label Studio
import), labels back in from a CSV or a Label Studio export — checked before anything trusts them.

CSV coming back: columns ``id`` and ``label``; ``label`` is a class number, a class name from
``classes``, or ``reject`` (the image is not one of the classes: the label is paid for, the image
is not trained on).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from dpal.core.atomic import atomic_write_text
from dpal.core.errors import DpalError
from dpal.labeling.oracle import REJECTED

MANIFEST = "manifest.csv"
LABEL_STUDIO_TASKS = "label_studio_tasks.json"


def export_for_labeling(
    images: np.ndarray, pool_indices: np.ndarray, out_dir: str | Path, *, classes: list[str]
) -> Path:
    """Write ``images[pool_indices]`` (uint8 ``[n, h, w, c]``) as PNGs, a manifest and a Label
    Studio import file; returns the manifest's path."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows, tasks = [], []
    for item_id, pool_index in enumerate(np.asarray(pool_indices).tolist()):
        img = images[pool_index]
        name = f"images/{item_id:06d}.png"
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(out / name)
        rows.append({"id": item_id, "pool_index": pool_index, "file": name, "label": ""})
        tasks.append({"id": item_id, "data": {"image": name, "dpal_id": item_id}})
    with (out / MANIFEST).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "pool_index", "file", "label"])
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_text(out / LABEL_STUDIO_TASKS, json.dumps(tasks, indent=1))
    config = "".join(f'<Choice value="{c}"/>' for c in [*classes, "reject"])
    atomic_write_text(
        out / "label_studio_config.xml",
        f'<View><Image name="image" value="$image"/><Choices name="label" toName="image">'
        f"{config}</Choices></View>\n",
    )
    return out / MANIFEST


def _read_manifest(manifest: Path) -> dict[int, int]:
    try:
        with manifest.open() as f:
            return {int(r["id"]): int(r["pool_index"]) for r in csv.DictReader(f)}
    except (OSError, KeyError, ValueError) as err:
        raise DpalError(f"{manifest}: not a dpal labelling manifest ({err}).") from err


def _parse_label(raw: str, item_id: int, classes: list[str]) -> int:
    value = raw.strip()
    if value.lower() == "reject":
        return REJECTED
    if value in classes:
        return classes.index(value)
    try:
        label = int(value)
    except ValueError:
        raise DpalError(
            f"item {item_id}: label {raw!r} is not a class number 0–{len(classes) - 1}, a class "
            f"name ({', '.join(classes)}) or 'reject'."
        ) from None
    if not 0 <= label < len(classes):
        raise DpalError(
            f"item {item_id}: label {label} out of range; classes are 0–{len(classes) - 1} "
            "(or 'reject')."
        )
    return label


def _read_label_studio(path: Path) -> dict[int, str]:
    try:
        tasks = json.loads(path.read_text())
        out = {}
        seen: set[int] = set()  # every task's id, labelled or not: a repeat is refused
        for task in tasks:
            item_id = int(task["data"]["dpal_id"])
            results = [r for a in task.get("annotations", []) for r in a.get("result", [])]
            if item_id in seen:
                raise DpalError(f"{path}: task dpal_id {item_id} appears twice; keep one.")
            seen.add(item_id)
            if results:
                out[item_id] = str(results[-1]["value"]["choices"][0])
        return out
    except (OSError, json.JSONDecodeError, KeyError, IndexError, TypeError) as err:
        raise DpalError(f"{path}: not a Label Studio JSON export of dpal tasks ({err}).") from err


def _read_csv(path: Path) -> dict[int, str]:
    """``{id: label}`` from a CSV with columns id,label; an id given twice is refused (which of
    two answers is right is the labeller's call, not ours)."""
    try:
        with path.open() as f:
            rows = [(r["id"], r["label"]) for r in csv.DictReader(f)]
        labelled = [(int(i), label) for i, label in rows if (label or "").strip()]
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise DpalError(f"{path}: expected a CSV with columns id,label ({err}).") from err
    out: dict[int, str] = {}
    for item_id, label in labelled:
        if item_id in out:
            raise DpalError(
                f"{path}: id {item_id} is labelled twice ({out[item_id]!r} and {label!r}); "
                "keep one row per id."
            )
        out[item_id] = label
    return out


def import_labels(
    labels_file: str | Path,
    manifest: str | Path,
    *,
    classes: list[str],
    allow_missing: bool = False,
) -> dict[int, int]:
    """``{pool_index: label}`` (``REJECTED`` for rejections) from a CSV or Label Studio export."""
    path = Path(labels_file)
    by_id = _read_manifest(Path(manifest))
    raw = _read_label_studio(path) if path.suffix.lower() == ".json" else _read_csv(path)
    unknown = sorted(set(raw) - set(by_id))
    if unknown:
        raise DpalError(f"{path}: ids not in the manifest: {unknown[:10]}; check the file.")
    missing = sorted(set(by_id) - set(raw))
    if missing and not allow_missing:
        raise DpalError(
            f"{path}: {len(missing)} of {len(by_id)} items have no label (ids {missing[:10]}…); "
            "label them, or pass --allow-missing to import the rest."
        )
    return {by_id[i]: _parse_label(v, i, classes) for i, v in raw.items()}
