"""Review of the fast paths: the header cache, the RS256 encode-and-compare verify,
AsyncJWKSCache.ready() and the verified-token cache's mirror keep the verdicts they replace."""

from __future__ import annotations

import random
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _validation_tokens import Clock, b64, b64json, make_token, rsa_jwk, rsa_key
from ccflow import TokenValidator, ValidatedToken
from ccflow._core import jwt as jwt_module
from ccflow._core.jwks import KeyAction, KeyCache, RefreshPolicy, decide, parse_jwks
from ccflow._core.jwt import parse_ascii, parse_compact, verify_signature
from ccflow.authority import Authority
from ccflow.errors import InvalidTokenError
from ccflow.jwks import AsyncJWKSCache, KeySourcePlan
from ccflow.validation import _VerifiedTokens

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
ODD = "=+/ \t!.%"
HEADERS = [
    {"alg": "RS256", "kid": "k1", "typ": "JWT"},
    {"alg": "RS256", "kid": ""},
    {"alg": "RS256"},
    {"alg": "RS256", "kid": 1},
    {"alg": "HS256", "kid": "k"},
    {"alg": "RS256", "kid": "k", "crit": []},
    {"alg": "RS256", "kid": "k", "b64": False},
    {"alg": "RS256", "kid": "k", "b64": True},
    {"alg": 5, "kid": "k"},
    {"alg": "ES256", "kid": "k"},
    {"alg": "RS384", "kid": "k", "x": [1, {"a": 2}]},
    {"kid": "k"},
    [],
]
ALGORITHM_SETS = [
    frozenset({"RS256"}),
    frozenset({"RS256", "RS384", "ES256"}),
    frozenset({"ES256"}),
]


def _outcome(token: str, algorithms: frozenset[str]) -> tuple[Any, ...]:
    try:
        p = parse_compact(token, algorithms=algorithms)
    except InvalidTokenError as exc:
        return ("refused", str(exc), exc.reason)
    return ("parsed", dict(p.header), p.claims, p.alg, p.kid, p.signing_input, p.signature)


@st.composite
def _segment(draw: Any, base: st.SearchStrategy[str]) -> str:
    chars = list(draw(base))
    for _ in range(draw(st.integers(0, 2))):
        pos = draw(st.integers(0, len(chars)))
        char = draw(st.sampled_from(list(ALPHABET + ODD)))
        if draw(st.booleans()) or not chars:
            chars.insert(pos, char)
        else:
            chars[min(pos, len(chars) - 1)] = char
    return "".join(chars)


@settings(max_examples=800, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    _segment(st.sampled_from([b64json(h) for h in HEADERS])),
    _segment(st.sampled_from([b64json({"a": 1}), b64(b"{}"), b64(b'{"a":1} '), b64(b"[]")])),
    _segment(st.binary(max_size=12).map(b64)),
    st.sampled_from(ALGORITHM_SETS),
    st.sampled_from(ALGORITHM_SETS),
)
def test_a_cached_header_gives_the_verdict_of_a_cold_parse(
    header: str, claims: str, signature: str, first: frozenset[str], second: frozenset[str]
) -> None:
    token = f"{header}.{claims}.{signature}"
    jwt_module._headers.clear()
    cold = _outcome(token, second)
    jwt_module._headers.clear()
    _outcome(token, first)  # warms the cache under another allow-list
    assert _outcome(token, second) == cold
    assert _outcome(token, second) == cold


def test_cached_header_is_read_only_and_still_meets_the_allow_list() -> None:
    token = make_token({"a": 1}, kid="k-review")
    parsed = parse_ascii(token.encode(), frozenset({"RS256"}))
    with pytest.raises(TypeError):
        parsed.header["alg"] = "none"  # type: ignore[index]
    with pytest.raises(InvalidTokenError) as info:
        parse_ascii(token.encode(), frozenset({"ES256"}))
    assert info.value.reason == "algorithm"
    assert parse_ascii(token.encode(), frozenset({"RS256"})).alg == "RS256"


@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512"])
def test_rsa_encode_and_compare_refuses_full_length_junk(alg: str) -> None:
    key = rsa_key("a")
    public = key.public_key()
    n = public.public_numbers().n
    good = make_token({"a": 1}, key=key, alg=alg)
    head, body, _ = good.split(".")
    verify_signature(parse_compact(good, algorithms=frozenset({alg})), public)
    other = make_token({"a": 2}, key=key, alg=alg).split(".")[2]
    for junk in (
        b"",
        b"\x01",
        bytes(256),
        (1).to_bytes(256, "big"),
        n.to_bytes(256, "big"),
        b"\xff" * 256,
        b"\x00" + b"\x01" * 256,
        b"\x01" * 512,
    ):
        for candidate in (b64(junk), other):
            parsed = parse_compact(f"{head}.{body}.{candidate}", algorithms=frozenset({alg}))
            with pytest.raises(InvalidTokenError) as info:
                verify_signature(parsed, public)
            assert info.value.reason == "signature"


_KEYS = parse_jwks({"keys": [rsa_jwk(rsa_key("a"), "ka")]}, algorithms=frozenset({"RS256"}))
_times = st.one_of(st.none(), st.integers(0, 200).map(float))


class _Now:
    value = 0.0

    def __call__(self) -> float:
        return self.value


_CLOCK = _Now()
_CACHE: list[AsyncJWKSCache] = []


def _jwks_cache() -> AsyncJWKSCache:
    if not _CACHE:
        _CACHE.append(
            AsyncJWKSCache(
                KeySourcePlan(jwks_uri="https://keys.test/jwks"),
                algorithms=frozenset({"RS256"}),
                clock=_CLOCK,
                http_client=httpx.AsyncClient(),
            )
        )
    return _CACHE[0]


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.booleans(),
    _times,
    _times,
    _times,
    st.builds(
        RefreshPolicy,
        ttl=st.sampled_from([0.0, 10.0, 50.0]),
        cooldown=st.sampled_from([0.0, 5.0, 30.0]),
        failure_backoff=st.sampled_from([0.0, 5.0]),
        max_stale=st.sampled_from([0.0, 20.0, 1000.0]),
    ),
    st.integers(0, 200).map(float),
    st.sampled_from(["ka", "kb"]),
)
def test_ready_returns_a_key_exactly_when_decide_says_use(
    has_keys: bool,
    fetched: float | None,
    attempted: float | None,
    retry: float | None,
    policy: RefreshPolicy,
    now: float,
    kid: str,
) -> None:
    clock, cache = _CLOCK, _jwks_cache()
    state = KeyCache(
        keys=_KEYS if has_keys else None,
        fetched_at=fetched,
        attempted_at=attempted,
        retry_at=retry,
    )
    cache._state, cache._policy, clock.value = state, policy, now
    try:
        want = decide(state, kid, now, policy)
    except AssertionError:
        return  # a state no transition produces
    got = cache.ready(kid)
    if want is KeyAction.USE:
        assert got is _KEYS.keys[kid]
    else:
        assert got is None


def test_verified_token_cache_mirror_stays_equal_and_bounded() -> None:
    cache = _VerifiedTokens(5)
    rng = random.Random(7)
    for i in range(5000):
        key = bytes([rng.randrange(12)])
        op = rng.randrange(4)
        if op < 2:
            cache[key] = i  # type: ignore[assignment]
        elif op == 2:
            cache.pop(key, None)
        elif len(cache):
            cache.popitem()
        assert len(cache) <= 5
        assert len(cache.entries) == len(cache) == cache.currsize
        assert set(cache.entries) == set(cache.keys())
        for k, v in cache.entries.items():
            assert cache[k] == v


class _Refusing(TokenValidator):
    async def validate(self, token: str) -> ValidatedToken:
        raise InvalidTokenError("refused by the subclass", reason="client")


def test_a_subclass_validate_sees_every_fresh_token() -> None:
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from ccflow import RequireRole

    authority = Authority(clock=Clock(1_800_000_000.0))
    api = authority.api("calc-api")
    validator = _Refusing(
        tenant_id=authority.tenant_id,
        authority_host=authority.host,
        audience=[api.client_id, api.identifier_uri],
        http_client=httpx.AsyncClient(transport=authority.transport()),
        clock=authority.clock,
        leeway=0,
    )
    assert validator._hot_path() is None
    app = Starlette()
    app.add_middleware(RequireRole("invokeRole", validator=validator))
    with TestClient(app) as client:
        for _ in range(2):
            answer = client.get("/", headers={"Authorization": f"Bearer {authority.mint()}"})
            assert answer.status_code == 401
            assert 'error="invalid_token"' in answer.headers["www-authenticate"]
