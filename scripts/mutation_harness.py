"""Mutation harness for dpal's privacy: break the privacy on a copy of the code, one way at a
time, and require a test to fail.

A DP library whose tests pass with the noise at 0 is not yet trustworthy. Each mutation below
is one way the privacy can be silently lost (noise off, clipping off, the ledger claiming other
than what ran, a wrong Laplace scale or sensitivity, noise on the wrong quantity, an entry not
written, a release that carries the noise's seed, ...). For each, the harness copies the
repository, applies the edit, checks that the copy still compiles, runs the tests named as its
killers, and counts it killed only if a test *fails* (pytest exit 1). The killers must pass on
the unmutated copy first, or the run stops.

    python scripts/mutation_harness.py            # every mutation; exit 1 if one survives
    python scripts/mutation_harness.py --list     # the table of mutations and their killers
    python scripts/mutation_harness.py noise-off  # some, by name

``tests/test_mutation_harness.py`` runs it in the default test run (CI).
"""

from __future__ import annotations

import argparse
import json
import os
import py_compile
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOOP = "tests/test_privacy_in_the_loop.py::"
HYGIENE = "tests/test_release_hygiene.py::"


@dataclass(frozen=True)
class Mutation:
    name: str
    what: str
    file: str  # relative to the repository root
    old: str  # must occur exactly once in ``file``
    new: str
    killers: tuple[str, ...]  # pytest node ids


MUTATIONS = (
    Mutation(
        "noise-on-every-rank",
        "under torchrun every rank adds σC noise before the all-reduce (√K× too much)",
        "src/dpal/training/distributed.py",
        '        """Rank 0 adds the step\'s Gaussian noise, once, for the whole group."""\n'
        "        return self.rank == 0",
        '        """Rank 0 adds the step\'s Gaussian noise, once, for the whole group."""\n'
        "        return True",
        (
            "tests/test_distributed.py::"
            "test_two_processes_release_the_one_process_model_ledger_and_epsilon",
        ),
    ),
    Mutation(
        "noise-off-in-trainer",
        "the trainer passes σ = 0 to the DP-SGD gradient",
        "src/dpal/training/trainer.py",
        "rule = gradient_rule(config, task, noise_multiplier=sigma,",
        "rule = gradient_rule(config, task, noise_multiplier=0.0,",
        (
            LOOP + "test_noise_in_a_real_run_has_scale_sigma_times_clip_on_the_sum",
            LOOP + "test_accuracy_band_on_a_short_fixed_seed_mnist_run",
        ),
    ),
    Mutation(
        "noise-off-in-dpsgd-rule",
        "the DP-SGD gradient rule passes σ = 0 to the mechanism",
        "src/dpal/training/gradient_rules.py",
        "            max_grad_norm=self.config.clip,\n            noise_multiplier=self.sigma,\n",
        "            max_grad_norm=self.config.clip,\n            noise_multiplier=0.0,\n",
        (LOOP + "test_noise_in_a_real_run_has_scale_sigma_times_clip_on_the_sum",),
    ),
    Mutation(
        "noise-off-in-mechanism",
        "private_gradient adds no noise",
        "src/dpal/training/dpsgd.py",
        "std = noise_multiplier * max_grad_norm if noise_multiplier > 0 else 0.0",
        "std = 0.0",
        (
            "tests/test_dpsgd.py::test_noise_standard_deviation_is_sigma_times_clip",
            LOOP + "test_noise_in_a_real_run_has_scale_sigma_times_clip_on_the_sum",
        ),
    ),
    Mutation(
        "noise-on-the-mean",
        "noise σC added after dividing by q·N, not to the sum",
        "src/dpal/training/dpsgd.py",
        "    noisy = add_gaussian_noise(summed, std, generator) if adds_noise else summed\n"
        "    if group is not None:\n"
        "        noisy = group.sum(noisy)\n"
        "    return {k: v / expected_batch_size for k, v in noisy.items()}",
        "    mean = {k: v / expected_batch_size for k, v in summed.items()}\n"
        "    return add_gaussian_noise(mean, std, generator)",
        (LOOP + "test_noise_in_a_real_run_has_scale_sigma_times_clip_on_the_sum",),
    ),
    Mutation(
        "clipping-off",
        "per-example clip factors are all 1",
        "src/dpal/training/layer_grads.py",
        "    return (max_grad_norm / (norms + 1e-12)).clamp(max=1.0)",
        "    return torch.ones_like(norms)",
        (
            LOOP + "test_clipping_bounds_what_the_data_can_move_in_a_real_run",
            "tests/test_dpsgd.py::test_clipped_per_example_norms_are_at_most_the_bound",
        ),
    ),
    Mutation(
        "ledger-sample-rate",
        "the ledger records q/2 while the sampler uses q",
        "src/dpal/training/trainer.py",
        "record_dpsgd(noise_multiplier=sigma, sample_rate=q, steps=per_epoch,",
        "record_dpsgd(noise_multiplier=sigma, sample_rate=q / 2, steps=per_epoch,",
        (LOOP + "test_the_ledger_holds_the_sampling_rate_steps_and_noise_that_ran",),
    ),
    Mutation(
        "ledger-steps",
        "the ledger records one step fewer per epoch than ran",
        "src/dpal/training/trainer.py",
        "record_dpsgd(noise_multiplier=sigma, sample_rate=q, steps=per_epoch,",
        "record_dpsgd(noise_multiplier=sigma, sample_rate=q, steps=per_epoch - 1,",
        (LOOP + "test_the_ledger_holds_the_sampling_rate_steps_and_noise_that_ran",),
    ),
    Mutation(
        "extra-step",
        "the sampler runs one step more per epoch than the ledger records",
        "src/dpal/training/trainer.py",
        "poisson_batches(n, sample_rate=q, steps=per_epoch, generator=sampler_gen)",
        "poisson_batches(n, sample_rate=q, steps=per_epoch + 1, generator=sampler_gen)",
        (LOOP + "test_the_ledger_holds_the_sampling_rate_steps_and_noise_that_ran",),
    ),
    Mutation(
        "shuffle-not-poisson",
        "fixed-size shuffled batches accounted as Poisson sampling (pitfall 1)",
        "src/dpal/training/trainer.py",
        "batches = poisson_batches(n, sample_rate=q, steps=per_epoch, generator=sampler_gen)",
        "batches = shuffled_batches(n, batch_size=config.batch_size, generator=sampler_gen)",
        (LOOP + "test_the_ledger_holds_the_sampling_rate_steps_and_noise_that_ran",),
    ),
    Mutation(
        "laplace-scale-epsilon",
        "Laplace noise of scale ε instead of Δ/ε (pitfall 4)",
        "src/dpal/privacy/mechanisms.py",
        "0.0, sensitivity / epsilon, np.shape(counts)",
        "0.0, epsilon, np.shape(counts)",
        ("tests/test_mechanisms.py::test_laplace_scale_is_sensitivity_over_epsilon",),
    ),
    Mutation(
        "top-k-sensitivity-1",
        "top-k NearPrivate claims Δ₁ = 1 (pitfall 5)",
        "src/dpal/selection/near_private.py",
        'return 1.0 if self.private_selection == "threshold" else 2.0',
        "return 1.0",
        ("tests/test_selection.py::test_support_count_sensitivity_on_neighbouring_datasets",),
    ),
    Mutation(
        "density-sensitivity-half",
        "NearPrivate's density histogram calibrated to Δ₁ = ½ (half the noise it needs)",
        "src/dpal/selection/private_density.py",
        "DENSITY_SENSITIVITY = 1.0  #",
        "DENSITY_SENSITIVITY = 0.5  #",
        (
            "tests/test_private_density.py::"
            "test_audit_of_the_released_histogram_stays_below_the_claimed_epsilon",
        ),
    ),
    Mutation(
        "density-noise-off",
        "NearPrivate's density histogram released without noise",
        "src/dpal/selection/private_density.py",
        "    return laplace_counts(counts, epsilon=epsilon, sensitivity=DENSITY_SENSITIVITY, "
        "rng=rng)",
        "    return counts",
        (
            "tests/test_private_density.py::"
            "test_histogram_noise_is_laplace_of_scale_one_over_epsilon",
        ),
    ),
    Mutation(
        "density-entry-missing",
        "NearPrivate's density histogram runs without a ledger entry",
        "src/dpal/selection/near_private.py",
        "        first_entry = ledger.record(\n            kind,\n            "
        'mechanism="near-private:density-counts",',
        "        first_entry = 0 and ledger.record(\n            kind,\n            "
        'mechanism="near-private:density-counts",',
        (
            "tests/test_selection.py::"
            "test_near_private_records_both_mechanisms_and_total_matches_dp_accounting",
        ),
    ),
    Mutation(
        "dp-pca-noise-on-data",
        "DP-PCA's noise added to the rows of X, not to XᵀX",
        "src/dpal/privacy/mechanisms.py",
        "    return gram + noise + np.triu(noise, 1).T",
        "    noisy_x = x + rng.normal(0.0, noise_multiplier, x.shape)\n"
        "    return noisy_x.T @ noisy_x",
        ("tests/test_mechanisms.py::test_second_moment_noise_is_symmetric_with_the_right_scale",),
    ),
    Mutation(
        "entry-written-late",
        "ledger entries kept in memory, not written before their mechanism runs",
        "src/dpal/privacy/ledger.py",
        "        entry.event()  # validates the parameters before anything is written\n"
        "        self.entries.append(entry)\n        self._write()\n",
        "        entry.event()  # validates the parameters before anything is written\n"
        "        self.entries.append(entry)\n",
        ("tests/test_trainer.py::test_resume_after_crash_equals_uninterrupted",),
    ),
    Mutation(
        "support-entry-missing",
        "NearPrivate's support counts run without a ledger entry",
        "src/dpal/selection/near_private.py",
        "    support_entry = ledger.record(",
        "    support_entry = 0 and ledger.record(",
        (
            "tests/test_selection.py::"
            "test_near_private_records_both_mechanisms_and_total_matches_dp_accounting",
        ),
    ),
    Mutation(
        "holdout-entry-missing",
        "holdout accuracy (a noiseless private statistic) computed without a ledger entry",
        "src/dpal/training/evaluate.py",
        '    entry = ledger.record(\n        "nonprivate",\n        mechanism="holdout:',
        '    entry = None and ledger.record(\n        "nonprivate",\n        mechanism="holdout:',
        (HYGIENE + "test_holdout_accuracy_is_ledgered_as_a_nonprivate_read",),
    ),
    Mutation(
        "release-carries-state",
        "the released checkpoint also holds the generator states",
        "src/dpal/training/checkpoint.py",
        '{"format": RELEASE_FORMAT, "model": weights, "summary": summary}',
        '{**resume_state, "format": RELEASE_FORMAT, "model": weights, "summary": summary}',
        (HYGIENE + "test_released_file_holds_weights_and_summary_not_training_state",),
    ),
    Mutation(
        "noise-seeded-by-default",
        "noise generator seeded from --seed (stored in every release) by default",
        "src/dpal/privacy/noise_source.py",
        "gen.manual_seed(seed if deterministic else secrets.randbits(63))",
        "gen.manual_seed(seed)",
        (HYGIENE + "test_default_noise_is_fresh_and_deterministic_noise_is_reproducible",),
    ),
    Mutation(
        "unsafe-load",
        "checkpoints unpickled with weights_only=False",
        "src/dpal/training/checkpoint.py",
        'torch.load(path, map_location="cpu", weights_only=True)',
        'torch.load(path, map_location="cpu", weights_only=False)',
        (HYGIENE + "test_loading_refuses_a_checkpoint_that_would_run_code",),
    ),
    Mutation(
        "adamix-copies-clipped-apart",
        "AdaMix clips each augmented copy as its own example (sensitivity K·C)",
        "src/dpal/training/adamix.py",
        "    if copies > 1:\n        per_example = per_example.reshape(",
        "    if False:\n        per_example = per_example.reshape(",
        # the torch.func path (models the per-layer engine does not cover); its reference test
        ("tests/test_adamix.py::test_the_layer_path_equals_the_vmap_reference",),
    ),
    Mutation(
        "adamix-copies-clipped-apart-layers",
        "AdaMix's per-layer path projects and clips each augmented copy on its own",
        "src/dpal/training/layer_grads.py",
        "    b, k = len(x) // copies, basis.shape[1]",
        "    b, k = len(x), basis.shape[1]",
        ("tests/test_adamix.py::test_augmented_copies_are_averaged_before_the_clip",),
    ),
    Mutation(
        "upward-import",
        "a lower layer (privacy) imports from a higher one (training)",
        "src/dpal/privacy/accounting.py",
        "from dpal.core.errors import DpalError\n",
        "from dpal.core.errors import DpalError\n"
        "from dpal.training import config as _upward  # noqa\n",
        ("tests/test_layers.py::test_no_module_imports_from_a_higher_layer",),
    ),
    Mutation(
        "edited-ledger-accepted",
        "a ledger that disagrees with its checkpoints' lineage is accepted",
        "src/dpal/training/lineage.py",
        '    return same and not (then.status == "done" and now.status == "void")',
        "    return True",
        (
            "tests/test_ledger_integrity.py::"
            "test_an_edited_ledger_is_refused_and_rebuild_restores_it[lower-steps]",
        ),
    ),
    Mutation(
        "secure-gaussian-over-four",
        "--secure-noise sums four Gaussian draws but divides by 4, not 2 (σ/2)",
        "src/dpal/privacy/secure_noise.py",
        "    return total / math.sqrt(GAUSSIAN_DRAWS)",
        "    return total / GAUSSIAN_DRAWS",
        (
            "tests/test_secure_noise.py::"
            "test_dpsgd_noise_is_normal_with_the_calibrated_std_in_both_modes[secure]",
        ),
    ),
    Mutation(
        "secure-laplace-scale-inverted",
        "--secure-noise's discrete Laplace takes ε/Δ as its scale",
        "src/dpal/privacy/secure_noise.py",
        "    return Fraction(math.ceil(sensitivity * SCALE_GRID / epsilon), SCALE_GRID)",
        "    return Fraction(math.ceil(epsilon * SCALE_GRID / sensitivity), SCALE_GRID)",
        (
            "tests/test_secure_noise.py::"
            "test_secure_laplace_counts_are_integers_and_epsilon_dp_on_neighbouring_counts",
        ),
    ),
)


def _copy_repo(dest: Path) -> None:
    skip = shutil.ignore_patterns(
        ".git", ".venv", "runs", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache",
        "*.egg-info", "docs", ".whl", ".gl",
    )  # fmt: skip
    for name in ("src", "tests", "pyproject.toml"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=skip)
        else:
            shutil.copy2(src, dest / name)


def _pytest(copy: Path, node_ids: tuple[str, ...]) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(copy / "src"), "PYTHONDONTWRITEBYTECODE": "1"}
    # the copy has no ../shared beside it: point the tests at the offline data of this checkout
    env.setdefault("DPAL_DATA", str(ROOT.parent / "shared" / "datasets"))
    argv = [sys.executable, "-m", "pytest", "-q", "-x", "-rf", "-p", "no:cacheprovider",
            "-m", "not slow or slow", *node_ids]  # fmt: skip
    proc = subprocess.run(argv, cwd=copy, env=env, capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr


def _first_failure(output: str) -> str:
    match = re.search(r"^FAILED (\S+)", output, re.MULTILINE)
    return match.group(1) if match else "?"


def _check_imports_copy(copy: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(copy / "src")}
    probe = [sys.executable, "-c", "import dpal; print(dpal.__file__)"]
    where = subprocess.run(probe, env=env, capture_output=True, text=True, check=True).stdout
    if not where.strip().startswith(str(copy)):
        raise SystemExit(f"the copy is not what Python imports (it imports {where.strip()})")


def _try(copy: Path, m: Mutation) -> tuple[bool, str, str]:
    """Apply ``m`` to ``copy``, run its killers, restore the file: (killed, killer, line)."""
    target = copy / m.file
    original = target.read_text()
    if original.count(m.old) != 1:
        raise SystemExit(f"{m.name}: its text occurs {original.count(m.old)}× in {m.file}")
    target.write_text(original.replace(m.old, m.new))
    try:
        py_compile.compile(str(target), doraise=True)
        started = time.perf_counter()
        code, output = _pytest(copy, m.killers)
        took = time.perf_counter() - started
    finally:
        target.write_text(original)
    killed = code == 1
    killer = _first_failure(output) if killed else ""
    verdict = f"killed by {killer}" if killed else f"SURVIVED (exit {code})"
    line = f"{m.name:<28} {verdict}  [{took:.0f} s]"
    return killed, killer, line if killed else line + "\n" + output[-2000:]


def run(
    mutations: tuple[Mutation, ...],
    *,
    baseline: bool = True,
    jobs: int = 1,
    json_out: Path | None = None,
) -> int:
    """Each of ``jobs`` workers has its own copy of the repository and takes mutations in turn
    (two overlap well on 2 cores: much of each run is Python start-up and imports)."""
    with tempfile.TemporaryDirectory(prefix="dpal-mutants-") as tmp:
        copies = [Path(tmp) / f"copy{j}" for j in range(max(1, jobs))]
        for copy in copies:
            _copy_repo(copy)
        _check_imports_copy(copies[0])
        if baseline:
            killers = tuple(dict.fromkeys(k for m in mutations for k in m.killers))
            code, output = _pytest(copies[0], killers)
            if code != 0:
                print(output[-3000:])
                raise SystemExit("the killer tests fail on the unmutated code; fix them first")
        todo = list(mutations)
        lock = threading.Lock()
        results: dict[str, tuple[bool, str]] = {}

        def worker(copy: Path) -> None:
            while True:
                with lock:
                    if not todo:
                        return
                    m = todo.pop(0)
                killed, killer, line = _try(copy, m)
                with lock:
                    results[m.name] = (killed, killer)
                    print(line, flush=True)

        threads = [threading.Thread(target=worker, args=(c,)) for c in copies]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if len(results) != len(mutations):
            raise SystemExit("a worker stopped before every mutation ran")
        survived = sum(not k for k, _ in results.values())
        if json_out is not None:
            rows = [{"mutation": m.name, "what": m.what, "file": m.file,
                     "killed": results[m.name][0], "killed_by": results[m.name][1]}
                    for m in mutations]  # fmt: skip
            json_out.write_text(json.dumps(rows, indent=1) + "\n")
        print(f"mutants: {len(mutations) - survived} killed, {survived} survived")
        return 1 if survived else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="mutations to run (default: all)")
    parser.add_argument("--list", action="store_true", help="print the mutations and killers")
    parser.add_argument("--jobs", type=int, default=2, help="mutations run side by side")
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip checking that the killers pass unmutated (when the same test run has them)",
    )
    parser.add_argument("--json", type=Path, help="write the results as JSON rows here")
    args = parser.parse_args()
    if args.list:
        for m in MUTATIONS:
            print(f"{m.name:<28} {m.what}\n{'':<28} {m.file}; killers: {', '.join(m.killers)}")
        return 0
    chosen = tuple(m for m in MUTATIONS if not args.names or m.name in args.names)
    if unknown := set(args.names) - {m.name for m in MUTATIONS}:
        parser.error(f"unknown mutation(s): {', '.join(sorted(unknown))}")
    return run(chosen, baseline=not args.no_baseline, jobs=args.jobs, json_out=args.json)


if __name__ == "__main__":
    sys.exit(main())
