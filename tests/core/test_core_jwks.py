"""JWKS parsing (which keys are usable) and the refetch policy, as pure decisions."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.support import START, b64, ec_jwk, ec_key, rsa_jwk, rsa_key

from ccflow._core.jwks import (
    JWKSError,
    KeyAction,
    KeyCache,
    KeySet,
    RefreshPolicy,
    decide,
    parse_jwks,
)
from ccflow.errors import ConfigurationError

RS256 = frozenset({"RS256"})


def test_usable_rsa_key_is_loaded_by_kid() -> None:
    keys = parse_jwks({"keys": [rsa_jwk(rsa_key(), "k1")]}, algorithms=RS256)
    key = keys.get("k1")
    assert key is not None
    assert key.algorithms == RS256
    assert key.public_key.public_numbers() == rsa_key().public_key().public_numbers()
    assert keys.get("k2") is None


def test_document_may_be_bytes() -> None:
    doc = json.dumps({"keys": [rsa_jwk(rsa_key(), "k1")]}).encode()
    assert set(parse_jwks(doc, algorithms=RS256).keys) == {"k1"}


def test_ec_key_is_usable_for_its_curve_algorithm() -> None:
    doc = {"keys": [ec_jwk(ec_key(), "e1")]}
    assert parse_jwks(doc, algorithms=frozenset({"ES256", "RS256"})).keys["e1"].algorithms == {
        "ES256"
    }


def _without(jwk: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in jwk.items() if k != name}


GOOD = rsa_jwk(rsa_key(), "good")
SKIPPED = {
    "use enc": {**GOOD, "kid": "x", "use": "enc"},
    "key_ops without verify": {**GOOD, "kid": "x", "key_ops": ["encrypt"]},
    "key_ops not a list": {**GOOD, "kid": "x", "key_ops": "verify"},
    "alg not allowed": {**GOOD, "kid": "x", "alg": "RS512"},
    "alg not a string": {**GOOD, "kid": "x", "alg": 256},
    "RSA 1024 bits": rsa_jwk(rsa_key("small", 1024), "x"),
    "kid missing": _without({**GOOD}, "kid"),
    "kid not a string": {**GOOD, "kid": 7},
    "kty oct": {"kty": "oct", "kid": "x", "k": b64(b"secret")},
    "kty missing": _without({**GOOD, "kid": "x"}, "kty"),
    "n missing": _without({**GOOD, "kid": "x"}, "n"),
    "n not base64": {**GOOD, "kid": "x", "n": "!!!"},
    "even exponent": {**GOOD, "kid": "x", "e": b64(b"\x01\x00\x00")},
    "EC key when only RS256 allowed": ec_jwk(ec_key(), "x"),
    "EC unknown curve": {**ec_jwk(ec_key(), "x"), "crv": "P-192"},
    "EC point not on curve": {**ec_jwk(ec_key(), "x"), "y": b64(b"\x01" * 32)},
    "EC crv a list": {**ec_jwk(ec_key(), "x"), "crv": ["P-256"]},
    "EC crv an object": {**ec_jwk(ec_key(), "x"), "crv": {"name": "P-256"}},
    "not an object": "key",
    "duplicate kid": {**rsa_jwk(rsa_key("other"), "good")},
}


@pytest.mark.parametrize("entry", SKIPPED.values(), ids=SKIPPED.keys())
def test_unusable_keys_are_skipped_and_counted(entry: Any) -> None:
    keys = parse_jwks({"keys": [GOOD, entry]}, algorithms=RS256)
    assert set(keys.keys) == {"good"}
    assert keys.skipped == 1
    assert keys.keys["good"].public_key.public_numbers() == rsa_key().public_key().public_numbers()


def test_key_alg_narrows_usable_algorithms() -> None:
    doc = {"keys": [{**GOOD, "alg": "PS256"}]}
    keys = parse_jwks(doc, algorithms=frozenset({"RS256", "PS256"}))
    assert keys.keys["good"].algorithms == {"PS256"}


@pytest.mark.parametrize("document", [b"not json", b"[]", {"keys": "x"}, {}, b"[" * 10000, "null"])
def test_unusable_documents_raise(document: Any) -> None:
    with pytest.raises(JWKSError):
        parse_jwks(document, algorithms=RS256)


@pytest.mark.parametrize(
    ("document", "why"),
    [
        (b"not json", "not valid JSON"),
        (b"[" * 10000, "not valid JSON"),
        (b"[]", "not a JSON object"),
    ],
)
def test_a_document_that_is_no_json_object_is_refused_by_its_name(document: Any, why: str) -> None:
    with pytest.raises(JWKSError, match=f"^the JWKS document is {why}$"):
        parse_jwks(document, algorithms=RS256)


# --- refetch policy -------------------------------------------------------------------------

POLICY = RefreshPolicy(ttl=100, cooldown=30, failure_backoff=5, max_stale=1000)
KEYS = KeySet(keys=parse_jwks({"keys": [GOOD]}, algorithms=RS256).keys)
T0 = START
WARM = KeyCache().fetched(KEYS, T0)
FAILED_COLD = KeyCache().failed(T0, POLICY)
FAILED_WARM = WARM.failed(T0 + 200, POLICY)
FAILED_FRESH = WARM.failed(T0 + 10, POLICY)  # an unknown-kid refetch failed; keys still fresh


@pytest.mark.parametrize(
    ("state", "kid", "now"),
    [
        (WARM, "good", T0),
        (WARM, "good", T0 + 99.9),
        (FAILED_FRESH, "good", T0 + 11),  # fresh keys serve whatever the backoff
    ],
)
def test_fresh_keys_holding_the_kid_are_used_whatever_the_flags(
    state: KeyCache, kid: str, now: float
) -> None:
    for may_fetch in (True, False):
        for fetching in (True, False):
            action = decide(state, kid, now, POLICY, may_fetch=may_fetch, fetching=fetching)
            assert action is KeyAction.USE


DECISIONS: dict[str, tuple[KeyCache, str, float, bool, KeyAction]] = {
    "cold: fetch": (KeyCache(), "good", T0, True, KeyAction.FETCH),
    "cold, no fetch allowed: unavailable": (KeyCache(), "good", T0, False, KeyAction.UNAVAILABLE),
    "fresh known kid: use": (WARM, "good", T0 + 99, True, KeyAction.USE),
    "ttl passed: fetch": (WARM, "good", T0 + 100, True, KeyAction.FETCH),
    "unknown kid within cooldown: unknown": (WARM, "new", T0 + 29, True, KeyAction.UNKNOWN),
    "unknown kid after cooldown: fetch": (WARM, "new", T0 + 30, True, KeyAction.FETCH),
    "cold failure within backoff: unavailable": (
        FAILED_COLD,
        "good",
        T0 + 4,
        True,
        KeyAction.UNAVAILABLE,
    ),
    "cold failure after backoff: fetch": (FAILED_COLD, "good", T0 + 5, True, KeyAction.FETCH),
    "warm failure within backoff: stale key used": (
        FAILED_WARM,
        "good",
        T0 + 201,
        True,
        KeyAction.USE,
    ),
    "warm failure, unknown kid within backoff: unavailable": (
        FAILED_WARM,
        "new",
        T0 + 201,
        True,
        KeyAction.UNAVAILABLE,
    ),
    "fresh keys, failed refetch, unknown kid within cooldown: unavailable": (
        FAILED_FRESH,
        "new",
        T0 + 15,
        True,
        KeyAction.UNAVAILABLE,
    ),
    "fresh keys, failed refetch, unknown kid after cooldown: fetch": (
        FAILED_FRESH,
        "new",
        T0 + 40,
        True,
        KeyAction.FETCH,
    ),
    "fresh keys, failed refetch, known kid: use": (
        FAILED_FRESH,
        "good",
        T0 + 15,
        True,
        KeyAction.USE,
    ),
    "after a success, unknown kid: unknown": (WARM, "new", T0 + 1, False, KeyAction.UNKNOWN),
    "after a fetch, stale but within max_stale: use": (
        FAILED_WARM,
        "good",
        T0 + 1100,
        False,
        KeyAction.USE,
    ),
    "beyond max_stale: unavailable": (FAILED_WARM, "good", T0 + 1101, False, KeyAction.UNAVAILABLE),
}


@pytest.mark.parametrize(
    ("state", "kid", "now", "may_fetch", "action"), DECISIONS.values(), ids=DECISIONS.keys()
)
def test_refetch_decisions(
    state: KeyCache, kid: str, now: float, may_fetch: bool, action: KeyAction
) -> None:
    assert decide(state, kid, now, POLICY, may_fetch=may_fetch) is action


FETCHING: dict[str, tuple[KeyCache, str, float, KeyAction]] = {
    "ttl passed, known kid: use now": (WARM, "good", T0 + 100, KeyAction.USE),
    "ttl passed, unknown kid: wait for the fetch": (WARM, "new", T0 + 100, KeyAction.FETCH),
    "beyond max_stale: wait for the fetch": (WARM, "good", T0 + 1101, KeyAction.FETCH),
    "cold: wait for the fetch": (KeyCache(), "good", T0, KeyAction.FETCH),
}


@pytest.mark.parametrize(("state", "kid", "now", "action"), FETCHING.values(), ids=FETCHING.keys())
def test_while_a_fetch_is_in_flight_a_usable_cached_key_serves_at_once(
    state: KeyCache, kid: str, now: float, action: KeyAction
) -> None:
    assert decide(state, kid, now, POLICY, fetching=True) is action
    assert decide(state, kid, now, POLICY) is KeyAction.FETCH  # nobody fetching: fetch


def test_failure_keeps_old_keys() -> None:
    assert FAILED_WARM.keys is KEYS
    assert FAILED_WARM.fetched_at == T0


def test_retry_after_header_extends_backoff_within_a_bound() -> None:
    assert KeyCache().failed(T0, POLICY, retry_after=20).retry_at == T0 + 20
    assert KeyCache().failed(T0, POLICY, retry_after=10**9).retry_at == T0 + 300
    assert KeyCache().failed(T0, POLICY, retry_after=1).retry_at == T0 + 5


def test_retry_after_seconds_for_the_503() -> None:
    assert FAILED_COLD.retry_after(T0 + 0.5, POLICY) == 5
    assert FAILED_COLD.retry_after(T0 + 4.9, POLICY) == 1
    assert FAILED_COLD.retry_after(T0 + 50, POLICY) == 1


def test_retry_after_for_an_unknown_kid_with_fresh_keys_waits_for_the_cooldown() -> None:
    # The failed unknown-kid refetch at T0 + 10 backs off 5 s, but with fresh keys the next
    # refetch for that kid comes only after the 30 s cooldown: Retry-After said 1 meanwhile.
    now = T0 + 20
    assert decide(FAILED_FRESH, "new", now, POLICY) is KeyAction.UNAVAILABLE
    assert FAILED_FRESH.retry_after(now, POLICY) == 20
    assert decide(FAILED_FRESH, "new", now + 19.5, POLICY) is KeyAction.UNAVAILABLE
    assert decide(FAILED_FRESH, "new", now + 20, POLICY) is KeyAction.FETCH


def test_default_cooldown_is_at_most_30_seconds() -> None:
    assert RefreshPolicy().cooldown <= 30


@pytest.mark.parametrize("field", ["ttl", "cooldown", "failure_backoff", "max_stale"])
@pytest.mark.parametrize("value", [-1, float("nan"), "5", True])
def test_policy_rejects_bad_durations(field: str, value: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        RefreshPolicy(**{field: value})
    assert info.value.setting == field


def test_jwks_decide_after_the_clock_stepped_back() -> None:
    policy = RefreshPolicy(ttl=3600, cooldown=30, failure_backoff=5)
    t = 100_000.0
    cold_failure = KeyCache().failed(t, policy)
    # An hour earlier by the new clock: the backoff must not last an hour.
    assert decide(cold_failure, "k", t - 3600, policy) is KeyAction.FETCH
    fresh = KeyCache().fetched(KeySet(keys={}), t)
    # A kid the keys lack: the unknown-kid cooldown must not last an hour either.
    assert decide(fresh, "new", t - 3600, policy) is KeyAction.FETCH
