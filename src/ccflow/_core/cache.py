"""When a cached token is served, when it is refreshed, and what happens if refreshing fails.

A token is *fresh* until ``refresh_at``, *stale but usable* until ``expires_on``, then
*expired*. ``refresh_at`` is, in order of preference:

- ``now + refresh_in`` when the server sent ``refresh_in`` (Azure AD does for long tokens);
- half-life (``now + expires_in / 2``) for tokens living 2 hours or more, as msal does;
- ``expires_on - margin`` otherwise (margin 300 s by default), but never sooner than half-life,
  so a short-lived token is not fetched again on every call.

A failed refresh of a still-usable token does not raise: the token keeps being served and the
refresh is tried again ``retry_later`` seconds on, or later when the server's ``Retry-After``
asks for longer (never after the token expires)::

    >>> policy = RefreshPolicy(margin=300)
    >>> entry = policy.entry(AccessToken("t", 4600, scopes=("s",)), now=1000, expires_in=3600)
    >>> entry.refresh_at, policy.state(entry, 4400) is TokenState.STALE
    (4300.0, True)
    >>> policy.after_failure(entry, now=4400).refresh_at
    4430.0
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ccflow._core.tokens import AccessToken

__all__ = [
    "FORCED_REFRESH_INTERVAL",
    "CacheEntry",
    "RefreshPolicy",
    "TokenState",
    "may_force_refresh",
]

HALF_LIFE_FROM = 7200
FORCED_REFRESH_INTERVAL = 30.0
"""Seconds between two forced refreshes (a 401 from an API) of the same cached token key."""


def may_force_refresh(last_forced: float | None, now: float) -> bool:
    """Whether an API's 401 may drop the cached token and fetch another.

    At most once per :data:`FORCED_REFRESH_INTERVAL` per key: an API that answers 401 to every
    token (wrong audience, missing role) would otherwise turn each of its requests into a POST
    to the token endpoint, until the authority throttles the client and every caller fails.
    Within the interval the cached token *is* the fresh one, so asking again cannot help.
    A last refresh later than ``now`` means the clock was stepped back (NTP): the interval is
    over rather than stretched by the step, which would leave a refused token in use::

        >>> [may_force_refresh(last, now=1000) for last in (None, 990, 970, 4600)]
        [True, False, True, True]
    """
    return last_forced is None or now - last_forced >= FORCED_REFRESH_INTERVAL or now < last_forced


class TokenState(enum.Enum):
    """Where a cache entry stands at a given ``now``."""

    MISSING = "missing"
    FRESH = "fresh"  # serve it
    STALE = "stale"  # serve it, but one caller should refresh it
    EXPIRED = "expired"  # must fetch before answering


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """A cached token and the moment it should be refreshed (Unix seconds)."""

    token: AccessToken
    refresh_at: float


@dataclass(frozen=True, slots=True)
class RefreshPolicy:
    """The refresh rules above; ``margin`` and ``retry_later`` in seconds."""

    margin: float = 300.0
    retry_later: float = 30.0

    def entry(
        self, token: AccessToken, *, now: float, expires_in: int, refresh_in: int | None = None
    ) -> CacheEntry:
        """The cache entry for a freshly fetched token."""
        half_life = now + expires_in / 2.0
        if refresh_in is not None and 0 < refresh_in < expires_in:
            refresh_at = now + refresh_in
        elif expires_in >= HALF_LIFE_FROM:
            refresh_at = half_life
        else:
            refresh_at = max(token.expires_on - self.margin, half_life)
        return CacheEntry(token, float(min(refresh_at, token.expires_on)))

    @staticmethod
    def state(entry: CacheEntry | None, now: float) -> TokenState:
        """Classify ``entry`` at ``now``."""
        if entry is None:
            return TokenState.MISSING
        if now < entry.refresh_at:
            return TokenState.FRESH
        if now < entry.token.expires_on:
            return TokenState.STALE
        return TokenState.EXPIRED

    def after_failure(
        self, entry: CacheEntry | None, *, now: float, retry_after: float | None = None
    ) -> CacheEntry | None:
        """After a failed fetch: the entry to keep serving (refresh postponed), or ``None`` when
        nothing usable is cached and the error must reach the caller."""
        if entry is None or now >= entry.token.expires_on:
            return None
        # Retry-After is a floor, not a schedule: see docs/caller.md, "Caching and refresh".
        wait = self.retry_later if retry_after is None else max(retry_after, self.retry_later)
        return CacheEntry(entry.token, float(min(now + wait, entry.token.expires_on)))
