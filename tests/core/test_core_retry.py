"""Backoff, jitter and Retry-After: the retry rules as tables."""

from __future__ import annotations

import doctest

import pytest
from tests.support import START

import ccflow._core.retry as retry_module
from ccflow._core.retry import RetryPolicy, is_retryable_status, parse_retry_after

NOW = START


def test_docstring_examples_hold() -> None:
    assert doctest.testmod(retry_module).failed == 0


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (504, True),
        (599, True),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (200, False),
        (None, False),
    ],
)
def test_retryable_statuses(status: int | None, retryable: bool) -> None:
    assert is_retryable_status(status) is retryable


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5", 5.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        ("Thu, 01 Jan 2026 00:00:10 GMT", 10.0),
        ("Wed, 31 Dec 2025 23:59:00 GMT", 0.0),
        # RFC 9110 section 5.6.7: the obsolete RFC 850 and asctime forms must be accepted too;
        # every HTTP date is GMT, asctime's included although it names no zone.
        ("Thursday, 01-Jan-26 00:00:20 GMT", 20.0),
        ("Thu Jan  1 00:00:30 2026", 30.0),
        ("Thu, 01 Jan 2026 00:00:40 -0000", 40.0),
        ("Fri, 31 Dec 9999 23:59:59 GMT", 253402300799.0 - NOW),  # far off: capped by delay()
        ("Sat, 01 Jan 10000 00:00:00 GMT", None),
        ("Thu, 01 Jan 2026 25:61:61 GMT", None),
        ("soon", None),
        ("-3", None),
        ("\u00b2", None),  # isdigit() is True for superscripts, float() refuses them
        ("9" * 400, None),  # not a finite number of seconds
        ("9" * 5000, None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


@pytest.mark.parametrize(
    ("jitter", "attempt", "expected"),
    [
        (1.0, 0, 0.5),
        (0.0, 0, 0.25),
        (1.0, 1, 1.0),
        (1.0, 2, 2.0),
        (0.5, 2, 1.5),
        (1.0, 10, 8.0),  # capped
        (7.0, 0, 0.5),  # a jitter source out of range is clamped
    ],
)
def test_backoff_is_exponential_with_jitter_and_capped(
    jitter: float, attempt: int, expected: float
) -> None:
    assert RetryPolicy(jitter=lambda: jitter).delay(attempt) == expected


@pytest.mark.parametrize(("retry_after", "expected"), [(3.0, 3.0), (0.0, 0.0), (3600.0, 30.0)])
def test_retry_after_replaces_backoff_up_to_the_cap(retry_after: float, expected: float) -> None:
    assert RetryPolicy(jitter=lambda: 1.0).delay(2, retry_after) == expected
