"""End-to-end recipes that join data, training, selection and the ledger."""
