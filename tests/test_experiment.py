"""The experiment runner end to end at toy scale: table, figure, resumption, pollution counts."""

import json

from dpal.methods.active_learning.experiment import ExperimentConfig, run_experiment
from dpal.training.config import TrainConfig
from dpal.training.finetune import FinetuneConfig


def test_runs_every_method_and_resumes_without_redoing_cells(tmp_path, npz_dataset):
    config = ExperimentConfig(
        dataset=npz_dataset,
        epsilon_dp=8.0,
        train=TrainConfig(epochs=3, batch_size=40, lr=0.5, epsilon=8.0),
        n_labeled=(20,),
        finetune=FinetuneConfig(epochs=2, batch_size=16),
        extra_candidates=50,
    )
    out = tmp_path / "run"
    rows = run_experiment(config, out, progress=False)
    methods = {r["method"] for r in rows}
    assert methods >= {
        "DP baseline",
        "random",
        "entropy",
        "margin",
        "diverse-public",
        "near-private",
    }
    assert (out / "results.md").exists() and (out / "accuracy_vs_labels.png").exists()
    saved = json.loads((out / "results.json").read_text())
    assert saved == rows
    np_rows = [r for r in rows if r["method"] == "near-private"]
    assert np_rows[0]["epsilon_total"] > np_rows[0]["epsilon_dp"]
    cell = out / "seed0" / "random-20" / "result.json"
    before = cell.stat().st_mtime_ns
    again = run_experiment(config, out, progress=False)  # everything is done: nothing re-run
    assert cell.stat().st_mtime_ns == before
    assert again == rows
