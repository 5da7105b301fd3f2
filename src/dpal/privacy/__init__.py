"""Privacy accounting, the run's ledger and the noise mechanisms. No training code here."""
