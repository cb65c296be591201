"""ccflow._core.assertions: when a held client assertion is renewed, reading an assertion's
expiry without verifying it, and the claims and header of a certificate's assertion."""

from __future__ import annotations

import base64
import doctest

import pytest
from tests.support import START, jwt_with

import ccflow._core.assertions as core_assertions
from ccflow._core.assertions import (
    HeldAssertion,
    assertion_claims,
    assertion_header,
    needs_new_assertion,
    unverified_expiry,
)

NOW = START
ENDPOINT = "https://login.test/t/oauth2/v2.0/token"


def test_core_docstring_examples_hold() -> None:
    assert doctest.testmod(core_assertions).failed == 0


@pytest.mark.parametrize(
    ("held", "now", "max_age", "expected"),
    [
        (None, NOW, None, True),
        (HeldAssertion("x", NOW + 600, NOW), NOW, None, False),
        (HeldAssertion("x", NOW + 600, NOW), NOW + 539, None, False),
        (HeldAssertion("x", NOW + 600, NOW), NOW + 540, None, True),
        (HeldAssertion("x", NOW + 600, NOW), NOW + 900, None, True),
        (HeldAssertion("x", None, NOW), NOW, None, True),
        (HeldAssertion("x", None, NOW), NOW + 299, 300, False),
        (HeldAssertion("x", None, NOW), NOW + 300, 300, True),
        (HeldAssertion("x", NOW + 3600, NOW), NOW + 299, 300, False),
        (HeldAssertion("x", NOW + 3600, NOW), NOW + 300, 300, True),
        (HeldAssertion("x", NOW + 100, NOW), NOW + 41, 300, True),
    ],
)
def test_needs_new_assertion(
    held: HeldAssertion | None, now: float, max_age: float | None, expected: bool
) -> None:
    assert needs_new_assertion(held, now=now, max_age=max_age) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (jwt_with(NOW), NOW),
        (jwt_with(NOW + 0.5), NOW + 0.5),
        (jwt_with(None), None),
        ("a.b", None),
        ("a.!!!.c", None),
        ("a." + base64.urlsafe_b64encode(b"[1]").decode() + ".c", None),
        ("a." + base64.urlsafe_b64encode(b'{"exp": true}').decode() + ".c", None),
        ("a." + base64.urlsafe_b64encode(b'{"exp": "1"}').decode() + ".c", None),
    ],
)
def test_unverified_expiry(value: str, expected: float | None) -> None:
    assert unverified_expiry(value) == expected


def test_claims_and_header_values() -> None:
    claims = assertion_claims(client_id="c", token_endpoint=ENDPOINT, now=NOW, jti="j")
    assert claims["exp"] - claims["iat"] == 600
    assert assertion_header("RS256", x5t="a", x5t_s256="b") == {
        "alg": "RS256",
        "typ": "JWT",
        "x5t": "a",
    }


@pytest.mark.parametrize(
    "payload", ['{"exp": 1' + "0" * 400 + "}", "[" * 5000 + "]" * 5000], ids=["huge-exp", "deep"]
)
def test_unverified_expiry_of_an_odd_assertion_is_unknown_not_an_exception(payload: str) -> None:
    # OverflowError / RecursionError escaped, so a FederatedTokenFile caught holding such a
    # file failed with an "unexpected" wrapped error instead of reading it as opaque.
    segment = base64.urlsafe_b64encode(payload.encode()).rstrip(b"=").decode()
    assert unverified_expiry(f"e30.{segment}.sig") is None
