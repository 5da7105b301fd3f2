"""``dpal audit near-private``: NearPrivate's release, attacked on neighbouring private sets.

D is a synthetic private set; D′ = D plus one canary placed exactly on a public point t, with the
highest uncertainty, so that it is counted and t is its nearest candidate. The real selection
(``dpal.selection.near_private.near_private``, the default density filter, the configuration's
ε's and noise source) runs many times on each, with fresh noise; the adversary looks at what it
releases — the noisy density histogram and the noisy support counts — at the two coordinates
the canary can move: the density of t's cluster (event A: ≥ τ_A), t's support count (event B:
≥ τ_B), and both (A ∧ B). The thresholds are chosen on a first, separate share of the runs
(``pilot_fraction``) and the bound computed on the rest, so the choice costs no validity;
Bonferroni over the three events. Claimed: ε_density for A, ε_support for B, their sum for A ∧ B
(both mechanisms are pure ε-DP, so the sum is the claimed ε at δ = 0, the δ this test uses).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dpal.core.atomic import atomic_write_text
from dpal.core.errors import DpalError
from dpal.privacy import noise_source
from dpal.privacy.audit import two_sets_epsilon
from dpal.privacy.ledger import Ledger
from dpal.selection import private_density
from dpal.selection.near_private import NearPrivateConfig, near_private, public_features

NOT_A_RELEASE = (
    "audit runs: synthetic embeddings only, no private data read; not part of any release"
)
N_LABELED = 20


@dataclass(frozen=True)
class NearPrivateAuditConfig:
    epsilon_density: float = 0.4
    epsilon_support: float = 0.6
    private_selection: str = "threshold"
    trials: int = 4000  # runs on each of D and D′
    pilot_fraction: float = 0.2
    secure_noise: bool = False
    confidence: float = 0.95
    seed: int = 0  # the synthetic embeddings (the noise is fresh)


def synthetic_sets(seed: int) -> dict[str, np.ndarray]:
    """A pool of 600 public points in 6 blobs (8-d), 300 private points from the same blobs."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (6, 8))
    public = centres[rng.integers(0, 6, 600)] + rng.normal(size=(600, 8))
    private = centres[rng.integers(0, 6, 300)] + rng.normal(size=(300, 8))
    return {"public": public, "public_unc": rng.uniform(size=600), "private": private,
            "private_unc": rng.uniform(0, 0.99, size=300)}  # fmt: skip


def _pilot_threshold(d: np.ndarray, d_prime: np.ndarray) -> float:
    """The τ whose event X ≥ τ gives the largest 90%-confidence bound on the pilot runs (a
    bound, not a ratio of estimates: a rare event with a lucky ratio does not win)."""
    best, best_tau = -1.0, float(np.median(d_prime))
    for tau in np.unique(np.concatenate([d, d_prime])):
        hits, hits_prime = int((d >= tau).sum()), int((d_prime >= tau).sum())
        bound = two_sets_epsilon(hits, len(d), hits_prime, len(d_prime), confidence=0.9)
        if bound > best:
            best, best_tau = bound, float(tau)
    return best_tau


def audit_near_private(config: NearPrivateAuditConfig, out: Path) -> dict[str, Any]:
    """Run both neighbouring sets ``config.trials`` times each → ``out``/audit.json."""
    if config.trials < 100:
        raise DpalError(f"--trials must be ≥ 100, got {config.trials}.")
    sets = synthetic_sets(config.seed)
    pub_emb = sets["public"]
    center, scale = public_features(pub_emb)
    pub = (pub_emb - center) / scale
    select = NearPrivateConfig(
        k=len(pub), n_components=4, epsilon_density=config.epsilon_density,
        epsilon_support=config.epsilon_support, private_selection=config.private_selection,
    )  # fmt: skip
    clusters = private_density.cluster_pool(
        pub, n_clusters=private_density.n_clusters_for(len(pub)), n_components=4, seed=config.seed
    )
    target = int(np.flatnonzero(clusters.labels == np.bincount(clusters.labels).argmax())[0])
    cluster = int(private_density.private_histogram(clusters, pub[target : target + 1]).argmax())
    private = {
        "D": (sets["private"], sets["private_unc"]),
        "D'": (np.vstack([sets["private"], pub_emb[target]]), np.append(sets["private_unc"], 1.0)),
    }
    rng = noise_source.numpy_noise_rng(deterministic=False, seed=0, secure=config.secure_noise)
    seen: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, (emb, unc) in private.items():
            values = np.empty((config.trials, 2))
            for i in range(config.trials):
                ledger = Ledger(Path(scratch) / f"{name}-{i}.json")
                res = near_private(pub_emb, sets["public_unc"], emb, unc, N_LABELED, config=select,
                                   ledger=ledger, rng=rng, clusters=clusters)  # fmt: skip
                assert res.density_counts is not None
                at = np.flatnonzero(res.candidates == target)
                support = res.noisy_counts[at[0]] if len(at) else -np.inf
                values[i] = res.density_counts[cluster], support
                ledger.path.unlink()
            seen[name] = values
    pilot = int(config.pilot_fraction * config.trials)
    d_pilot, p_pilot = seen["D"][:pilot], seen["D'"][:pilot]
    taus = [_pilot_threshold(d_pilot[:, j], p_pilot[:, j]) for j in (0, 1)]
    d_main, p_main = seen["D"][pilot:], seen["D'"][pilot:]
    per_event = 1 - (1 - config.confidence) / 3
    events = {
        "density count of the canary's cluster": (np.s_[:, :1], config.epsilon_density),
        "support count of the canary's public point": (np.s_[:, 1:], config.epsilon_support),
        "both": (np.s_[:, :], config.epsilon_density + config.epsilon_support),
    }
    rows = []
    for label, (cols, claimed) in events.items():
        tau = np.array(taus)[cols[1]]
        hits = int(np.all(d_main[cols] >= tau, axis=1).sum())
        hits_prime = int(np.all(p_main[cols] >= tau, axis=1).sum())
        bound = two_sets_epsilon(hits, len(d_main), hits_prime, len(p_main), confidence=per_event)
        rows.append({"event": label, "claimed_epsilon": claimed, "epsilon_lower": bound,
                     "hits_D": hits, "hits_D_prime": hits_prime,
                     "trials": len(d_main)})  # fmt: skip
    report = {
        "mechanism": "near-private",
        "method": "neighbouring private sets, Clopper–Pearson on the released counts "
        "(thresholds from separate pilot runs; Bonferroni over 3 events)",
        "claimed_epsilon": config.epsilon_density + config.epsilon_support,
        "epsilon_lower": rows[-1]["epsilon_lower"],
        "confidence": config.confidence,
        "delta": 0.0,
        "events": rows,
        "config": asdict(config),
        "noise": noise_source.source(False, config.secure_noise),
        "note": NOT_A_RELEASE,
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "audit.json", json.dumps(report, indent=1))
    atomic_write_text(out / "NOT_A_RELEASE.txt", NOT_A_RELEASE + "\n")
    return report
