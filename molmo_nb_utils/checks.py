"""Checks of the arguments readers pass, each written once, each failing with what to do.

Why: a wrong ``batch_size`` or ``max_frames`` should fail at the call, in words, not an hour later
deep inside torch. ``True`` is refused where a count is expected: Python counts it as 1, a reader
who wrote it meant something else.
"""

from __future__ import annotations

import numbers
from typing import Any

__all__ = ["positive_int"]


def positive_int(value: Any, name: str) -> int:
    """``value`` as an ``int`` if it is a whole number >= 1 (not a bool); else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1 (e.g. {name}=1), got {value!r}")
    return int(value)
