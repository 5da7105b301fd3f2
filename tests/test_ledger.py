import json
import math

import pytest
from dp_accounting import dp_event
from dp_accounting.pld import pld_privacy_accountant

from dpal.core.errors import DpalError
from dpal.privacy.ledger import Ledger


def test_total_equals_direct_dp_accounting_composition(tmp_path):
    ledger = Ledger(tmp_path / "ledger.json")
    for _ in range(3):  # three epochs of one schedule
        e = ledger.record_dpsgd(
            noise_multiplier=1.2, sample_rate=0.01, steps=100, mechanism="train"
        )
        ledger.resolve(e, "done")
    ledger.resolve(
        ledger.record("gaussian", mechanism="dp-pca", params={"noise_multiplier": 4.0}), "done"
    )
    ledger.resolve(
        ledger.record("laplace", mechanism="support", params={"noise_multiplier": 2.0}), "done"
    )
    direct = pld_privacy_accountant.PLDAccountant()
    direct.compose(
        dp_event.ComposedDpEvent(
            [
                dp_event.SelfComposedDpEvent(
                    dp_event.PoissonSampledDpEvent(0.01, dp_event.GaussianDpEvent(1.2)), 300
                ),
                dp_event.GaussianDpEvent(4.0),
                dp_event.LaplaceDpEvent(2.0),
            ]
        )
    )
    totals = ledger.totals(delta=1e-5)
    assert totals.epsilon_pld == pytest.approx(direct.get_epsilon(1e-5), rel=1e-6)
    assert totals.epsilon_pld <= totals.epsilon_rdp
    assert totals.epsilon_pld < totals.epsilon_naive  # composition is tighter than the sum
    assert set(totals.per_mechanism) == {"train", "dp-pca", "support"}
    # Laplace alone is pure ε = Δ/b = 1/noise_multiplier, whatever its δ share
    assert totals.per_mechanism["support"] == pytest.approx(0.5, abs=1e-3)


def test_pending_counts_void_does_not_and_entries_are_final(tmp_path):
    ledger = Ledger(tmp_path / "ledger.json")
    a = ledger.record_dpsgd(noise_multiplier=1.0, sample_rate=0.01, steps=50, mechanism="t")
    pending_total = ledger.totals(delta=1e-5).epsilon_pld
    assert pending_total > 0  # written before it runs: never under-counts
    ledger.resolve(a, "void")
    assert ledger.totals(delta=1e-5).epsilon_pld == 0
    with pytest.raises(DpalError, match="already void"):
        ledger.resolve(a, "done")


def test_persisted_and_reloaded(tmp_path):
    path = tmp_path / "ledger.json"
    ledger = Ledger(path)
    ledger.resolve(
        ledger.record_dpsgd(
            noise_multiplier=1.0, sample_rate=0.02, steps=10, mechanism="t", note="epoch 1"
        ),
        "done",
    )
    again = Ledger(path)
    assert again.entries == ledger.entries
    payload = json.loads(path.read_text())
    assert payload["adjacency"] == "add/remove-one example"
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left behind


def test_nonprivate_entry_is_infinite(tmp_path):
    ledger = Ledger(tmp_path / "ledger.json")
    ledger.record("nonprivate", mechanism="train:non-private", params={})
    assert math.isinf(ledger.totals(delta=1e-5).epsilon_pld)


def test_bad_ledger_file(tmp_path):
    (tmp_path / "ledger.json").write_text("{truncated")
    with pytest.raises(DpalError, match="cannot read"):
        Ledger(tmp_path / "ledger.json")
