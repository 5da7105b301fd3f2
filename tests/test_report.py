"""`dpal report` on each kind of run folder, from saved files only: ledger events, ε (PLD and
naive sum), the accuracy table, figures, the bought examples, and a self-contained HTML page."""

import re
from dataclasses import replace

import pytest

from dpal.cli import main
from dpal.core.errors import DpalError
from dpal.methods.active_learning.improve import SelectConfig, improve
from dpal.privacy.ledger import Ledger
from dpal.report import write_report
from dpal.reproduce.figures import reproduce
from dpal.training.config import TrainConfig
from dpal.training.finetune import FinetuneConfig
from dpal.training.trainer import train
from tests.test_reproduce import tiny


def _no_outside_files(page: str) -> bool:
    return not re.search(r'src="(?!data:)', page)


def test_report_of_an_improvement_shows_every_event_and_the_bought_examples(tmp_path, npz_dataset):
    dp = tmp_path / "dp"
    train(
        TrainConfig(dataset=npz_dataset, epochs=2, batch_size=40, epsilon=4.0), dp, progress=False
    )
    ckpt = dp / "checkpoints" / "epoch_002.pt"
    cell = tmp_path / "improved"
    improve(
        ckpt,
        cell,
        SelectConfig(strategy="near-private", n_labeled=20, k=60),
        FinetuneConfig(epochs=1),
    )
    md, page = write_report(cell)
    text, html = md.read_text(), page.read_text()
    totals = Ledger(cell / "ledger.json").totals(delta=1e-5)
    assert f"ε = {totals.epsilon_pld:.4f} (PLD" in text
    assert f"naive sum {totals.epsilon_naive:.4f}" in text
    assert "near-private:density-counts" in text and "near-private:support-counts" in text
    assert text.count("| dpsgd:train | dpsgd |") == 2 + 1  # every event, and the grouped row
    assert (md.parent / "bought_improved.png").exists() and "bought_improved.png" in text
    assert '<img src="data:image/png;base64,' in html and _no_outside_files(html)


@pytest.mark.slow  # the improvement report runs by default
def test_report_of_a_training_run_and_of_a_reproduced_figure(tmp_path, npz_dataset):
    dp = tmp_path / "dp"
    train(
        TrainConfig(dataset=npz_dataset, epochs=2, batch_size=40, epsilon=4.0), dp, progress=False
    )
    md, _ = write_report(dp)
    assert "| 2 | " in md.read_text() and (md.parent / "accuracy_vs_epsilon.png").exists()

    config = tiny("fig1", npz_dataset)
    config = replace(config, experiment=replace(config.experiment, seeds=1))
    reproduce("fig1", config, tmp_path / "repro", progress=False)
    assert main(["report", str(tmp_path / "repro" / "fig1")]) == 0
    report = tmp_path / "repro" / "fig1" / "report"
    text, html = (report / "report.md").read_text(), (report / "report.html").read_text()
    assert "| method | labels | test acc. (mean ± std)" in text
    assert "fig1.png" in text and (report / "fig1.png").exists()
    for method in ("random", "diverse-public", "near-private (equal ε)"):
        assert f"### {method}:" in text  # a ledger per method
    assert "Bought examples" in text and _no_outside_files(html)


def test_report_of_a_folder_that_is_no_run_says_what_to_give(tmp_path):
    with pytest.raises(DpalError, match="holds no dpal run"):
        write_report(tmp_path)
