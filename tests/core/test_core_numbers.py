"""is_seconds: what a number of seconds in a setting may be."""

from __future__ import annotations

import doctest

import pytest

from ccflow._core import numbers


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (0, True),
        (1.5, True),
        (-3, True),  # the sign is each setting's own rule
        (True, False),
        (float("nan"), False),
        (float("inf"), False),
        ("1", False),
        (None, False),
    ],
)
def test_is_seconds(value: object, ok: bool) -> None:
    assert numbers.is_seconds(value) is ok


def test_doctest() -> None:
    assert doctest.testmod(numbers).failed == 0
