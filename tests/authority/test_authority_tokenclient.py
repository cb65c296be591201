"""ccflow's own TokenClient and AsyncTokenClient get tokens from the local authority, in-process
and over TLS (issue 3, "done when")."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import httpx
import jwt
import pytest

from ccflow import AsyncTokenClient, TokenClient, TokenRequestError
from ccflow.authority import Authority, AuthorityServer, Fault


@pytest.fixture(scope="module")
def server() -> Iterator[AuthorityServer]:
    with AuthorityServer(tls=True) as running:
        yield running


def secret(ccflow_authority: Authority, name: str = "calc-client") -> str:
    value = ccflow_authority.client(name).secret
    assert value is not None
    return value


@pytest.mark.parametrize("auth_method", ["client_secret_post", "client_secret_basic"])
def test_sync_client_in_process(ccflow_authority: Authority, auth_method: str) -> None:
    with TokenClient(
        client_id=ccflow_authority.client("calc-client").client_id,
        client_secret=secret(ccflow_authority),
        tenant_id=ccflow_authority.tenant_id,
        authority_host=ccflow_authority.host,
        auth_method=auth_method,
        http_client=httpx.Client(transport=ccflow_authority.transport()),
    ) as client:
        token = client.get_token(ccflow_authority.api("calc-api").identifier_uri)
    claims = jwt.decode(token.token, options={"verify_signature": False})
    assert claims["roles"] == ["invokeRole"]
    assert ccflow_authority.hits["token"] == 1


@pytest.mark.anyio
async def test_async_client_in_process(ccflow_authority: Authority) -> None:
    async with AsyncTokenClient(
        client_id=ccflow_authority.client("reader-client").client_id,
        client_secret=secret(ccflow_authority, "reader-client"),
        tenant_id=ccflow_authority.tenant_id,
        authority_host=ccflow_authority.host,
        http_client=httpx.AsyncClient(transport=ccflow_authority.transport()),
    ) as client:
        token = await client.get_token(ccflow_authority.api("calc-api").default_scope)
    assert "roles" not in jwt.decode(token.token, options={"verify_signature": False})


def test_sync_client_retries_through_a_fault(ccflow_authority: Authority) -> None:
    ccflow_authority.set_fault("token", Fault(status=503, retry_after="0", times=1))
    with TokenClient(
        client_id=ccflow_authority.client("calc-client").client_id,
        client_secret=secret(ccflow_authority),
        tenant_id=ccflow_authority.tenant_id,
        authority_host=ccflow_authority.host,
        http_client=httpx.Client(transport=ccflow_authority.transport()),
    ) as client:
        client.get_token(ccflow_authority.api("calc-api").default_scope)
    assert ccflow_authority.hits["token"] == 2


def test_sync_client_sees_the_aadsts_code(ccflow_authority: Authority) -> None:
    with (
        TokenClient(
            client_id=ccflow_authority.client("calc-client").client_id,
            client_secret="wrong",
            tenant_id=ccflow_authority.tenant_id,
            authority_host=ccflow_authority.host,
            http_client=httpx.Client(transport=ccflow_authority.transport()),
        ) as client,
        pytest.raises(TokenRequestError) as exc,
    ):
        client.get_token(ccflow_authority.api("calc-api").default_scope)
    assert exc.value.aadsts_code == 7000215


def _over_tls(server: AuthorityServer) -> dict[str, str]:
    """The calc-client settings of a token client of ``server`` over its HTTPS URL."""
    return {
        "client_id": server.authority.client("calc-client").client_id,
        "client_secret": secret(server.authority),
        "tenant_id": server.authority.tenant_id,
        "authority_host": server.url,
    }


def test_sync_client_over_tls(server: AuthorityServer) -> None:
    ctx = ssl.create_default_context(cafile=str(server.ca_file))
    with (
        httpx.Client(verify=ctx) as http,
        TokenClient(**_over_tls(server), http_client=http) as client,
    ):
        token = client.get_token(server.authority.api("calc-api").default_scope)
    assert token.token.count(".") == 2


@pytest.mark.anyio
async def test_async_client_over_tls(server: AuthorityServer) -> None:
    ctx = ssl.create_default_context(cafile=str(server.ca_file))
    async with (
        httpx.AsyncClient(verify=ctx) as http,
        AsyncTokenClient(**_over_tls(server), http_client=http) as client,
    ):
        token = await client.get_token(server.authority.api("calc-api").default_scope)
    assert token.token.count(".") == 2
