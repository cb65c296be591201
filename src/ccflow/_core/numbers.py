"""What a number of seconds in a setting may be."""

from __future__ import annotations

import math
from typing import TypeGuard

__all__ = ["is_seconds"]


def is_seconds(value: object) -> TypeGuard[int | float]:
    """Whether ``value`` is a finite ``int`` or ``float`` (a ``bool`` is not a number here).

    >>> is_seconds(1.5), is_seconds(float("nan")), is_seconds(True)
    (True, False, False)
    """
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
