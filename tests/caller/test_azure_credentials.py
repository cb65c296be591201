"""Token clients as azure-core credentials (get_token's keywords, get_token_info), and
BearerAuth over azure-core credentials, on the local authority."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from azure.core.credentials import AccessToken as AzureAccessToken
from azure.core.credentials import AccessTokenInfo
from tests.support import client_environ

from ccflow import ConfigurationError, TokenClient, TokenRequestError
from ccflow.authority import PARTNER_TENANT_ID, Authority, Fault, Registrations
from ccflow.httpx_auth import AsyncBearerAuth, BearerAuth

CLAIMS = json.dumps({"access_token": {"nbf": {"essential": True, "value": "1767225600"}}})


def recording(authority: Authority, seen: list[httpx.Request]) -> httpx.MockTransport:
    """The authority's transport, keeping each request it answers."""

    def handle(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        return authority.handle(request)

    return httpx.MockTransport(handle)


def test_the_token_unpacks_as_azure_core_expects(sync_client: Any, scope: str) -> None:
    client, _ = sync_client()
    token, expires_on = client.get_token(scope)
    assert isinstance(token, str)
    assert isinstance(expires_on, int)


def test_azure_core_keywords_are_accepted(
    sync_client: Any, scope: str, authority: Authority
) -> None:
    client, _ = sync_client()
    first = client.get_token(scope, tenant_id=authority.tenant_id, enable_cae=True, other=1)
    assert client.get_token(scope) is first
    assert authority.hits["token"] == 1


def test_claims_fetch_a_fresh_token_that_replaces_the_cached_one(
    sync_client: Any, scope: str, authority: Authority
) -> None:
    seen: list[httpx.Request] = []
    client, _ = sync_client(transport=recording(authority, seen))
    old = client.get_token(scope)
    fresh = client.get_token(scope, claims=CLAIMS)
    assert fresh.token != old.token
    assert client.get_token(scope) is fresh
    assert parse_qs(seen[-1].content.decode())["claims"] == [CLAIMS]
    assert b"claims" not in seen[0].content


def test_a_failed_challenge_refresh_does_not_serve_the_challenged_token(
    sync_client: Any, scope: str, authority: Authority
) -> None:
    client, _ = sync_client(max_retries=0)
    client.get_token(scope)
    authority.set_fault("token", Fault(status=503))
    with pytest.raises(TokenRequestError):
        client.get_token(scope, claims=CLAIMS)


def test_another_tenant_is_refused_unless_allowed(sync_client: Any, scope: str) -> None:
    client, _ = sync_client()
    with pytest.raises(ConfigurationError, match="additionally_allowed_tenants") as info:
        client.get_token(scope, tenant_id=PARTNER_TENANT_ID)
    assert info.value.setting == "tenant_id"


def test_an_allowed_tenant_is_asked_at_its_own_endpoint(
    scope: str, authority: Authority, clock: Any
) -> None:
    seen: list[httpx.Request] = []
    multi = Authority(Registrations.multi_tenant(), clock=lambda: clock.now)
    partner = multi.client("partner-client")
    client = TokenClient(
        client_id=partner.client_id,
        client_secret=partner.secret,
        tenant_id=multi.tenant_id,
        authority_host=multi.host,
        http_client=httpx.Client(transport=recording(multi, seen)),
        clock=clock,
        additionally_allowed_tenants=["*"],
    )
    token = client.get_token(scope, tenant_id=PARTNER_TENANT_ID)
    assert seen[-1].url.path == f"/{PARTNER_TENANT_ID}/oauth2/v2.0/token"
    # Cached apart from the own tenant's tokens.
    assert client.get_token(scope, tenant_id=PARTNER_TENANT_ID) is token
    with pytest.raises(TokenRequestError, match="AADSTS700016"):
        client.get_token(scope)  # partner-client is not in the own tenant
    assert seen[-1].url.path == f"/{multi.tenant_id}/oauth2/v2.0/token"


def _partner_from_env(
    multi: Authority, seen: list[httpx.Request], allowed: str | None, **options: Any
) -> TokenClient:
    """partner-client built by ``from_env()``, ``AZURE_ADDITIONALLY_ALLOWED_TENANTS=allowed``."""
    environ = client_environ(multi, "partner-client")
    if allowed is not None:
        environ["AZURE_ADDITIONALLY_ALLOWED_TENANTS"] = allowed
    http = httpx.Client(transport=recording(multi, seen))
    return TokenClient.from_env(environ=environ, http_client=http, **options)


@pytest.mark.parametrize(
    "allowed",
    [PARTNER_TENANT_ID, f"00000000-0000-4000-8000-000000000001; {PARTNER_TENANT_ID};", "*"],
)
def test_from_env_reads_the_additionally_allowed_tenants(
    allowed: str, scope: str, clock: Any
) -> None:
    # Semicolon-separated, as the Azure SDKs for .NET, Java, JavaScript and Go read it.
    seen: list[httpx.Request] = []
    multi = Authority(Registrations.multi_tenant(), clock=lambda: clock.now)
    with _partner_from_env(multi, seen, allowed, clock=clock) as client:
        client.get_token(scope, tenant_id=PARTNER_TENANT_ID.upper())  # tenant ids: any case
    assert seen[-1].url.path.lower() == f"/{PARTNER_TENANT_ID}/oauth2/v2.0/token"


@pytest.mark.parametrize("allowed", [None, "", " ; ;"])
def test_from_env_allows_no_other_tenant_without_the_variable(
    allowed: str | None, scope: str, clock: Any
) -> None:
    multi = Authority(Registrations.multi_tenant(), clock=lambda: clock.now)
    client = _partner_from_env(multi, [], allowed)
    with client, pytest.raises(ConfigurationError, match="additionally_allowed_tenants") as info:
        client.get_token(scope, tenant_id=PARTNER_TENANT_ID)
    assert info.value.setting == "tenant_id"


def test_from_env_names_the_variable_of_a_bad_allowed_tenant(clock: Any) -> None:
    multi = Authority(Registrations.multi_tenant(), clock=lambda: clock.now)
    with pytest.raises(ConfigurationError) as info:
        _partner_from_env(multi, [], f"{PARTNER_TENANT_ID};contoso.com/v2.0")
    assert str(info.value).startswith("AZURE_ADDITIONALLY_ALLOWED_TENANTS: ")
    assert "'contoso.com/v2.0'" in str(info.value)
    assert info.value.setting == "AZURE_ADDITIONALLY_ALLOWED_TENANTS"


def test_from_env_takes_the_option_only_when_the_variable_is_unset(scope: str, clock: Any) -> None:
    seen: list[httpx.Request] = []
    multi = Authority(Registrations.multi_tenant(), clock=lambda: clock.now)
    with _partner_from_env(multi, seen, None, additionally_allowed_tenants=["*"]) as client:
        client.get_token(scope, tenant_id=PARTNER_TENANT_ID)
    assert seen[-1].url.path == f"/{PARTNER_TENANT_ID}/oauth2/v2.0/token"
    with pytest.raises(ConfigurationError, match="unset the variable or drop") as info:
        _partner_from_env(multi, [], "*", additionally_allowed_tenants=["*"])
    assert info.value.setting == "additionally_allowed_tenants"


def test_get_token_info_has_azure_cores_fields(sync_client: Any, scope: str, clock: Any) -> None:
    client, _ = sync_client()
    info = client.get_token_info(scope, options={"enable_cae": True})
    token = client.get_token(scope)
    assert (info.token, info.expires_on, info.token_type) == (
        token.token,
        token.expires_on,
        "Bearer",
    )
    # The local authority's tokens live 3599 s: refreshed 300 s before they expire.
    assert info.refresh_on == token.expires_on - 300
    assert token.token not in repr(info)


def test_get_token_info_takes_claims_in_its_options(sync_client: Any, scope: str) -> None:
    client, _ = sync_client()
    old = client.get_token_info(scope)
    assert client.get_token_info(scope, options={"claims": CLAIMS}).token != old.token


@pytest.mark.anyio
async def test_the_async_client_takes_the_same_keywords(
    async_client: Any, scope: str, authority: Authority
) -> None:
    client, _ = async_client()
    token, _expires_on = await client.get_token(scope, enable_cae=True)
    fresh = await client.get_token(scope, claims=CLAIMS)
    assert fresh.token != token
    info = await client.get_token_info(scope)
    assert info.token == fresh.token
    assert info.refresh_on is not None
    with pytest.raises(ConfigurationError, match="additionally_allowed_tenants"):
        await client.get_token(scope, tenant_id=PARTNER_TENANT_ID)


# -- BearerAuth over azure-core credentials ------------------------------------------------


class SyncCredential:
    """An azure-core TokenCredential: get_token only."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AzureAccessToken:
        self.calls.append(scopes)
        return AzureAccessToken(f"azure-token-{len(self.calls)}", 2_000_000_000)


class InfoCredential:
    """An azure-core SupportsTokenInfo credential."""

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        return AccessTokenInfo("info-token", 2_000_000_000, token_type="Bearer")


class AsyncCredential:
    """An azure-core AsyncTokenCredential."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> AzureAccessToken:
        return AzureAccessToken("async-token", 2_000_000_000)


def echo(status: int = 200) -> Callable[[httpx.Request], httpx.Response]:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"authorization": request.headers["Authorization"]})

    return handle


@pytest.mark.parametrize(
    ("credential", "expected"),
    [(SyncCredential(), "Bearer azure-token-1"), (InfoCredential(), "Bearer info-token")],
)
def test_bearer_auth_takes_an_azure_core_credential(credential: Any, expected: str) -> None:
    with httpx.Client(
        transport=httpx.MockTransport(echo()), auth=BearerAuth(credential, "s")
    ) as http:
        assert http.get("https://api.test/").json() == {"authorization": expected}


def test_a_401_is_returned_as_it_is_with_an_azure_core_credential() -> None:
    credential = SyncCredential()
    auth = BearerAuth(credential, ("api://x/.default",))
    with httpx.Client(transport=httpx.MockTransport(echo(401)), auth=auth) as http:
        assert http.get("https://api.test/").status_code == 401
    assert credential.calls == [("api://x/.default",), ("api://x/.default",)]


def test_an_async_credential_in_a_sync_client_is_refused_clearly() -> None:
    auth = BearerAuth(AsyncCredential(), "s")
    with (
        httpx.Client(transport=httpx.MockTransport(echo()), auth=auth) as http,
        pytest.raises(ConfigurationError, match="AsyncBearerAuth"),
    ):
        http.get("https://api.test/")


@pytest.mark.parametrize("credential", [AsyncCredential(), SyncCredential(), InfoCredential()])
@pytest.mark.anyio
async def test_async_bearer_auth_takes_async_and_sync_credentials(credential: Any) -> None:
    auth = AsyncBearerAuth(credential, ("s",))
    async with httpx.AsyncClient(transport=httpx.MockTransport(echo()), auth=auth) as http:
        answer = (await http.get("https://api.test/")).json()
    assert answer["authorization"].startswith("Bearer ")


@pytest.mark.anyio
async def test_async_bearer_auth_asks_a_sync_credential_off_the_event_loop() -> None:
    # azure-identity's sync credentials may block for seconds (a CLI subprocess, IMDS).
    threads: list[threading.Thread] = []

    class Blocking(SyncCredential):
        def get_token(self, *scopes: str, **kwargs: Any) -> AzureAccessToken:
            threads.append(threading.current_thread())
            return super().get_token(*scopes, **kwargs)

    auth = AsyncBearerAuth(Blocking(), ("s",))
    async with httpx.AsyncClient(transport=httpx.MockTransport(echo()), auth=auth) as http:
        answer = (await http.get("https://api.test/")).json()
    assert answer == {"authorization": "Bearer azure-token-1"}
    assert len(threads) == 1
    assert threads[0] is not threading.current_thread()


def test_a_token_client_of_the_other_kind_is_refused_clearly(
    sync_client: Any, async_client: Any, scope: str
) -> None:
    with pytest.raises(ConfigurationError, match="use an AsyncTokenClient"):
        AsyncBearerAuth(sync_client()[0], (scope,))
    with pytest.raises(ConfigurationError, match="use AsyncBearerAuth"):
        BearerAuth(async_client()[0], (scope,))


@pytest.mark.parametrize(
    ("credential", "scopes", "match"),
    [
        (object(), ("s",), "not a token source"),
        (SyncCredential(), (), "scopes"),
        (SyncCredential(), ("",), "scopes"),
    ],
)
def test_what_is_no_credential_or_no_scope_is_refused(
    credential: Any, scopes: Any, match: str
) -> None:
    with pytest.raises(ConfigurationError, match=match):
        BearerAuth(credential, scopes)


def test_a_credential_answering_no_token_is_refused() -> None:
    class Broken:
        def get_token(self, *scopes: str, **kwargs: Any) -> object:
            return {"token": "x"}

    with (
        httpx.Client(transport=httpx.MockTransport(echo()), auth=BearerAuth(Broken(), "s")) as http,
        pytest.raises(ConfigurationError, match="not an access token"),
    ):
        http.get("https://api.test/")


def test_a_claims_challenge_does_not_join_a_fetch_already_in_flight(
    sync_client: Any, scope: str, authority: Authority
) -> None:
    # The flight's token was asked for without the challenge: it must not answer one.
    release, held = threading.Event(), threading.Event()
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        if b"claims" not in request.content:
            held.set()
            assert release.wait(10)
        return authority.handle(request)

    client, _ = sync_client(transport=httpx.MockTransport(handle))
    plain: list[Any] = []
    thread = threading.Thread(target=lambda: plain.append(client.get_token(scope)))
    thread.start()
    try:
        assert held.wait(10)
        challenged = client.get_token(scope, claims=CLAIMS)
    finally:
        release.set()
        thread.join(10)
    assert parse_qs(seen[-1].content.decode()).get("claims") == [CLAIMS]
    assert challenged.token != plain[0].token
    # The fetch that began before the challenge ended after it: the answer to the challenge,
    # the newer token, is what the cache keeps serving.
    assert client.get_token(scope).token == challenged.token
    assert len(seen) == 2


@pytest.mark.anyio
async def test_a_claims_challenge_does_not_join_an_async_fetch_already_in_flight(
    async_client: Any, scope: str, authority: Authority
) -> None:
    release, held = asyncio.Event(), asyncio.Event()
    seen: list[httpx.Request] = []

    async def handle(request: httpx.Request) -> httpx.Response:
        await request.aread()
        seen.append(request)
        if b"claims" not in request.content:
            held.set()
            await release.wait()
        return authority.handle(request)

    client, _ = async_client(transport=httpx.MockTransport(handle))
    plain = asyncio.ensure_future(client.get_token(scope))
    await held.wait()
    challenged = await asyncio.wait_for(client.get_token(scope, claims=CLAIMS), 10)
    release.set()
    assert parse_qs(seen[-1].content.decode()).get("claims") == [CLAIMS]
    assert challenged.token != (await plain).token
    assert (await client.get_token(scope)).token == challenged.token
    assert len(seen) == 2
