"""Review round on concurrency and faults: clocks that jump, races between a 401 and the
callers sharing a fetch, and key fetching. Every wait is bounded."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from tests._caller import FakeClock, sync_client

from ccflow._core.cache import may_force_refresh
from ccflow._core.jwks import KeyAction, KeyCache, KeySet, RefreshPolicy, decide
from ccflow.authority import Authority, Fault
from ccflow.errors import KeysUnavailableError
from ccflow.jwks import AsyncJWKSCache, KeySourcePlan

TIMEOUT = 10.0
API = "https://calc.test/add"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def authority(clock: FakeClock) -> Authority:
    return Authority(clock=lambda: clock.now)


@pytest.fixture
def scope(authority: Authority) -> str:
    return authority.api("calc-api").default_scope


# -- a clock stepped back (NTP) must not stretch the rate limits ------------------------------


def test_a_clock_stepped_back_does_not_block_forced_refreshes() -> None:
    # The last forced refresh "happened" an hour in the future of the new clock.
    assert may_force_refresh(10_000.0, now=10_000.0 - 3600)


def test_401_after_the_clock_stepped_back_still_gets_a_fresh_token(
    authority: Authority, clock: FakeClock, scope: str
) -> None:
    tc, _ = sync_client(authority, clock)
    revoked: set[str] = set()

    def api(request: httpx.Request) -> httpx.Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        return httpx.Response(401 if token in revoked else 200)

    with httpx.Client(transport=httpx.MockTransport(api), auth=tc.auth(scope)) as http:
        revoked.add(tc.get_token(scope).token)
        assert http.get(API).status_code == 200  # a forced refresh, now
        clock.advance(-3600)  # the host clock is corrected an hour back
        revoked.add(tc.get_token(scope).token)
        assert http.get(API).status_code == 200
    assert authority.hits["token"] == 3


def test_jwks_decide_after_the_clock_stepped_back() -> None:
    policy = RefreshPolicy(ttl=3600, cooldown=30, failure_backoff=5)
    t = 100_000.0
    cold_failure = KeyCache().failed(t, policy)
    # An hour earlier by the new clock: the backoff must not last an hour.
    assert decide(cold_failure, "k", t - 3600, policy) is KeyAction.FETCH
    fresh = KeyCache().fetched(KeySet(keys={}), t)
    # A kid the keys lack: the unknown-kid cooldown must not last an hour either.
    assert decide(fresh, "new", t - 3600, policy) is KeyAction.FETCH


@pytest.mark.anyio
async def test_jwks_outage_then_clock_stepped_back_recovers(authority: Authority) -> None:
    now = [1_800_000_000.0]
    cache = AsyncJWKSCache(
        KeySourcePlan(jwks_uri=authority.jwks_uri),
        algorithms=frozenset({"RS256"}),
        clock=lambda: now[0],
        http_client=httpx.AsyncClient(transport=authority.transport()),
    )
    try:
        authority.set_fault("jwks", Fault(status=503, times=1))
        with pytest.raises(KeysUnavailableError):
            await cache.get_key(authority.signing_kid)
        now[0] -= 3600  # the clock steps back; the authority is back
        key = await asyncio.wait_for(cache.get_key(authority.signing_kid), TIMEOUT)
        assert key.kid == authority.signing_kid
        assert authority.hits["jwks"] == 2
    finally:
        await cache.aclose()
