"""Which public points to label: uncertainty scores and strategies, as functions over arrays."""

from dpal.selection.scores import entropy, margin, uncertainty
from dpal.selection.strategies import (
    STRATEGIES,
    diverse_public,
    random_selection,
    top_uncertain,
)

__all__ = [
    "STRATEGIES",
    "diverse_public",
    "entropy",
    "margin",
    "random_selection",
    "top_uncertain",
    "uncertainty",
]
