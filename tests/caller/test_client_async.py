"""AsyncTokenClient on the local authority: the same behaviour as TokenClient, awaited."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import httpx
import pytest
from tests.support import START

from ccflow import (
    AsyncTokenClient,
    AuthorityUnreachableError,
    ConfigurationError,
    CredentialError,
    TokenRequestError,
)
from ccflow.authority import Authority, Fault
from ccflow.credentials import RequestFields

if TYPE_CHECKING:
    from tests.caller.conftest import AsyncClientFactory
    from tests.conftest import FakeClock


pytestmark = pytest.mark.anyio


async def test_get_token_and_cache(
    async_client: AsyncClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    tc, _ = async_client()
    async with tc:
        first = await tc.get_token(scope.removesuffix("/.default"))
        assert first.scopes == (scope,)
        assert first.expires_on == int(START) + 3599
        assert await tc.get_token(scope) is first
    assert authority.hits["token"] == 1


async def test_margin_then_refetch(
    async_client: AsyncClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    tc, _ = async_client()
    first = await tc.get_token(scope)
    clock.advance(3298)
    assert await tc.get_token(scope) is first
    clock.advance(1)
    assert await tc.get_token(scope) is not first


async def test_failed_refresh_serves_the_valid_token(
    async_client: AsyncClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    tc, sleeps = async_client()
    first = await tc.get_token(scope)
    authority.set_fault("token", Fault(drop=True))
    clock.advance(3300)
    assert await tc.get_token(scope) is first
    assert sleeps == []
    clock.advance(300)
    with pytest.raises(AuthorityUnreachableError):
        await tc.get_token(scope)


async def test_retry_after_is_honoured(
    async_client: AsyncClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    tc, sleeps = async_client()
    authority.set_fault("token", Fault(status=429, retry_after="4", times=2))
    assert (await tc.get_token(scope)).token
    assert sleeps == [4.0, 4.0]
    assert authority.hits["token"] == 3


async def test_gives_up_with_the_last_error(
    async_client: AsyncClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    tc, sleeps = async_client()
    authority.set_fault("token", Fault(status=503))
    with pytest.raises(TokenRequestError, match="HTTP 503"):
        await tc.get_token(scope)
    assert len(sleeps) == 3
    assert authority.hits["token"] == 4


async def test_aadsts_message(
    async_client: AsyncClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    tc, _ = async_client(client_secret="nope")
    with pytest.raises(TokenRequestError, match="wrong or expired"):
        await tc.get_token(scope)


async def test_one_info_line_per_fetch(
    async_client: AsyncClientFactory,
    authority: Authority,
    clock: FakeClock,
    scope: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tc, _ = async_client()
    with caplog.at_level(logging.DEBUG, logger="ccflow"):
        await tc.get_token(scope)
        await tc.get_token(scope)
    assert [r.levelname for r in caplog.records if r.name == "ccflow"] == ["INFO"]


async def test_async_credential_is_awaited(
    authority: Authority, clock: FakeClock, scope: str
) -> None:
    app = authority.client("calc-client")
    calls: list[str] = []

    class RemoteSecret:
        def request_fields(self, **_: object) -> RequestFields:
            raise AssertionError("the async face should await arequest_fields")

        async def arequest_fields(
            self, *, client_id: str, token_endpoint: str, auth_method: str, now: float
        ) -> RequestFields:
            calls.append(token_endpoint)
            return RequestFields(
                form=(("client_id", client_id), ("client_secret", app.secret or ""))
            )

    tc = AsyncTokenClient(
        client_id=app.client_id,
        credential=RemoteSecret(),
        tenant_id=authority.tenant_id,
        authority_host=authority.host,
        http_client=httpx.AsyncClient(transport=authority.transport()),
        clock=clock,
    )
    assert (await tc.get_token(scope)).token
    assert calls == [authority.token_endpoint]


async def test_owned_http_client_is_closed() -> None:
    # httpx refuses to send on a closed client; an open one would try to connect instead.
    async with AsyncTokenClient(
        client_id="c",
        client_secret="s",
        token_endpoint="https://idp.invalid/token",
        max_retries=0,
        timeout=1.0,
    ) as tc:
        pass
    with pytest.raises(RuntimeError, match="client has been closed"):
        await tc.get_token("s")


async def test_sync_http_client_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="TokenClient"):
        AsyncTokenClient(
            client_id="c",
            client_secret="s",
            tenant_id="t",
            http_client=httpx.Client(),  # type: ignore[arg-type]
        )


async def test_from_env() -> None:
    env = {"AZURE_CLIENT_ID": "c", "AZURE_CLIENT_SECRET": "s", "AZURE_TENANT_ID": "t"}
    tc = AsyncTokenClient.from_env(environ=env)
    assert isinstance(tc, AsyncTokenClient)
    assert tc.token_endpoint == "https://login.microsoftonline.com/t/oauth2/v2.0/token"
    await tc.aclose()


async def test_a_list_of_scopes_as_one_argument_is_a_configuration_error(
    async_client: AsyncClientFactory, authority: Authority, clock: FakeClock
) -> None:
    tc, _ = async_client()
    with pytest.raises(ConfigurationError, match=r"get_token\(\*scopes\)"):
        await tc.get_token(["api://calc-api"])  # type: ignore[arg-type]


async def test_a_custom_async_credential_failing_is_a_credential_error(
    async_client: AsyncClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    class Broken:
        def request_fields(self, **_: object) -> RequestFields:
            raise AssertionError("the async face should await arequest_fields")

        async def arequest_fields(self, **_: object) -> RequestFields:
            raise ConnectionError("key vault down")

    tc, _ = async_client(client_secret=None, credential=Broken())
    with pytest.raises(CredentialError, match="Broken failed: ConnectionError") as info:
        await tc.get_token(scope)
    assert isinstance(info.value.__cause__, ConnectionError)


async def test_the_token_post_never_follows_a_redirect_nor_uses_the_clients_auth() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(308, headers={"Location": "http://elsewhere.example/token"})

    http = httpx.AsyncClient(
        transport=httpx.MockTransport(handler), follow_redirects=True, auth=("u", "p")
    )
    tc = AsyncTokenClient(
        client_id="c",
        client_secret="s3cret",
        token_endpoint="https://idp.example/token",
        http_client=http,
    )
    with pytest.raises(TokenRequestError) as info:
        await tc.get_token("read")
    assert info.value.status_code == 308
    assert [str(r.url) for r in seen] == ["https://idp.example/token"]
    assert "authorization" not in seen[0].headers


async def test_an_unreadable_answer_is_an_authority_error_without_the_request() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=b"not gzip")

    tc = AsyncTokenClient(
        client_id="c",
        client_secret="s3cret",
        token_endpoint="https://idp.example/token",
        max_retries=0,
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
    )
    with pytest.raises(AuthorityUnreachableError, match="could not be read") as info:
        await tc.get_token("read")
    assert info.value.__context__ is None


async def test_get_token_from_inside_its_own_token_request_fails_instead_of_waiting_forever(
    async_client: AsyncClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    class Reentrant:
        client: AsyncTokenClient

        def request_fields(self, **_: object) -> RequestFields:
            raise AssertionError("the async face should await arequest_fields")

        async def arequest_fields(self, **_: object) -> RequestFields:
            await self.client.get_token(scope)
            raise AssertionError("unreachable")

    credential = Reentrant()
    tc, _ = async_client(client_secret=None, credential=credential)
    credential.client = tc
    with pytest.raises(CredentialError, match="inside its own token request"):
        await asyncio.wait_for(tc.get_token(scope), 10)
