"""Refresh rules: margin, refresh_in, half-life, serving a valid token after a failed refresh."""

from __future__ import annotations

import doctest

import pytest
from tests.support import START

import ccflow._core.cache as cache_module
from ccflow._core.cache import (
    FORCED_REFRESH_INTERVAL,
    CacheEntry,
    RefreshPolicy,
    TokenState,
    may_force_refresh,
)
from ccflow._core.tokens import AccessToken

NOW = START


def entry_for(expires_in: int, refresh_in: int | None = None, margin: float = 300) -> CacheEntry:
    token = AccessToken("t", int(NOW) + expires_in, scopes=("s",))
    return RefreshPolicy(margin=margin).entry(
        token, now=NOW, expires_in=expires_in, refresh_in=refresh_in
    )


def test_docstring_examples_hold() -> None:
    assert doctest.testmod(cache_module).failed == 0


@pytest.mark.parametrize(
    ("expires_in", "refresh_in", "margin", "refresh_after"),
    [
        (3599, None, 300, 3299),  # margin
        (3599, None, 600, 2999),  # configurable margin
        (3599, None, 0, 3599),
        (7200, None, 300, 3600),  # >= 2 h: half-life
        (86399, None, 300, 43199.5),
        (86399, 3600, 300, 3600),  # refresh_in wins
        (3599, 1000, 300, 1000),
        (3599, 5000, 300, 3299),  # refresh_in beyond expiry is ignored
        (400, None, 300, 200),  # margin would leave < half the life: half-life instead
        (60, None, 300, 30),
    ],
)
def test_refresh_time(
    expires_in: int, refresh_in: int | None, margin: float, refresh_after: float
) -> None:
    assert entry_for(expires_in, refresh_in, margin).refresh_at == NOW + refresh_after


@pytest.mark.parametrize(
    ("offset", "state"),
    [
        (0, TokenState.FRESH),
        (3298, TokenState.FRESH),
        (3299, TokenState.STALE),
        (3598, TokenState.STALE),
        (3599, TokenState.EXPIRED),
        (10_000, TokenState.EXPIRED),
    ],
)
def test_states(offset: float, state: TokenState) -> None:
    assert RefreshPolicy.state(entry_for(3599), NOW + offset) is state


def test_missing_entry() -> None:
    assert RefreshPolicy.state(None, NOW) is TokenState.MISSING


def test_failed_refresh_of_a_valid_token_postpones_the_refresh() -> None:
    policy = RefreshPolicy(retry_later=30)
    kept = policy.after_failure(entry_for(3599), now=NOW + 3300)
    assert kept is not None
    assert kept.token.token == "t"
    assert kept.refresh_at == NOW + 3330
    assert RefreshPolicy.state(kept, NOW + 3301) is TokenState.FRESH
    assert RefreshPolicy.state(kept, NOW + 3330) is TokenState.STALE


def test_failed_refresh_honours_retry_after() -> None:
    kept = RefreshPolicy().after_failure(entry_for(3599), now=NOW + 3300, retry_after=120)
    assert kept is not None
    assert kept.refresh_at == NOW + 3420


@pytest.mark.parametrize(("retry_after", "wait"), [(7, 30), (0, 30), (30, 30), (31, 31)])
def test_a_short_retry_after_does_not_shorten_the_postponement(
    retry_after: float, wait: float
) -> None:
    kept = RefreshPolicy(retry_later=30).after_failure(
        entry_for(3599), now=NOW + 3300, retry_after=retry_after
    )
    assert kept is not None
    assert kept.refresh_at == NOW + 3300 + wait


def test_postponed_refresh_never_outlives_the_token() -> None:
    kept = RefreshPolicy(retry_later=30).after_failure(entry_for(3599), now=NOW + 3590)
    assert kept is not None
    assert kept.refresh_at == NOW + 3599


@pytest.mark.parametrize("entry", [None, entry_for(3599)])
def test_failure_without_a_usable_token_gives_nothing_to_serve(entry: CacheEntry | None) -> None:
    assert RefreshPolicy().after_failure(entry, now=NOW + 3599) is None


@pytest.mark.parametrize(
    ("last", "allowed"),
    [
        (None, True),
        (NOW, False),
        (NOW - FORCED_REFRESH_INTERVAL + 1, False),
        (NOW - FORCED_REFRESH_INTERVAL, True),
    ],
)
def test_a_forced_refresh_at_most_once_per_interval(last: float | None, allowed: bool) -> None:
    assert may_force_refresh(last, NOW) is allowed


def test_a_clock_stepped_back_does_not_block_forced_refreshes() -> None:
    # The last forced refresh "happened" an hour in the future of the new clock.
    assert may_force_refresh(10_000.0, now=10_000.0 - 3600)
