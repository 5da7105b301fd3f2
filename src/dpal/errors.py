"""The one exception type users see for bad input: its message says what to change."""


class DpalError(ValueError):
    """Invalid input or state; the message names the argument and a valid alternative."""
