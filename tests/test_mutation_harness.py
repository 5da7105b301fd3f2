"""The privacy mutation harness (scripts/mutation_harness.py) in the default test run: every way
of silently losing the privacy that it lists must make a test fail."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "mutation_harness.py"


def test_every_privacy_mutation_is_killed_by_a_test():
    # --no-baseline: the killers run unmutated in this same test run, and must pass there
    argv = [sys.executable, str(SCRIPT), "--no-baseline"]
    proc = subprocess.run(argv, capture_output=True, text=True)
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, report[-4000:]
    listed = subprocess.run(
        [sys.executable, str(SCRIPT), "--list"], capture_output=True, text=True, check=True
    ).stdout
    names = [line.split()[0] for line in listed.splitlines() if not line.startswith(" ")]
    assert len(names) >= 15
    for name in names:  # each one ran and was killed
        assert any(line.startswith(name) and "killed by" in line for line in report.splitlines())
    assert f"mutants: {len(names)} killed, 0 survived" in report
