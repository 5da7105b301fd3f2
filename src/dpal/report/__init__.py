"""A run's report for a privacy reviewer (markdown + HTML)."""

from dpal.report.write import write_report

__all__ = ["write_report"]
