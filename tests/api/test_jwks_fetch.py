"""Fetching keys from the local authority: rotation, outages, single flight, kid storms."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest

import ccflow.jwks
from ccflow import TokenValidator
from ccflow.authority import Authority, Fault
from ccflow.errors import InvalidTokenError, KeysUnavailableError
from ccflow.jwks import AsyncJWKSCache, DiscoverySource, KeySourcePlan

if TYPE_CHECKING:
    from tests.api.conftest import ValidatorFactory
    from tests.conftest import FakeClock, YieldingTransport


pytestmark = pytest.mark.anyio

RS256 = frozenset({"RS256"})
TIMEOUT = 10.0


@pytest.fixture
def validator_for(
    validator_for: ValidatorFactory,
    authority: Authority,
    yielding_transport: type[YieldingTransport],
) -> ValidatorFactory:
    """The shared factory on a transport that interleaves, with explicit JWKS timings."""

    def make(*args: Any, **options: Any) -> Any:
        settings: dict[str, Any] = {
            "audience": authority.api("calc-api").client_id,
            "http_client": httpx.AsyncClient(transport=yielding_transport(authority.handle)),
            "jwks_ttl": 3600,
            "jwks_cooldown": 30,
            "jwks_max_stale": 7200,
        }
        return validator_for(*args, **{**settings, **options})

    return make


@pytest.fixture
def validator(validator_for: ValidatorFactory) -> TokenValidator:
    return validator_for()


def fetches(authority: Authority) -> tuple[int, int]:
    return authority.hits["discovery"], authority.hits["jwks"]


async def test_cold_cache_100_concurrent_validations_make_one_discovery_and_one_jwks_fetch(
    authority: Authority, validator: TokenValidator
) -> None:
    tokens = [authority.mint() for _ in range(100)]
    results = await asyncio.gather(*(validator.validate(t) for t in tokens))
    assert len(results) == 100
    assert fetches(authority) == (1, 1)


async def test_warm_cache_makes_no_fetch(authority: Authority, validator: TokenValidator) -> None:
    await validator.validate(authority.mint())
    for _ in range(5):
        await validator.validate(authority.mint())
    assert fetches(authority) == (1, 1)


async def test_keys_refetched_after_ttl(
    authority: Authority, clock: FakeClock, validator: TokenValidator
) -> None:
    await validator.validate(authority.mint())
    clock.advance(3600)
    await validator.validate(authority.mint())
    assert fetches(authority) == (1, 2)


async def test_rotated_key_is_picked_up_after_the_cooldown(
    authority: Authority, clock: FakeClock, validator: TokenValidator
) -> None:
    await validator.validate(authority.mint())
    clock.advance(30)
    authority.rotate_keys()
    result = await validator.validate(authority.mint())
    assert result.client_id
    assert fetches(authority) == (1, 2)


async def test_rotated_key_within_the_cooldown_is_unknown_until_it_passes(
    authority: Authority, clock: FakeClock, validator: TokenValidator
) -> None:
    await validator.validate(authority.mint())
    authority.rotate_keys()
    token = authority.mint()
    clock.advance(10)
    with pytest.raises(InvalidTokenError) as info:
        await validator.validate(token)
    assert info.value.reason == "key"
    clock.advance(20)
    await validator.validate(token)
    assert fetches(authority) == (1, 2)


async def test_unknown_kid_storm_makes_one_refetch_per_cooldown(
    authority: Authority, clock: FakeClock, validator: TokenValidator
) -> None:
    await validator.validate(authority.mint())
    clock.advance(31)
    storm = [authority.mint(headers={"kid": uuid.uuid4().hex}) for _ in range(200)]
    outcomes = await asyncio.gather(*(validator.validate(t) for t in storm), return_exceptions=True)
    assert all(isinstance(o, InvalidTokenError) and o.reason == "key" for o in outcomes)
    assert fetches(authority) == (1, 2)
    clock.advance(30)
    with pytest.raises(InvalidTokenError):
        await validator.validate(storm[0])
    assert fetches(authority) == (1, 3)


async def test_retired_key_stops_validating_after_refresh(
    authority: Authority, clock: FakeClock, validator: TokenValidator
) -> None:
    old_kid = authority.signing_kid
    old_token = authority.mint(lifetime=86400)
    authority.rotate_keys()
    authority.retire_key(old_kid)
    clock.advance(1)
    with pytest.raises(InvalidTokenError) as info:
        await validator.validate(old_token)
    assert info.value.reason == "key"


FAULTS = {
    "503": Fault(status=503),
    "429 with Retry-After": Fault(status=429, retry_after="3"),
    "connection dropped": Fault(drop=True),
    "timeout": Fault(timeout=True),
    "HTML body": Fault(body=b"<html>maintenance</html>"),
    "garbage JSON": Fault(body=b'{"keys": 5}'),
    "no usable keys": Fault(body=b'{"keys": [{"kty": "oct", "kid": "x", "k": "AAAA"}]}'),
    "EC key with a list for crv": Fault(body=b'{"keys": [{"kty": "EC", "kid": "x", "crv": []}]}'),
}


@pytest.mark.parametrize("fault", FAULTS.values(), ids=FAULTS.keys())
async def test_jwks_outage_on_a_cold_cache_is_keys_unavailable(
    authority: Authority, validator: TokenValidator, fault: Fault
) -> None:
    authority.set_fault("jwks", fault)
    with pytest.raises(KeysUnavailableError) as info:
        await validator.validate(authority.mint())
    assert info.value.retry_after >= 1


@pytest.mark.parametrize("fault", FAULTS.values(), ids=FAULTS.keys())
async def test_discovery_outage_on_a_cold_cache_is_keys_unavailable(
    authority: Authority, validator: TokenValidator, fault: Fault
) -> None:
    authority.set_fault("discovery", fault)
    with pytest.raises(KeysUnavailableError):
        await validator.validate(authority.mint())


async def test_a_key_with_a_malformed_crv_does_not_hide_the_good_keys(
    authority: Authority, validator: TokenValidator
) -> None:
    document = authority.jwks()
    bad = {"kty": "EC", "kid": "odd", "crv": ["P-256"], "x": "AAAA", "y": "AAAA"}
    authority.set_fault("jwks", Fault(body=json.dumps({"keys": [bad, *document["keys"]]}).encode()))
    assert (await validator.validate(authority.mint())).client_id


@pytest.mark.parametrize(
    "jwks_uri",
    [
        "https://[login.ccflow.test/keys",
        "https://login.ccflow.test:x/keys",
        "https://l/k\x7f",
        "https://xn--zz.ccflow.test/keys",
    ],
    ids=["broken IPv6 host", "port not a number", "control character", "invalid IDNA host"],
)
async def test_discovery_naming_an_unusable_jwks_uri_is_keys_unavailable_with_backoff(
    authority: Authority, validator: TokenValidator, jwks_uri: str
) -> None:
    document = {**authority.discovery(), "jwks_uri": jwks_uri}
    authority.set_fault("discovery", Fault(body=json.dumps(document).encode()))
    for _ in range(5):
        with pytest.raises(KeysUnavailableError):
            await validator.validate(authority.mint())
    assert fetches(authority) == (1, 0)


async def test_cold_outage_backs_off_then_recovers(
    authority: Authority, clock: FakeClock, validator: TokenValidator
) -> None:
    authority.set_fault("jwks", Fault(status=503))
    for _ in range(10):
        with pytest.raises(KeysUnavailableError):
            await validator.validate(authority.mint())
    assert fetches(authority) == (1, 1)
    authority.clear_fault("jwks")
    clock.advance(5)
    await validator.validate(authority.mint())
    assert fetches(authority) == (1, 2)


async def test_cold_outage_with_100_concurrent_requests_fetches_once(
    authority: Authority, validator: TokenValidator
) -> None:
    authority.set_fault("discovery", Fault(status=503))
    outcomes = await asyncio.gather(
        *(validator.validate(authority.mint()) for _ in range(100)), return_exceptions=True
    )
    assert all(isinstance(o, KeysUnavailableError) for o in outcomes)
    assert fetches(authority) == (1, 0)


async def test_warm_outage_keeps_serving_cached_keys(
    authority: Authority, clock: FakeClock, validator: TokenValidator
) -> None:
    await validator.validate(authority.mint())
    authority.set_fault("jwks", Fault(status=503))
    clock.advance(3600)
    for _ in range(10):
        await validator.validate(authority.mint())
    assert fetches(authority) == (1, 2)


async def test_warm_outage_beyond_max_stale_is_keys_unavailable(
    authority: Authority, clock: FakeClock, validator: TokenValidator
) -> None:
    await validator.validate(authority.mint())
    authority.set_fault("jwks", Fault(drop=True))
    clock.advance(3600 + 7200 + 1)
    with pytest.raises(KeysUnavailableError):
        await validator.validate(authority.mint())


async def test_warm_outage_recovers_when_the_authority_returns(
    authority: Authority, clock: FakeClock, validator: TokenValidator
) -> None:
    await validator.validate(authority.mint())
    authority.set_fault("jwks", Fault(status=503, times=1))
    clock.advance(3600)
    await validator.validate(authority.mint())
    clock.advance(5)
    authority.rotate_keys()
    await validator.validate(authority.mint())
    assert fetches(authority) == (1, 3)


async def test_discovery_is_not_refetched_once_known(
    authority: Authority, clock: FakeClock, validator: TokenValidator
) -> None:
    await validator.validate(authority.mint())
    clock.advance(3600 * 5)
    await validator.validate(authority.mint())
    assert fetches(authority) == (1, 2)


async def test_async_cache_refresh_reads_issuer_and_keys(
    authority: Authority, clock: FakeClock
) -> None:
    plan = KeySourcePlan(discoveries=(DiscoverySource(authority.discovery_url, "2.0"),))
    http = httpx.AsyncClient(transport=authority.transport())
    cache = AsyncJWKSCache(plan, algorithms=RS256, clock=clock, http_client=http)
    assert cache.issuers == ()
    await cache.refresh()
    assert [(rule.issuer, rule.version) for rule in cache.issuers] == [(authority.issuer, "2.0")]
    assert cache.state.keys is not None
    assert set(cache.state.keys.keys) == set(authority.kids)
    await cache.aclose()
    await http.aclose()


async def test_async_cache_closes_the_client_it_created(
    authority: Authority, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[httpx.AsyncClient] = []
    real = ccflow.jwks.new_async_client

    def recording(timeout: float) -> httpx.AsyncClient:
        made.append(real(timeout))
        return made[-1]

    monkeypatch.setattr(ccflow.jwks, "new_async_client", recording)
    cache = AsyncJWKSCache(KeySourcePlan(jwks_uri=authority.jwks_uri), algorithms=RS256)
    await cache.aclose()
    assert len(made) == 1
    assert made[0].is_closed


def test_a_plan_needs_a_source() -> None:
    with pytest.raises(ValueError, match="jwks_uri"):
        AsyncJWKSCache(KeySourcePlan(), algorithms=RS256)


class GatedTransport(httpx.AsyncBaseTransport):
    """The authority, except that JWKS fetches after the first hang until ``gate`` is set
    (an authority that accepts connections and never answers)."""

    def __init__(self, authority: Authority) -> None:
        self.authority = authority
        self.gate = asyncio.Event()
        self.jwks = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        if "keys" in request.url.path:
            self.jwks += 1
            if self.jwks > 1:
                await self.gate.wait()
        return self.authority.handle(request)


async def until_the_refresh_hangs(transport: GatedTransport) -> None:
    for _ in range(1000):
        if transport.jwks >= 2:
            return
        await asyncio.sleep(0)
    raise AssertionError("the refresh never reached the JWKS endpoint")


async def test_a_known_key_is_served_while_a_hanging_refresh_is_in_flight(
    validator_for: ValidatorFactory, authority: Authority, clock: FakeClock
) -> None:
    transport = GatedTransport(authority)
    validator = validator_for(http_client=httpx.AsyncClient(transport=transport))
    await validator.validate(authority.mint())
    clock.advance(3600)  # keys past their TTL: the next request refreshes them
    refreshing = asyncio.ensure_future(validator.validate(authority.mint()))
    await until_the_refresh_hangs(transport)
    # Other requests whose key is cached and still usable need not wait for that fetch.
    verdicts = await asyncio.wait_for(
        asyncio.gather(*(validator.validate(authority.mint()) for _ in range(10))), timeout=2
    )
    assert len(verdicts) == 10
    assert transport.jwks == 2
    transport.gate.set()
    await refreshing
    await validator.aclose()


async def test_an_unknown_kid_still_waits_for_the_fetch_in_flight(
    validator_for: ValidatorFactory, authority: Authority, clock: FakeClock
) -> None:
    transport = GatedTransport(authority)
    validator = validator_for(http_client=httpx.AsyncClient(transport=transport))
    await validator.validate(authority.mint())
    clock.advance(3600)
    authority.rotate_keys()
    refreshing = asyncio.ensure_future(validator.validate(authority.mint()))
    await until_the_refresh_hangs(transport)
    waiting = asyncio.ensure_future(validator.validate(authority.mint()))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not waiting.done()
    transport.gate.set()
    await refreshing
    await waiting
    assert transport.jwks == 2
    await validator.aclose()


async def test_a_rotated_key_during_an_outage_is_keys_unavailable_not_a_bad_token(
    authority: Authority, clock: FakeClock, validator: TokenValidator
) -> None:
    # The refetch for the new kid failed: nobody knows whether the kid is real, so the answer
    # is 503 with Retry-After (try again), not 401 (this token is bad).
    await validator.validate(authority.mint())
    clock.advance(31)
    authority.set_fault("jwks", Fault(status=503))
    authority.rotate_keys()
    token = authority.mint()
    for _ in range(2):  # the refetch, then within its backoff
        with pytest.raises(KeysUnavailableError) as info:
            await validator.validate(token)
        assert info.value.retry_after >= 1
    assert fetches(authority) == (1, 2)
    authority.clear_fault("jwks")
    clock.advance(30)
    assert (await validator.validate(token)).client_id


class Redirecting(httpx.AsyncBaseTransport):
    """The authority behind a front that answers some paths with a redirect and serves some
    of the authority's documents (``serves``: path -> the authority's URL) at new paths."""

    def __init__(
        self,
        authority: Authority,
        moves: dict[str, tuple[int, str]],
        serves: dict[str, str] | None = None,
    ) -> None:
        self.authority = authority
        self.moves = moves
        self.serves = serves or {}
        self.requested: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requested.append(str(request.url))
        move = self.moves.get(request.url.path)
        if move is not None:
            status, location = move
            return httpx.Response(status, headers={"location": location}, request=request)
        served = self.serves.get(request.url.path)
        if served is not None:
            request = httpx.Request(request.method, served, headers=request.headers)
        return self.authority.handle(request)


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirected_discovery_document_and_jwks_are_followed(
    validator_for: ValidatorFactory, authority: Authority, clock: FakeClock, status: int
) -> None:
    discovery = authority.discovery_url
    # The discovery document the validator asks for moved too, to a path the front serves.
    moved = f"{authority.host}/moved/openid-configuration"
    transport = Redirecting(
        authority,
        {
            httpx.URL(discovery).path: (status, moved),
            "/old-keys": (status, authority.jwks_uri),
        },
        serves={httpx.URL(moved).path: discovery},
    )
    document = {**authority.discovery(), "jwks_uri": f"{authority.host}/old-keys"}
    authority.set_fault("discovery", Fault(body=json.dumps(document).encode()))
    validator = validator_for(http_client=httpx.AsyncClient(transport=transport))
    assert (await validator.validate(authority.mint())).client_id
    assert transport.requested == [
        discovery,
        moved,
        f"{authority.host}/old-keys",
        authority.jwks_uri,
    ]


async def test_a_redirect_to_plain_http_is_not_requested(
    validator_for: ValidatorFactory,
    authority: Authority,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = Redirecting(authority, {"/old-keys": (302, "http://keys.example.com/keys")})
    validator = validator_for(
        http_client=httpx.AsyncClient(transport=transport),
        jwks_uri=f"{authority.host}/old-keys",
    )
    with pytest.raises(KeysUnavailableError):
        await validator.validate(authority.mint())
    assert not any("keys.example.com" in url for url in transport.requested)
    assert "redirects to a plain http:// URL" in caplog.text


async def test_a_redirect_to_a_host_httpx_cannot_encode_is_an_outage(
    validator_for: ValidatorFactory, authority: Authority, clock: FakeClock
) -> None:
    # httpx lets idna.IDNAError (not an httpx error) out while it builds the redirect.
    transport = Redirecting(authority, {"/old-keys": (302, "https://xn--zz.example.com/keys")})
    validator = validator_for(
        http_client=httpx.AsyncClient(transport=transport),
        jwks_uri=f"{authority.host}/old-keys",
    )
    for _ in range(3):
        with pytest.raises(KeysUnavailableError):
            await validator.validate(authority.mint())
    assert transport.requested.count(f"{authority.host}/old-keys") == 1


async def test_a_closed_http_client_is_an_outage_not_an_unexpected_error(
    validator_for: ValidatorFactory,
    authority: Authority,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # httpx raises RuntimeError for a closed client: it came out of validate() (documented to
    # raise only ccflow errors), so RequireRole answered 401 "could not be validated".
    client = httpx.AsyncClient(transport=authority.transport())
    validator = validator_for(http_client=client)
    await client.aclose()
    for _ in range(3):
        with pytest.raises(KeysUnavailableError):
            await validator.validate(authority.mint())
    assert "client has been closed" in caplog.text
    assert caplog.text.count("client has been closed") == 1  # one attempt, then the backoff


async def test_a_redirect_loop_ends_as_an_outage(
    validator_for: ValidatorFactory, authority: Authority, clock: FakeClock
) -> None:
    transport = Redirecting(
        authority, {"/a": (302, f"{authority.host}/b"), "/b": (302, f"{authority.host}/a")}
    )
    validator = validator_for(
        http_client=httpx.AsyncClient(transport=transport),
        jwks_uri=f"{authority.host}/a",
    )
    with pytest.raises(KeysUnavailableError):
        await validator.validate(authority.mint())
    hops = [url for url in transport.requested if url.endswith(("/a", "/b"))]
    assert len(hops) == 6  # the first GET and five redirects, no more


class Endless(httpx.AsyncByteStream):
    def __init__(self) -> None:
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.sent < 64 * 1024 * 1024:  # bounded, but far past the limit
            self.sent += 65536
            yield b" " * 65536


async def test_an_oversized_jwks_is_refused_without_reading_it_all(
    validator_for: ValidatorFactory,
    authority: Authority,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = Endless()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/big-keys":
            return httpx.Response(200, stream=body)
        return authority.handle(request)

    validator = validator_for(
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
        jwks_uri=f"{authority.host}/big-keys",
    )
    with pytest.raises(KeysUnavailableError):
        await validator.validate(authority.mint())
    assert "document too large" in caplog.text
    assert body.sent <= 2 * 1024 * 1024


async def test_an_unexpected_error_from_the_http_client_is_no_keys_not_a_bad_token(
    validator_for: ValidatorFactory,
    authority: Authority,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # e.g. httpx.AsyncClient(verify=<a Path>) raises AttributeError on its first request: every
    # fresh token was a 401 'could not be validated', telling clients to drop good tokens.
    class Broken(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            raise AttributeError("'PosixPath' object has no attribute 'load_verify_locations'")

    validator = validator_for(http_client=httpx.AsyncClient(transport=Broken()))
    with pytest.raises(KeysUnavailableError) as info:
        await validator.validate(authority.mint())
    assert info.value.retry_after >= 1
    assert "failed unexpectedly: AttributeError" in caplog.text


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
