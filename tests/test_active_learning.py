"""An improvement run end to end on synthetic data: ledger, labels, fine-tuning, budget."""

import json

import numpy as np
import pytest

from dpal.cli import main
from dpal.core.errors import DpalError
from dpal.data.tasks import Task
from dpal.labeling import REJECTED, Oracle
from dpal.methods.active_learning.budget import plan_budget
from dpal.methods.active_learning.improve import SelectConfig, finetune_dir, improve, select_to_dir
from dpal.privacy.ledger import Ledger
from dpal.training.config import TrainConfig
from dpal.training.finetune import FinetuneConfig
from dpal.training.trainer import train
from tests.conftest import make_images

# one worker builds the module fixture once (make test: pytest -n 2 --dist loadgroup)
pytestmark = pytest.mark.xdist_group("dp-run")


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("al")
    task = Task(
        "synthetic",
        make_images(400, seed=0),
        make_images(200, seed=1),
        public=make_images(300, seed=2),
    )
    cfg = TrainConfig(dataset="synthetic", epochs=3, batch_size=40, lr=0.5, noise_multiplier=1.0)
    train(cfg, root / "dp", task=task, progress=False)
    return root, task


FT = FinetuneConfig(epochs=5, batch_size=32)


@pytest.mark.parametrize("strategy", ["random", "entropy", "margin", "diverse-public"])
def test_public_only_strategies_cost_nothing(dp_run, strategy):
    root, task = dp_run
    out = root / f"imp-{strategy}"
    r = improve(
        root / "dp/checkpoints/epoch_003.pt",
        out,
        SelectConfig(strategy=strategy, n_labeled=40, k=100, n_each=10),
        FT,
        task=task,
    )
    assert r.n_labeled == 40 and 0 <= r.test_accuracy <= 1
    assert r.epsilon_total == pytest.approx(r.epsilon_dp)  # post-processing: free
    assert [e.kind for e in Ledger(out / "ledger.json").entries] == ["dpsgd"] * 3


@pytest.mark.parametrize("pool_filter, first", [("density", "laplace"), ("none", "gaussian")])
def test_near_private_adds_two_events_and_more_epsilon(dp_run, pool_filter, first):
    root, task = dp_run
    out = root / f"imp-np-{pool_filter}"
    r = improve(
        root / "dp/checkpoints/epoch_003.pt",
        out,
        SelectConfig(strategy="near-private", n_labeled=40, k=100, pool_filter=pool_filter),
        FT,
        task=task,
    )
    kinds = [e.kind for e in Ledger(out / "ledger.json").entries]
    assert kinds == ["dpsgd"] * 3 + [first, "laplace"]
    assert all(e.status == "done" for e in Ledger(out / "ledger.json").entries)
    assert r.epsilon_dp < r.epsilon_total < r.epsilon_naive


def test_rejected_images_cost_budget_but_are_not_trained_on(dp_run):
    root, task = dp_run
    valid = np.ones(len(task.public), dtype=bool)
    valid[::2] = False
    oracle = Oracle(task.public.y, valid)
    r = improve(
        root / "dp/checkpoints/epoch_003.pt",
        root / "imp-polluted",
        SelectConfig(strategy="random", n_labeled=40),
        FT,
        task=task,
        oracle=oracle,
    )
    assert r.n_labeled == 40 and r.n_rejected == int((~valid[r.selected]).sum()) > 0


def test_human_route_through_the_cli(dp_run, tmp_path):
    root, task = dp_run
    sel = tmp_path / "sel"
    picked = select_to_dir(
        root / "dp/checkpoints/epoch_003.pt",
        sel,
        SelectConfig(strategy="margin", n_labeled=10),
        task=task,
    )
    labels = {int(i): int(task.public.y[i]) for i in picked}
    labels[int(picked[0])] = REJECTED
    r = finetune_dir(sel, labels, FT, task=task)
    assert r.n_rejected == 1 and r.n_labeled == 10
    with pytest.raises(DpalError, match="not selected"):
        finetune_dir(sel, {10**6: 1}, FT, task=task)
    with pytest.raises(DpalError, match="already holds"):
        select_to_dir(
            root / "dp/checkpoints/epoch_003.pt",
            sel,
            SelectConfig(strategy="margin", n_labeled=10),
            task=task,
        )


def test_budget_recommends_the_latest_checkpoint_that_fits(dp_run):
    root, _ = dp_run
    rows, best = plan_budget(root / "dp", epsilon_limit=100.0)
    assert best is not None and best.epoch == 3
    assert all(r.epsilon_dp < r.epsilon_total < r.epsilon_naive for r in rows)
    assert all(r.epsilon_naive == pytest.approx(r.epsilon_dp + 0.4 + 0.6) for r in rows)
    limit = (rows[0].epsilon_total + rows[1].epsilon_total) / 2
    _, best = plan_budget(root / "dp", epsilon_limit=limit)
    assert best is not None and best.epoch == 1
    _, none = plan_budget(root / "dp", epsilon_limit=0.01)
    assert none is None


def test_select_config_errors():
    with pytest.raises(DpalError, match="unknown strategy"):
        SelectConfig(strategy="bald", n_labeled=10)
    with pytest.raises(DpalError, match="multiple of n_each"):
        SelectConfig(strategy="diverse-public", n_labeled=15, n_each=10)


def test_cli_label_export_import_finetune(dp_run, tmp_path, capsys):
    _, task = dp_run
    # the CLI loads tasks by name: give it the synthetic task as an npz folder
    import numpy as np

    data = tmp_path / "data"
    data.mkdir()
    for split, arrays in (("train", task.private), ("test", task.test), ("public", task.public)):
        np.savez(data / f"{split}.npz", x=arrays.x[..., 0], y=arrays.y)
    run = tmp_path / "dp"
    assert (
        main(
            [
                "train",
                "--dataset",
                f"npz:{data}",
                "--noise-multiplier",
                "1",
                "--epochs",
                "1",
                "--batch-size",
                "40",
                "--out",
                str(run),
                "--quiet",
            ]
        )
        == 0
    )
    sel = tmp_path / "sel"
    ckpt = str(run / "checkpoints/epoch_001.pt")
    assert (
        main(
            [
                "select",
                ckpt,
                "--strategy",
                "near-private",
                "--n-labeled",
                "6",
                "--k",
                "50",
                "--out",
                str(sel),
            ]
        )
        == 0
    )
    assert "near-private:density-counts" in capsys.readouterr().out
    assert main(["label", "export", str(sel)]) == 0
    manifest = (sel / "labeling" / "manifest.csv").read_text().splitlines()
    labels = sel / "filled.csv"
    labels.write_text("id,label\n" + "\n".join(f"{i},{i % 10}" for i in range(len(manifest) - 1)))
    assert main(["label", "import", str(sel), str(labels)]) == 0
    assert main(["finetune", str(sel), "--ft-epochs", "2"]) == 0
    assert "ε_total" in capsys.readouterr().out
    assert json.loads((sel / "result.json").read_text())["n_labeled"] == 6
    assert main(["budget", str(run), "--epsilon-limit", "1000"]) == 0
    assert "recommended" in capsys.readouterr().out


def test_an_improvement_carries_its_lineage_and_a_lost_ledger_is_rebuilt(dp_run, tmp_path):
    """selection.json (and the fine-tuned model.pt) hold the ledger as it stood at release: the
    improvement's ledger deleted or edited is refused, and rebuilt at the same ε."""
    from dpal.training.lineage import open_checked, rebuild

    root, task = dp_run
    out = tmp_path / "np"
    config = SelectConfig(strategy="near-private", n_labeled=20, k=60)
    select_to_dir(root / "dp" / "checkpoints" / "epoch_003.pt", out, config, task=task)
    eps = open_checked(out).totals(delta=1e-5).epsilon_pld
    (out / "ledger.json").unlink()
    with pytest.raises(DpalError, match="missing"):
        open_checked(out)
    rebuild(out)
    assert open_checked(out).totals(delta=1e-5).epsilon_pld == pytest.approx(eps)
    payload = json.loads((out / "ledger.json").read_text())
    payload["entries"] = payload["entries"][:-1]  # drop the support counts
    (out / "ledger.json").write_text(json.dumps(payload))
    with pytest.raises(DpalError, match="disagrees"):
        open_checked(out)
