"""Active learning on public data (Zhao et al. 2019): select, label, fine-tune; the experiment
that compares every strategy under one ledger."""
