"""The method families side by side: ``active_learning``, ``adamix``, ``randp`` — each its
recipe and its runner cells, nothing of the command line."""
