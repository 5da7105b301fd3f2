"""Empirical privacy audits (``dpal audit``): lower bounds on ε from attacks on the mechanisms
dpal runs, on synthetic data only — they read no private data and release no model."""
