import json

import pytest

from dpal.cli import main


def test_account_known_answer(capsys):
    argv = [
        "account",
        "--noise-multiplier",
        "1.1",
        "--batch-size",
        "256",
        "--dataset-size",
        "60000",
        "--epochs",
        "60",
        "--accountant",
        "rdp",
    ]
    assert main(argv) == 0
    assert "ε = 2.5944" in capsys.readouterr().out


def test_calibrate_then_account(capsys):
    assert main(["calibrate", "--epsilon", "2", "-q", "0.01", "--steps", "500"]) == 0
    sigma = capsys.readouterr().out.split("σ = ")[1].split()[0]
    assert main(["account", "-s", sigma, "-q", "0.01", "--steps", "500"]) == 0
    eps = float(capsys.readouterr().out.split("ε = ")[1].split()[0])
    assert 1.98 < eps <= 2.0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["account", "-s", "1", "-q", "1.5", "--steps", "3"], "sample rate must be in (0, 1]"),
        (["account", "-s", "1", "-q", "0.1", "--steps", "3", "--delta", "1"], "delta"),
        (["account", "-s", "1", "--steps", "3"], "--batch-size B with --dataset-size N"),
        (["calibrate", "--epsilon", "0", "-q", "0.1", "--steps", "3"], "positive"),
        (["train", "--dataset", "nope", "--epsilon", "1", "--out", "x"], "unknown dataset"),
        (["train", "--epsilon", "1"], "--out"),
        (["train", "--out", "x"], "give exactly one of --epsilon"),
        (["ledger", "/nonexistent"], "no ledger here"),
    ],
)
def test_errors_say_what_to_change(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_train_eval_ledger_on_user_npz(tmp_path, capsys):
    import numpy as np

    from tests.conftest import make_images

    for split, n, seed in (("train", 300, 0), ("test", 100, 1)):
        arrays = make_images(n, seed=seed)
        np.savez(tmp_path / f"{split}.npz", x=arrays.x[..., 0], y=arrays.y)
    out = tmp_path / "run"
    argv = [
        "train",
        "--dataset",
        f"npz:{tmp_path}",
        "--epsilon",
        "5",
        "--epochs",
        "2",
        "--batch-size",
        "30",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(argv) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert main(["eval", str(out / "checkpoints" / "epoch_002.pt")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["epsilon"] <= 5.0 and report["epoch"] == 2
    assert main(["ledger", str(out)]) == 0
    text = capsys.readouterr().out
    assert "PLD" in text and "naive sum" in text and "dpsgd:train" in text
    # continue the same run to epoch 3 from its last checkpoint
    assert (
        main(
            [
                "train",
                "--resume",
                str(out / "checkpoints" / "epoch_002.pt"),
                "--epochs",
                "3",
                "--quiet",
            ]
        )
        == 0
    )
    assert "ε = " in capsys.readouterr().out


def test_adamix_run_options_reach_the_config(monkeypatch, tmp_path):
    import dpal.methods.adamix.runner as adamix

    seen = {}

    def fake_run(config, out, **_):
        seen["config"] = config
        return []

    monkeypatch.setattr(adamix, "run_adamix", fake_run)
    argv = [
        "adamix",
        "run",
        "--epochs",
        "3",
        "--lr",
        "2",
        "--projection-rank",
        "8",
        "--first-seed",
        "1",
    ]
    assert main([*argv, "--clip-quantile", "0.7", "--out", str(tmp_path)]) == 0
    config = seen["config"]
    assert (config.train.epochs, config.train.lr) == (3, 2.0)
    assert (config.projection_rank, config.clip_quantile, config.first_seed) == (8, 0.7, 1)
    assert config.train.batch_size == adamix.AdamixConfig().train.batch_size  # rest: defaults


@pytest.mark.parametrize("flag", ["--deterministic-noise", "--secure-noise"])
def test_noise_mode_reaches_every_runner_config(flag):
    """--deterministic-noise and --secure-noise on train, select, run, reproduce, randp run and
    adamix run; the experiment configs pass them to their DP training (and to NearPrivate)."""
    from dpal.cli import build_parser
    from dpal.cli.common import noise_from_seed
    from dpal.methods.active_learning.experiment import QUICK

    key = flag.lstrip("-").replace("-", "_")
    parser = build_parser()
    select = ["select", "c.pt", "--strategy", "random", "--n-labeled", "1", "--out", "x"]
    commands = [["train", "--out", "x"], ["run", "mnist"], ["reproduce", "fig1"],
                ["randp", "run"], ["adamix", "run"], select]  # fmt: skip
    for argv in commands:
        assert getattr(parser.parse_args(argv), key) is False, argv
        assert getattr(parser.parse_args([*argv, flag]), key), argv
    args = parser.parse_args(["run", "mnist", flag])
    assert getattr(noise_from_seed(QUICK, args).train, key)
    assert not getattr(QUICK.train, key)


def test_audit_of_a_training_run_is_printed_saved_and_reported(tmp_path, tiny_task, capsys):
    from dpal.report.write import write_report
    from dpal.training.config import TrainConfig
    from dpal.training.trainer import train

    run = tmp_path / "run"
    train(TrainConfig(dataset="synthetic", epochs=2, batch_size=40, lr=0.5, noise_multiplier=1.0),
          run, task=tiny_task, progress=False)  # fmt: skip
    capsys.readouterr()
    assert main(["audit", "dpsgd", str(run), "--canaries", "200"]) == 0
    printed = capsys.readouterr().out
    assert "audit lower bound ε ≥" in printed and "claimed ε =" in printed
    saved = json.loads((run / "audit" / "dpsgd" / "audit.json").read_text())
    assert saved["epsilon_lower"] <= saved["claimed_epsilon"]
    md, _ = write_report(run)
    assert "Empirical privacy audit" in md.read_text() and "≤ claim" in md.read_text()
    assert main(["audit", "near-private"]) != 0  # neither --run nor --out: says what to give
    assert "--run SELECT_DIR" in capsys.readouterr().err
