"""When to try a token request again, and how long to wait first.

Transient failures (connection errors, timeouts, 429, 5xx) are retried a bounded number of
times with exponential backoff and jitter; a server's ``Retry-After`` (seconds or an HTTP date)
wins over the backoff, up to a cap so a hostile or confused server cannot park a caller::

    >>> policy = RetryPolicy(max_retries=3, jitter=lambda: 1.0)
    >>> [policy.delay(n) for n in range(4)]
    [0.5, 1.0, 2.0, 4.0]
    >>> policy.delay(0, retry_after=120.0)
    30.0
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

__all__ = ["RetryPolicy", "is_retryable_status", "parse_retry_after"]


def is_retryable_status(status: int | None) -> bool:
    """429 and every 5xx are worth another try; OAuth 4xx answers (bad secret...) are not."""
    return status is not None and (status == 429 or 500 <= status <= 599)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from ``now``: ``"5"`` -> 5.0, an HTTP date -> the gap.

    The three HTTP date forms of RFC 9110 are read as GMT. Dates in the past give 0; garbage
    (negative or fractional seconds, unknown formats) gives ``None`` (the backoff applies then).
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        # ASCII only: "²".isdigit() is True but float() refuses it. A number too long to be
        # finite seconds is garbage, not "wait forever".
        if not value.isascii() or len(value) > 18:
            return None
        return float(value)
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:
            # asctime dates name no zone and "-0000" means "unknown": HTTP dates are all GMT
            # (RFC 9110 section 5.6.7), and the asctime form must be accepted.
            when = when.replace(tzinfo=datetime.UTC)
        return max(0.0, when.timestamp() - now)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded retries: ``max_retries`` extra attempts after the first.

    ``delay(n)`` before retry ``n`` (0-based) is ``base * 2**n`` capped at ``max_backoff``,
    scaled by ``0.5 + jitter()/2`` (so never less than half: "equal jitter", which spreads
    callers out without retrying instantly). ``jitter`` returns a float in [0, 1]; inject a
    constant in tests. ``Retry-After`` replaces the backoff, capped at ``max_retry_after``.
    """

    max_retries: int = 3
    base: float = 0.5
    max_backoff: float = 8.0
    max_retry_after: float = 30.0
    jitter: Callable[[], float] = random.random

    def retries(self, status: int | None) -> bool:
        """Whether an answer with ``status`` is worth another try (429 and 5xx here; a
        managed identity's policy adds more)."""
        return is_retryable_status(status)

    def delay(
        self, attempt: int, retry_after: float | None = None, status: int | None = None
    ) -> float:
        """Seconds to wait before retry number ``attempt`` (0 for the first retry) after an
        answer with ``status`` (``None`` for no answer)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        return self.backoff(self.base, attempt, self.max_backoff)

    def backoff(self, base: float, attempt: int, cap: float) -> float:
        """``base * 2**attempt`` capped at ``cap``, with equal jitter."""
        backoff = min(base * (2.0**attempt), cap)
        return backoff * (0.5 + min(max(self.jitter(), 0.0), 1.0) / 2.0)
