import csv
import json

import numpy as np
import pytest

from dpal.core.errors import DpalError
from dpal.labeling import REJECTED, Oracle, export_for_labeling, import_labels

CLASSES = [str(i) for i in range(10)]


@pytest.fixture
def exported(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50, 8, 8, 1), dtype=np.uint8)
    manifest = export_for_labeling(images, np.array([7, 3, 41]), tmp_path, classes=CLASSES)
    return tmp_path, manifest


def test_export_writes_pngs_manifest_and_label_studio_tasks(exported):
    folder, manifest = exported
    rows = list(csv.DictReader(manifest.open()))
    assert [int(r["pool_index"]) for r in rows] == [7, 3, 41]
    assert all((folder / r["file"]).exists() for r in rows)
    tasks = json.loads((folder / "label_studio_tasks.json").read_text())
    assert [t["data"]["dpal_id"] for t in tasks] == [0, 1, 2]


def _csv(path, rows):
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "label"])
        w.writerows(rows)
    return path


def test_import_csv_with_a_rejection(exported, tmp_path):
    _, manifest = exported
    labels = import_labels(
        _csv(tmp_path / "l.csv", [(0, 5), (1, "reject"), (2, "9")]), manifest, classes=CLASSES
    )
    assert labels == {7: 5, 3: REJECTED, 41: 9}


def test_import_label_studio_export(exported, tmp_path):
    _, manifest = exported
    export = [
        {
            "id": 1,
            "data": {"image": "x", "dpal_id": i},
            "annotations": [{"result": [{"value": {"choices": [c]}}]}],
        }
        for i, c in ((0, "1"), (1, "2"), (2, "reject"))
    ]
    path = tmp_path / "ls.json"
    path.write_text(json.dumps(export))
    assert import_labels(path, manifest, classes=CLASSES) == {7: 1, 3: 2, 41: REJECTED}


@pytest.mark.parametrize(
    "rows, message",
    [
        ([(0, 5), (1, 2), (9, 1)], "not in the manifest"),
        ([(0, 5), (1, 12), (2, 1)], "out of range"),
        ([(0, 5), (1, "cat"), (2, 1)], "not a class number"),
        ([(0, 5)], "have no label"),
    ],
)
def test_import_checks(exported, tmp_path, rows, message):
    _, manifest = exported
    with pytest.raises(DpalError, match=message):
        import_labels(_csv(tmp_path / "l.csv", rows), manifest, classes=CLASSES)


def test_missing_rows_allowed_on_request(exported, tmp_path):
    _, manifest = exported
    got = import_labels(
        _csv(tmp_path / "l.csv", [(0, 5)]), manifest, classes=CLASSES, allow_missing=True
    )
    assert got == {7: 5}


def test_oracle_rejects_or_mislabels_invalid_images():
    labels, valid = np.array([1, 2, 3, 4]), np.array([True, False, True, False])
    assert Oracle(labels, valid)(np.array([0, 1, 3])).tolist() == [1, REJECTED, REJECTED]
    assert Oracle(labels, valid, label_invalid_as=0)(np.array([1, 2])).tolist() == [0, 3]
