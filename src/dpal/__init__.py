"""dpal: differentially private image classifiers made accurate with public data.

Every mechanism that reads private data is recorded in a run's privacy ledger
(:mod:`dpal.privacy.ledger`); the ε it reports comes from ``dp_accounting``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dpal")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
