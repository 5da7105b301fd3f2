"""The exception users see for bad input, and the warning for input that works but may not mean
what the user thinks: each message says what to change."""

import warnings


class DpalError(ValueError):
    """Invalid input or state; the message names the argument and a valid alternative."""


class DpalWarning(UserWarning):
    """Input that runs, but weakens or hides something the user relies on (δ ≥ 1/N, q = 1, …)."""


def warn(message: str) -> None:
    """Warn once per call site; the CLI prints it as one line, ``dpal: warning: …``."""
    warnings.warn(message, DpalWarning, stacklevel=2)
