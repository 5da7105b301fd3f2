"""`dpal reproduce` at toy scale on synthetic data: every figure end to end, resumption after an
interrupted cell, config round trips, plots redrawn from saved cells without training."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from dpal.core.errors import DpalError
from dpal.methods.active_learning.experiment import ExperimentConfig
from dpal.reproduce.configs import (
    CONFIG_CLASSES,
    FULL,
    QUICK,
    Fig1Config,
    Fig3Config,
    Fig4Config,
    Fig5Config,
    config_from_dict,
    config_to_dict,
    with_seeds,
)
from dpal.reproduce.figures import reproduce
from dpal.runs.cells import Cell, run_cell
from dpal.training.config import TrainConfig
from dpal.training.finetune import FinetuneConfig

TRAIN = TrainConfig(epochs=3, batch_size=40, lr=0.5, epsilon=8.0)
FT = FinetuneConfig(epochs=2, batch_size=16)


def tiny(figure: str, dataset: str):
    ex = ExperimentConfig(
        dataset=dataset,
        epsilon_dp=8.0,
        train=TRAIN,
        n_labeled=(20,),
        finetune=FT,
        extra_candidates=50,
        methods=("random", "diverse-public", "near-private"),
        near_private_from="equal",
        seeds=2,
    )
    return {
        "fig1": Fig1Config(experiment=ex),
        # one seed beyond Figure 1 keeps the suite short; Figure 1 checks the per-seed sharing
        "fig3": Fig3Config(curves=replace(ex, seeds=1), harsh_label=3, wide_extra_candidates=100),
        "fig4": Fig4Config(
            dataset=dataset,
            epsilon_dp=8.0,
            train=TRAIN,
            n_labeled=(20,),
            n_each=(1, 10),
            extra_candidates=50,
            grid_clusters=16,
            finetune=FT,
            seeds=1,
        ),
        "fig5": Fig5Config(
            dataset=dataset,
            epsilon_dp=8.0,
            train=TRAIN,
            checkpoint_epochs=(2, 3),
            n_labeled=(20,),
            epsilon_limit=8.0,
            support_sweep=(0.3, 1.0),
            sweep_n_labeled=20,
            extra_candidates=50,
            finetune=FT,
            seeds=1,
        ),
    }[figure]


# fig4 runs by default; the others share its runner and are slow (2 minutes each)
FIGURES = [pytest.param(f, marks=[] if f == "fig4" else [pytest.mark.slow])
           for f in ("fig1", "fig3", "fig4", "fig5")]  # fmt: skip


@pytest.mark.parametrize("figure", FIGURES)
def test_every_figure_runs_end_to_end_and_replots_from_saved_cells(tmp_path, npz_dataset, figure):
    out = tmp_path / "out"
    config = tiny(figure, npz_dataset)
    rows = reproduce(figure, config, out, progress=False)
    fig_dir = out / figure
    pngs = sorted(p.name for p in fig_dir.glob("*.png"))
    expected = {"fig1": ["fig1.png"], "fig3": ["fig3.png"], "fig4": ["fig4a.png", "fig4b.png"]}
    assert pngs == expected.get(figure, ["fig5.png"])
    seeds = (0, 1) if figure == "fig1" else (0,)
    assert {r["seed"] for r in rows} == set(seeds)
    # one DP training per seed, shared by every cell
    assert sorted(p.name for p in (out / "dp").iterdir()) == [
        f"{npz_dataset.replace(':', '_').replace('/', '_')}-eps8.0-seed{s}" for s in seeds
    ]
    cells = sorted(fig_dir.rglob("cell.json"))
    payload = json.loads(cells[0].read_text())
    assert {"row", "seed", "resolved", "dpal_version", "git_commit", "ledger"} <= set(payload)
    for p in fig_dir.glob("*.png"):
        p.unlink()
    stamps = {p: p.stat().st_mtime_ns for p in cells}
    again = reproduce(figure, config, out, plot_only=True, progress=False)
    assert again == rows
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # nothing re-run
    assert sorted(p.name for p in fig_dir.glob("*.png")) == pngs
    if figure == "fig4":  # the same folder with another configuration is refused, not mixed
        with pytest.raises(DpalError, match="another configuration"):
            reproduce(figure, replace(config, n_each=(1, 5)), out, progress=False)
    if figure == "fig3":  # the gap, paired by seed, and the polluted images bought
        table = (fig_dir / "results.md").read_text()
        assert "| rejects | 20 |" in table and "| labels as a class | 20 |" in table
        assert "| rejects; k = N + 100 | 20 |" in table and "(1 seeds)" in table
    if figure == "fig5":  # budgeted cells respect ε_limit; earlier checkpoints cost less
        sweep = [r for r in rows if r["cell"].startswith("support")]
        assert len(sweep) == 2
        assert all(r["epsilon_total"] <= config.epsilon_limit + 1e-9 for r in sweep)
        by_epoch = {
            r["epoch"]: r["epsilon_dp"]
            for r in rows
            if r["cell"].startswith("epoch") and r["seed"] == 0
        }
        assert sorted(by_epoch) == [2, 3] and by_epoch[2] < by_epoch[3]


def test_interrupted_cell_is_set_aside_and_rerun_finished_ones_are_not(tmp_path):
    calls: list[str] = []

    def compute(name):
        def run(cell_dir: Path):
            calls.append(name)
            (cell_dir / "ledger.json").write_text("[]")
            if name == "crash":
                raise KeyboardInterrupt
            return {"value": 1.0}, {"x": name}

        return run

    run_cell(tmp_path / "seed0" / "a", Cell(0, "a", compute("a")), progress=False)
    with pytest.raises(KeyboardInterrupt):
        run_cell(tmp_path / "seed0" / "b", Cell(0, "b", compute("crash")), progress=False)
    assert not (tmp_path / "seed0" / "b" / "cell.json").exists()
    row = run_cell(tmp_path / "seed0" / "b", Cell(0, "b", compute("b")), progress=False)
    again = run_cell(tmp_path / "seed0" / "a", Cell(0, "a", compute("a")), progress=False)
    assert calls == ["a", "crash", "b"]  # a was not redone
    assert row == {"value": 1.0, "seed": 0, "cell": "b"} and again["cell"] == "a"
    aside = tmp_path / "seed0" / "b.interrupted-1"
    assert (aside / "ledger.json").exists()  # what the interrupted cell spent is kept


@pytest.mark.slow  # test_experiment resumes without redoing cells by default
def test_experiment_resumes_after_an_interrupted_cell(tmp_path, npz_dataset, monkeypatch):
    import dpal.methods.active_learning.experiment as experiment

    config = tiny("fig1", npz_dataset)
    real = experiment.improve
    seen = []
    interrupted_once: list[bool] = []

    def flaky(start, cell_dir, *args, **kwargs):
        seen.append(f"{Path(cell_dir).parent.name}/{Path(cell_dir).name}")
        if len(seen) == 3 and not interrupted_once:
            interrupted_once.append(True)
            Path(cell_dir).mkdir(parents=True, exist_ok=True)
            raise KeyboardInterrupt
        return real(start, cell_dir, *args, **kwargs)

    monkeypatch.setattr(experiment, "improve", flaky)
    with pytest.raises(KeyboardInterrupt):
        reproduce("fig1", config, tmp_path, progress=False)
    finished, interrupted = seen[:2], seen[2]
    seen.clear()
    reproduce("fig1", config, tmp_path, progress=False)
    assert interrupted in seen and not set(finished) & set(seen)  # finished cells not redone
    assert len(seen) == 6 - 2  # 3 methods × 2 seeds, 2 of them finished before the interruption


@pytest.mark.parametrize("name", sorted(CONFIG_CLASSES))
def test_configs_round_trip_through_json(name):
    for table in (FULL, QUICK):
        config = with_seeds(table[name], 3)
        text = json.dumps(config_to_dict(config))
        assert config_from_dict(CONFIG_CLASSES[name], json.loads(text)) == config


def test_plot_only_without_results_says_to_run_first(tmp_path):
    with pytest.raises(DpalError, match="run without --plot-only"):
        reproduce("fig4", FULL["fig4"], tmp_path, plot_only=True, progress=False)


def test_unknown_config_fields_are_refused_with_the_known_ones():
    with pytest.raises(DpalError, match=r"unknown fields.*known"):
        config_from_dict(Fig4Config, {"n_eachh": [1]})
