"""TokenValidator.cached: the synchronous cache-hit path, and the verified-token cache's promises
(bounded, keyed by a SHA-256 digest, never past exp), on the local authority with a fake clock."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest

from _validation_tokens import Clock
from ccflow import TokenValidator
from ccflow.authority import Authority
from ccflow.errors import InvalidTokenError

pytestmark = pytest.mark.anyio

T0 = 1_800_000_000.0


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def authority(clock: Clock) -> Authority:
    return Authority(clock=clock)


def validator_for(authority: Authority, clock: Clock, **options: Any) -> TokenValidator:
    api = authority.api("calc-api")
    settings: dict[str, Any] = {
        "tenant_id": authority.tenant_id,
        "authority_host": authority.host,
        "audience": [api.client_id, api.identifier_uri],
        "http_client": httpx.AsyncClient(transport=authority.transport()),
        "clock": clock,
        "leeway": 0,
    }
    settings.update(options)
    return TokenValidator(**settings)


async def test_unknown_token_is_not_cached(authority: Authority, clock: Clock) -> None:
    validator = validator_for(authority, clock)
    assert validator.cached(authority.mint()) is None


@pytest.mark.parametrize("as_bytes", [False, True], ids=["str", "bytes"])
async def test_validated_token_is_served_by_cached(
    authority: Authority, clock: Clock, as_bytes: bool
) -> None:
    validator = validator_for(authority, clock)
    token = authority.mint()
    verdict = await validator.validate(token)
    assert validator.cached(token.encode() if as_bytes else token) is verdict


@pytest.mark.parametrize(
    ("offset", "served"),
    [(-1.0, True), (-0.001, True), (0.0, False), (0.001, False), (1.0, False), (3600, False)],
)
async def test_cached_never_serves_an_entry_past_exp(
    authority: Authority, clock: Clock, offset: float, served: bool
) -> None:
    validator = validator_for(authority, clock)
    token = authority.mint(lifetime=100)
    verdict = await validator.validate(token)
    clock.now = verdict.expires_on + offset
    assert (validator.cached(token) is verdict) is served


async def test_expired_entry_is_dropped_and_validate_refuses(
    authority: Authority, clock: Clock
) -> None:
    validator = validator_for(authority, clock)
    token = authority.mint(lifetime=100)
    await validator.validate(token)
    clock.advance(100)
    assert validator.cached(token) is None
    clock.now = T0  # even with the clock back, the entry is gone: it was dropped when met
    assert validator.cached(token) is None
    clock.advance(100)
    with pytest.raises(InvalidTokenError) as info:
        await validator.validate(token)
    assert info.value.reason == "expired"


async def test_refused_token_is_never_cached(authority: Authority, clock: Clock) -> None:
    validator = validator_for(authority, clock)
    token = authority.mint(claims={"aud": "api://other"})
    with pytest.raises(InvalidTokenError):
        await validator.validate(token)
    assert validator.cached(token) is None


async def test_tampered_token_misses(authority: Authority, clock: Clock) -> None:
    validator = validator_for(authority, clock)
    token = authority.mint()
    await validator.validate(token)
    head, claims, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    assert validator.cached(f"{head}.{claims}.{flipped}") is None


async def test_cached_with_the_cache_disabled_is_none(authority: Authority, clock: Clock) -> None:
    validator = validator_for(authority, clock, cache_size=0)
    token = authority.mint()
    await validator.validate(token)
    assert validator.cached(token) is None


@pytest.mark.parametrize(
    "value", ["", "x" * (16 * 1024 + 1), "é.é.é", b"\xff.\xfe.\xfd", 42, None], ids=repr
)
async def test_cached_never_raises_on_odd_input(
    authority: Authority, clock: Clock, value: Any
) -> None:
    validator = validator_for(authority, clock)
    await validator.validate(authority.mint())
    assert validator.cached(value) is None


async def test_cache_stays_bounded_and_evicts_the_oldest(
    authority: Authority, clock: Clock
) -> None:
    validator = validator_for(authority, clock, cache_size=3)
    tokens = [authority.mint(claims={"uti": f"t{i}"}) for i in range(10)]
    for token in tokens:
        await validator.validate(token)
    assert [validator.cached(t) is not None for t in tokens] == [False] * 7 + [True] * 3
    assert validator._cache is not None
    assert len(validator._cache) == 3
    assert validator._entries is not None
    assert len(validator._entries) == 3


async def test_clearing_the_cache_clears_what_the_hot_path_reads(
    authority: Authority, clock: Clock
) -> None:
    validator = validator_for(authority, clock)
    token = authority.mint()
    await validator.validate(token)
    assert validator.cached(token) is not None
    assert validator._cache is not None
    validator._cache.clear()
    assert validator.cached(token) is None
    assert validator._entries == {}


async def test_eviction_pops_the_oldest_from_both_views(authority: Authority, clock: Clock) -> None:
    validator = validator_for(authority, clock, cache_size=2)
    tokens = [authority.mint(claims={"uti": f"t{i}"}) for i in range(3)]
    for token in tokens[:2]:
        await validator.validate(token)
    cache = validator._cache
    assert cache is not None
    first = hashlib.sha256(tokens[0].encode()).digest()
    key, verdict = cache.popitem()
    assert key == first
    assert verdict.expires_on > clock()
    assert validator.cached(tokens[0]) is None
    assert validator.cached(tokens[1]) is not None
    cache.popitem()
    with pytest.raises(KeyError):
        cache.popitem()
    assert validator._entries == {}


async def test_cache_is_keyed_by_the_sha256_digest_not_the_token(
    authority: Authority, clock: Clock
) -> None:
    validator = validator_for(authority, clock)
    token = authority.mint()
    await validator.validate(token)
    digest = hashlib.sha256(token.encode()).digest()
    assert validator._cache is not None
    assert list(validator._cache) == [digest]
    assert validator._entries is not None
    assert list(validator._entries) == [digest]


async def test_a_token_accepted_only_within_the_leeway_does_not_evict_a_live_entry(
    authority: Authority, clock: Clock
) -> None:
    validator = validator_for(authority, clock, leeway=60, cache_size=1)
    live = authority.mint(lifetime=3600)
    await validator.validate(live)
    late = authority.mint(lifetime=100)
    clock.advance(130)  # past its exp, inside the leeway: valid, but nothing to cache
    assert (await validator.validate(late)).client_id
    assert validator.cached(live) is not None
