"""Review round on concurrency and faults: clocks that jump, races between a 401 and the
callers sharing a fetch, and key fetching. Every wait is bounded."""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from ccflow._core.cache import may_force_refresh
from ccflow._core.jwks import KeyAction, KeyCache, KeySet, RefreshPolicy, decide
from ccflow.authority import Authority, Fault
from ccflow.errors import KeysUnavailableError
from ccflow.jwks import AsyncJWKSCache, KeySourcePlan

if TYPE_CHECKING:
    from tests.caller.conftest import AsyncClientFactory, ClientFactory
    from tests.conftest import FakeClock


TIMEOUT = 10.0
API = "https://calc.test/add"


# -- a clock stepped back (NTP) must not stretch the rate limits ------------------------------


def test_a_clock_stepped_back_does_not_block_forced_refreshes() -> None:
    # The last forced refresh "happened" an hour in the future of the new clock.
    assert may_force_refresh(10_000.0, now=10_000.0 - 3600)


def test_401_after_the_clock_stepped_back_still_gets_a_fresh_token(
    sync_client: ClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    tc, _ = sync_client()
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


# -- a token a 401 invalidated must not come back ---------------------------------------------


@pytest.mark.anyio
async def test_a_waiter_does_not_put_back_a_token_dropped_while_it_was_waking(
    async_client: AsyncClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    tc, _ = async_client()
    async with tc:

        async def first() -> str:
            # Its API answers 401 at once (an in-process app): the token is dropped before
            # the other caller of the same fetch has resumed.
            token = await tc.get_token(scope)
            tc.invalidate(token, scope)
            return token.token

        async def second() -> str:
            return (await tc.get_token(scope)).token

        dropped, shared = await asyncio.wait_for(asyncio.gather(first(), second()), TIMEOUT)
        assert shared == dropped
        again = await asyncio.wait_for(tc.get_token(scope), TIMEOUT)
        assert again.token != dropped
        assert authority.hits["token"] == 2


def test_the_leader_does_not_put_back_a_token_dropped_right_after_it_was_stored(
    sync_client: ClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    tc, _ = sync_client()
    log = tc._log
    dropped: list[str] = []

    def racing_log(key: tuple[str, ...], outcome: Any, started: float) -> None:
        if not dropped:
            # Another thread got the just-stored token from the cache, its API answered 401,
            # and it invalidates the token: all before the leader has returned it.
            token = outcome.entry.token
            dropped.append(token.token)
            other = threading.Thread(target=tc.invalidate, args=(token, scope))
            other.start()
            other.join(TIMEOUT)
            assert not other.is_alive()
        log(key, outcome, started)

    tc._log = racing_log  # type: ignore[method-assign]
    with tc:
        first = tc.get_token(scope)
        assert dropped == [first.token]
        assert tc.get_token(scope).token != first.token
        assert authority.hits["token"] == 2


# -- the local authority server stopped while answers are held back ---------------------------


def test_a_slow_answer_in_flight_when_the_server_stops_is_not_sent() -> None:
    from ccflow import AuthorityUnreachableError, TokenClient
    from ccflow.authority import AuthorityServer

    server = AuthorityServer().start()
    try:
        authority = server.authority
        app = authority.client("calc-client")
        authority.set_fault("token", Fault(delay=20))
        outcome: list[object] = []

        def call() -> None:
            with TokenClient(
                client_id=app.client_id,
                client_secret=app.secret,
                token_endpoint=authority.token_endpoint,
                max_retries=0,
                timeout=30,
            ) as tc:
                try:
                    outcome.append(tc.get_token(authority.api("calc-api").default_scope))
                except AuthorityUnreachableError as exc:
                    outcome.append(exc)

        thread = threading.Thread(target=call)
        thread.start()
        for _ in range(500):
            if authority.hits["token"]:
                break
            threading.Event().wait(0.01)
        assert authority.hits["token"] == 1
    finally:
        server.stop()
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    # The server is gone: the held-back answer must not arrive after all, early.
    assert len(outcome) == 1
    assert isinstance(outcome[0], AuthorityUnreachableError), outcome


# -- an assertion callable shared by concurrent fetches of different scopes --------------------


def _assertion(exp: float) -> str:
    import base64
    import json

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part({'exp': int(exp)})}.c2ln"


@pytest.mark.anyio
async def test_async_fetches_of_different_scopes_ask_the_assertion_callable_once() -> None:
    import time

    from ccflow import AsyncTokenClient, ClientAssertion

    calls: list[int] = []

    def assertion() -> str:
        calls.append(1)
        threading.Event().wait(0.3)  # an OIDC token endpoint taking its time
        return _assertion(time.time() + 3600)

    def token_endpoint(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"access_token": "t", "expires_in": 3600, "token_type": "Bearer"}
        )

    async with AsyncTokenClient(
        client_id="app",
        credential=ClientAssertion(assertion),
        token_endpoint="https://idp.test/token",
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(token_endpoint)),
    ) as tc:
        await asyncio.wait_for(
            asyncio.gather(tc.get_token("api://a/.default"), tc.get_token("api://b/.default")),
            TIMEOUT,
        )
    assert len(calls) == 1
