"""Buying labels for selected public points: an oracle for experiments, files for people."""

from dpal.labeling.files import export_for_labeling, import_labels
from dpal.labeling.oracle import REJECTED, Oracle

__all__ = ["REJECTED", "Oracle", "export_for_labeling", "import_labels"]
