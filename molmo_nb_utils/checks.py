"""Checks of the arguments readers pass, each written once, each failing with what to do.

Why: a wrong ``batch_size`` or ``max_frames`` should fail at the call, in words, not an hour later
deep inside torch. ``True`` is refused where a count is expected: Python counts it as 1, a reader
who wrote it meant something else.
"""

from __future__ import annotations

import numbers
from typing import Any

__all__ = ["positive_int", "positive_int_or_none"]


def _is_positive_int(value: Any) -> bool:
    """THE rule "a whole number >= 1": an integer (numpy's too), not a bool, at least 1."""
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and value >= 1


def positive_int(value: Any, name: str) -> int:
    """``value`` as an ``int`` if it is a whole number >= 1 (not a bool); else a ValueError naming ``name``."""
    if not _is_positive_int(value):
        raise ValueError(f"{name} must be a whole number >= 1 (e.g. {name}=1), got {value!r}")
    return int(value)


def positive_int_or_none(value: Any, name: str, none_means: str) -> int | None:
    """``None``, or ``value`` as an ``int`` if it is a whole number >= 1; the error says what None means."""
    if value is None:
        return None
    if not _is_positive_int(value):
        raise ValueError(
            f"{name} must be a whole number >= 1 (e.g. {name}=1) or None ({none_means}), got {value!r}"
        )
    return int(value)
