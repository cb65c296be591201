"""BearerAuth: the token goes into Authorization; a 401 invalidates it and retries once, fresh."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from typing import TYPE_CHECKING

import httpx
import pytest

from ccflow import AccessToken, ConfigurationError, httpx_auth
from ccflow.authority import Authority
from ccflow.httpx_auth import AsyncBearerAuth, AsyncTokenSource, BearerAuth, TokenSource

if TYPE_CHECKING:
    from tests.caller.conftest import AsyncClientFactory, ClientFactory
    from tests.conftest import FakeClock


API = "https://calc.test/add"


class Api:
    """A protected endpoint that answers 401 to revoked tokens and records what it saw."""

    def __init__(self) -> None:
        self.revoked: set[str] = set()
        self.always_401 = False
        self.seen: list[tuple[str, bytes]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("authorization", "")
        self.seen.append((auth, request.content))
        token = auth.removeprefix("Bearer ")
        if self.always_401 or not auth.startswith("Bearer ") or token in self.revoked:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return httpx.Response(200, json={"result": 3})


def test_attaches_the_bearer_token(
    sync_client: ClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    tc, _ = sync_client()
    api = Api()
    with httpx.Client(transport=httpx.MockTransport(api), auth=tc.auth(scope)) as http:
        assert http.get(API).status_code == 200
        assert http.get(API).status_code == 200
    token = tc.get_token(scope).token
    assert [a for a, _ in api.seen] == [f"Bearer {token}"] * 2
    assert authority.hits["token"] == 1


def test_401_drops_the_token_and_retries_once_with_a_fresh_one(
    sync_client: ClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    tc, _ = sync_client()
    old = tc.get_token(scope)
    api = Api()
    api.revoked.add(old.token)
    with httpx.Client(transport=httpx.MockTransport(api), auth=tc.auth(scope)) as http:
        response = http.post(API, content=b"a=1&b=2")
    assert response.status_code == 200
    fresh = tc.get_token(scope)
    assert fresh.token != old.token
    assert api.seen == [(f"Bearer {old.token}", b"a=1&b=2"), (f"Bearer {fresh.token}", b"a=1&b=2")]
    assert authority.hits["token"] == 2


def test_a_second_401_is_returned_and_costs_one_forced_refresh_per_interval(
    sync_client: ClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    tc, _ = sync_client()
    api = Api()
    api.always_401 = True
    with httpx.Client(transport=httpx.MockTransport(api), auth=tc.auth(scope)) as http:
        assert http.get(API).status_code == 401
        assert len(api.seen) == 2
        assert authority.hits["token"] == 2
        for _ in range(9):  # an API refusing every token
            assert http.get(API).status_code == 401
        assert authority.hits["token"] == 2  # the first token and one forced refresh
        assert len(api.seen) == 11  # the retry is skipped while the fresh token is refused
        clock.advance(30)  # docs/caller.md: a forced refresh at most once every 30 s
        assert http.get(API).status_code == 401
    assert authority.hits["token"] == 3
    assert len(api.seen) == 13


def test_a_token_replaced_by_another_caller_is_retried_without_a_new_fetch(
    sync_client: ClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    tc, _ = sync_client()
    old = tc.get_token(scope)
    tc.invalidate(old, scope)  # forced refresh used up for 30 s
    new = tc.get_token(scope)
    assert new is not old
    # Another request still holding the old token gets a 401: it retries with the new one.
    tc.invalidate(old, scope)
    assert tc.get_token(scope) is new
    assert authority.hits["token"] == 2


@pytest.mark.anyio
async def test_async_api_refusing_every_token_costs_one_forced_refresh(
    async_client: AsyncClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    tc, _ = async_client()
    api = Api()
    api.always_401 = True
    async with httpx.AsyncClient(transport=httpx.MockTransport(api), auth=tc.auth(scope)) as http:
        for _ in range(5):
            assert (await http.get(API)).status_code == 401
    assert authority.hits["token"] == 2
    assert len(api.seen) == 6


def test_403_is_not_retried(
    sync_client: ClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    tc, _ = sync_client()
    calls: list[httpx.Request] = []

    def forbidden(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(403)

    with httpx.Client(transport=httpx.MockTransport(forbidden), auth=tc.auth(scope)) as http:
        assert http.get(API).status_code == 403
    assert len(calls) == 1


def test_drop_keeps_a_newer_token(
    sync_client: ClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    tc, _ = sync_client()
    old = tc.get_token(scope)
    clock.advance(3599)
    new = tc.get_token(scope)
    tc.invalidate(old, scope)
    assert tc.get_token(scope) is new


def test_bare_resource_scope_works(
    sync_client: ClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    tc, _ = sync_client()
    api = Api()
    auth = tc.auth(scope.removesuffix("/.default"))
    with httpx.Client(transport=httpx.MockTransport(api), auth=auth) as http:
        assert http.get(API).status_code == 200


def test_bad_scope_fails_at_setup(
    sync_client: ClientFactory, authority: Authority, clock: FakeClock
) -> None:
    tc, _ = sync_client()
    with pytest.raises(ConfigurationError):
        tc.auth()


@pytest.mark.anyio
async def test_async_401_retry(
    async_client: AsyncClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    tc, _ = async_client()
    old = await tc.get_token(scope)
    api = Api()
    api.revoked.add(old.token)
    async with httpx.AsyncClient(transport=httpx.MockTransport(api), auth=tc.auth(scope)) as http:
        response = await http.post(API, content=b"x")
        assert response.status_code == 200
        assert (await http.get(API)).status_code == 200
    assert len(api.seen) == 3
    assert authority.hits["token"] == 2


@pytest.mark.anyio
async def test_sync_client_auth_works_in_async_http(
    sync_client: ClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    tc, _ = sync_client()
    api = Api()
    async with httpx.AsyncClient(transport=httpx.MockTransport(api), auth=tc.auth(scope)) as http:
        assert (await http.get(API)).status_code == 200


def test_async_client_auth_in_sync_http_is_refused(
    async_client: AsyncClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    tc, _ = async_client()
    api = Api()
    with (
        httpx.Client(transport=httpx.MockTransport(api), auth=tc.auth(scope)) as http,
        pytest.raises(ConfigurationError, match=r"httpx\.AsyncClient"),
    ):
        http.get(API)


def test_each_client_gives_its_own_auth(
    async_client: AsyncClientFactory,
    sync_client: ClientFactory,
    authority: Authority,
    clock: FakeClock,
    scope: str,
) -> None:
    sync, _ = sync_client()
    asynchronous, _ = async_client()
    assert type(sync.auth(scope)) is BearerAuth
    assert type(asynchronous.auth(scope)) is AsyncBearerAuth


class Source:
    """A token source that is no ccflow client: a new token after each invalidate."""

    def __init__(self) -> None:
        self.issued = 0
        self.invalidated: list[tuple[str, tuple[str, ...]]] = []

    def get_token(self, *scopes: str) -> AccessToken:
        return AccessToken(f"token-{self.issued}", 2_000_000_000, scopes=scopes)

    def invalidate(self, token: AccessToken, *scopes: str) -> None:
        self.invalidated.append((token.token, scopes))
        self.issued += 1


class AsyncSource(Source):
    async def get_token(self, *scopes: str) -> AccessToken:  # type: ignore[override]
        return Source.get_token(self, *scopes)


def test_bearer_auth_works_with_any_token_source() -> None:
    source = Source()
    api = Api()
    api.revoked.add("token-0")
    auth = BearerAuth(source, ("api://x",))
    with httpx.Client(transport=httpx.MockTransport(api), auth=auth) as http:
        assert http.get(API).status_code == 200
    assert [a for a, _ in api.seen] == ["Bearer token-0", "Bearer token-1"]
    assert source.invalidated == [("token-0", ("api://x",))]


def test_a_source_keeping_the_refused_token_means_no_retry() -> None:
    source = Source()
    source.invalidate = lambda token, *scopes: None  # type: ignore[method-assign]
    api = Api()
    api.always_401 = True
    with httpx.Client(transport=httpx.MockTransport(api), auth=BearerAuth(source, ("s",))) as http:
        assert http.get(API).status_code == 401
    assert len(api.seen) == 1


@pytest.mark.anyio
async def test_async_bearer_auth_works_with_any_async_token_source() -> None:
    source = AsyncSource()
    api = Api()
    api.revoked.add("token-0")
    auth = AsyncBearerAuth(source, ("api://x",))
    async with httpx.AsyncClient(transport=httpx.MockTransport(api), auth=auth) as http:
        assert (await http.post(API, content=b"body")).status_code == 200
    assert api.seen == [("Bearer token-0", b"body"), ("Bearer token-1", b"body")]


def test_httpx_auth_imports_nothing_from_the_clients() -> None:
    tree = ast.parse(inspect.getsource(httpx_auth))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {name for name in imported if name.startswith("ccflow.client")}
    assert "ccflow" not in imported


def test_clients_are_token_sources(
    async_client: AsyncClientFactory,
    sync_client: ClientFactory,
    authority: Authority,
    clock: FakeClock,
    scope: str,
) -> None:
    sync, _ = sync_client()
    asynchronous, _ = async_client()
    source: TokenSource = sync
    async_source: AsyncTokenSource = asynchronous
    assert callable(source.invalidate)
    assert callable(async_source.invalidate)


def test_invalidate_takes_an_equal_token(
    sync_client: ClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    tc, _ = sync_client()
    old = tc.get_token(scope)
    tc.invalidate(dataclasses.replace(old), scope.removesuffix("/.default"))
    assert tc.get_token(scope).token != old.token
    assert authority.hits["token"] == 2


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
