"""The ledger survives its own loss (checkpoints carry their lineage), and every edge of the
input gets a one-line error or an explicit warning — each row of the operator's table."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from dpal.cli import main
from dpal.core.errors import DpalError, DpalWarning
from dpal.data.tasks import Task
from dpal.privacy.ledger import Ledger
from dpal.training.config import TrainConfig
from dpal.training.lineage import open_checked, rebuild
from dpal.training.trainer import train
from tests.conftest import make_images

CFG = dict(dataset="synthetic", epochs=3, batch_size=40, lr=0.5, noise_multiplier=1.0, ema=0.0)


@pytest.fixture
def run(tiny_task, tmp_path):
    """A 3-epoch run: its directory and the ε its ledger shows."""
    out = tmp_path / "run"
    train(TrainConfig(**CFG), out, task=tiny_task, progress=False)
    return out, Ledger(out / "ledger.json").totals(delta=1e-5).epsilon_pld


def _resume(task, out, epoch=3, epochs=4):
    return train(TrainConfig(**{**CFG, "epochs": epochs}), out, task=task,
                 resume=out / "checkpoints" / f"epoch_{epoch:03d}.pt", progress=False)  # fmt: skip


def _one_line_error(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dpal: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_deleted_ledger_is_refused_everywhere_and_rebuilt_without_lowering_epsilon(
    run, tiny_task, capsys, tmp_path
):
    out, eps = run
    (out / "ledger.json").unlink()
    with pytest.raises(DpalError, match=r"missing.*--rebuild"):
        _resume(tiny_task, out)
    assert not (out / "ledger.json").exists()  # no fresh ledger was started
    with pytest.raises(DpalError, match=r"already holds|missing"):  # nor by a new run into it
        train(TrainConfig(**CFG), out, task=tiny_task, progress=False)
    assert "--rebuild" in _one_line_error(["ledger", str(out)], capsys)
    assert "missing" in _one_line_error(["report", str(out)], capsys)
    assert main(["ledger", str(out), "--rebuild"]) == 0
    assert Ledger(out / "ledger.json").totals(delta=1e-5).epsilon_pld >= eps - 1e-12
    resumed = _resume(tiny_task, out)  # and the run continues on the rebuilt record
    assert resumed.epsilon > eps


@pytest.mark.parametrize(
    "edit",
    ["drop-last", "truncate", "lower-steps", "void-done", "swap-sigma", "new-file"],
)
def test_an_edited_ledger_is_refused_and_rebuild_restores_it(run, tiny_task, edit):
    out, eps = run
    path = out / "ledger.json"
    payload = json.loads(path.read_text())
    entries = payload["entries"]
    if edit == "drop-last":
        entries.pop()
    elif edit == "truncate":
        payload["entries"] = entries[:1]
    elif edit == "lower-steps":
        entries[1]["params"]["steps"] = 1
    elif edit == "void-done":
        entries[0]["status"] = "void"
    elif edit == "swap-sigma":
        entries[2]["params"]["noise_multiplier"] = 50.0
    else:
        payload["entries"] = []
    path.write_text(json.dumps(payload))
    with pytest.raises(DpalError, match=r"disagrees|--rebuild"):
        open_checked(out)
    with pytest.raises(DpalError, match="disagrees"):
        _resume(tiny_task, out)
    ledger, kept = rebuild(out)
    assert kept is not None and kept.exists()  # the damaged file is kept for inspection
    assert ledger.totals(delta=1e-5).epsilon_pld == pytest.approx(eps)
    assert open_checked(out).totals(delta=1e-5).epsilon_pld == pytest.approx(eps)


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"format": "dpal-ledger/1"}, "no list of 'entries'"),
        ({"format": "dpal-ledger/1", "entries": [{"id": 0, "bogus": 1}]}, "unknown field"),
        ({"format": "dpal-ledger/1", "entries": [{"id": 0, "kind": "dpsgd"}]}, "lacks field"),
        (
            {
                "format": "dpal-ledger/1",
                "entries": [
                    {
                        "id": 0,
                        "kind": "dpsgd",
                        "mechanism": "m",
                        "params": {"noise_multiplier": "x"},
                        "status": "done",
                    }
                ],
            },
            "numbers",
        ),
        (
            {
                "format": "dpal-ledger/1",
                "entries": [
                    {"id": 0, "kind": "dpsgd", "mechanism": "m", "params": {}, "status": "done"}
                ],
            },
            "invalid dpsgd parameters",
        ),
        ([1, 2], "not a dpal ledger"),
    ],
)
def test_a_malformed_ledger_gets_a_one_line_error(tmp_path, capsys, payload, message):
    (tmp_path / "ledger.json").write_text(json.dumps(payload))
    with pytest.raises(DpalError, match=message):
        Ledger(tmp_path / "ledger.json")
    assert message.split()[0] in _one_line_error(["ledger", str(tmp_path)], capsys)


def test_zero_epochs_is_an_error_not_the_default(npz_dataset, tmp_path, capsys):
    argv = ["train", "--dataset", npz_dataset, "--noise-multiplier", "1", "--epochs", "0",
            "--out", str(tmp_path / "r"), "--quiet"]  # fmt: skip
    assert "--epochs must be ≥ 1" in _one_line_error(argv, capsys)


def test_batch_larger_than_the_dataset_is_refused_and_equal_is_warned(tiny_task, tmp_path):
    with pytest.raises(DpalError, match="larger than the 400 private"):
        train(TrainConfig(**{**CFG, "batch_size": 401}), tmp_path / "a", task=tiny_task,
              progress=False)  # fmt: skip
    with pytest.warns(DpalWarning, match="q = 1"):
        train(TrainConfig(**{**CFG, "batch_size": 400, "epochs": 1}), tmp_path / "b",
              task=tiny_task, progress=False)  # fmt: skip


def test_a_one_image_training_set_without_test_split_is_refused_or_warned(tmp_path, tiny_task):
    task = Task(name="one", private=make_images(1, seed=0), test=None)
    cfg = TrainConfig(dataset="one", epochs=1, batch_size=1, noise_multiplier=1.0, ema=0.0)
    with pytest.raises(DpalError, match="larger than the 1 private"):  # the default batch
        train(TrainConfig(dataset="one", noise_multiplier=1.0), tmp_path / "a", task=task)
    with pytest.warns(DpalWarning) as caught:
        result = train(cfg, tmp_path / "b", task=task, progress=False)
    messages = " | ".join(str(w.message) for w in caught)
    assert "q = 1" in messages and "no test split" in messages
    assert np.isnan(result.test_accuracy)
    with pytest.warns(DpalWarning, match="1/N"):  # δ ≥ 1/N: publishing one image meets it
        train(TrainConfig(**{**CFG, "epochs": 1, "delta": 0.01}), tmp_path / "c",
              task=tiny_task, progress=False)  # fmt: skip


def test_cli_warnings_are_one_line(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    arrays = make_images(5, seed=0)
    np.savez(data / "train.npz", x=arrays.x[..., 0], y=arrays.y)
    argv = ["train", "--dataset", f"npz:{data}", "--noise-multiplier", "1", "--epochs", "1",
            "--batch-size", "2", "--delta", "0.5", "--out", str(tmp_path / "r"),
            "--quiet"]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("dpal: warning:")]
    assert len(warnings) == 2 and "1/N" in warnings[0] and "no test split" in warnings[1]


def test_duplicate_label_ids_are_refused(tmp_path):
    from dpal.labeling.files import import_labels

    manifest = tmp_path / "manifest.csv"
    manifest.write_text("id,pool_index,file\n0,10,a.png\n1,11,b.png\n")
    labels = tmp_path / "labels.csv"
    labels.write_text("id,label\n0,1\n1,3\n0,7\n")
    with pytest.raises(DpalError, match="id 0 is labelled twice"):
        import_labels(labels, manifest, classes=[str(i) for i in range(10)])
    studio = tmp_path / "export.json"  # a Label Studio export: the first copy unannotated
    studio.write_text(json.dumps([
        {"data": {"dpal_id": 0}, "annotations": []},
        {"data": {"dpal_id": 0}, "annotations": [{"result": [{"value": {"choices": ["7"]}}]}]},
    ]))  # fmt: skip
    with pytest.raises(DpalError, match="dpal_id 0 appears twice"):
        import_labels(studio, manifest, classes=[str(i) for i in range(10)])


def test_out_that_cannot_be_created_is_a_one_line_error(npz_dataset, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    argv = ["train", "--dataset", npz_dataset, "--noise-multiplier", "1", "--epochs", "1",
            "--batch-size", "40", "--out", str(blocker / "run"), "--quiet"]  # fmt: skip
    assert "cannot create --out" in _one_line_error(argv, capsys)


KILL_AFTER_SAVE = textwrap.dedent(
    """
    import os, signal, sys
    import dpal.training.epoch_end as epoch_end
    real = epoch_end.save_checkpoint
    def save_then_die(path, *args, **kwargs):
        real(path, *args, **kwargs)
        if path.name == "epoch_002.pt":  # saved, its ledger entry not yet marked done
            os.kill(os.getpid(), signal.SIGKILL)
    epoch_end.save_checkpoint = save_then_die
    from dpal.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def test_kill_between_saving_a_checkpoint_and_marking_its_entry_done(npz_dataset, tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--dataset", npz_dataset, "--noise-multiplier", "1", "--epochs", "3",
            "--batch-size", "40", "--out", str(out), "--quiet"]  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", KILL_AFTER_SAVE, *argv], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    ledger = Ledger(out / "ledger.json")
    assert [e.status for e in ledger.entries] == ["done", "pending"]  # counted: over, not under
    assert (out / "checkpoints" / "epoch_002.pt").exists()
    resume = [sys.executable, "-m", "dpal.cli", "train", "--resume",
              str(out / "checkpoints" / "epoch_002.pt"), "--epochs", "3", "--quiet"]  # fmt: skip
    subprocess.run(resume, check=True, capture_output=True, env={**os.environ})
    ledger = Ledger(out / "ledger.json")
    assert [e.status for e in ledger.entries] == ["done", "done", "done"]  # saved: it was done
    steps = sum(int(e.params["steps"]) for e in ledger.counted())
    assert steps == 30  # 3 epochs of 10 steps: none lost, none counted twice
