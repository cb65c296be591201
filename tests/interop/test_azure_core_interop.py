"""azure-core and azure-identity with ccflow, over real sockets on 127.0.0.1: the local
authority (TLS) and the calc API (uvicorn).

- azure-core's own BearerTokenCredentialPolicy / AsyncBearerTokenCredentialPolicy take
  TokenClient / AsyncTokenClient as their credential (get_token_info, and get_token alone),
  and answer a CAE claims challenge with a fresh token;
- ccflow's BearerAuth takes azure-identity's ClientSecretCredential.
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from azure.core.pipeline import AsyncPipeline, Pipeline
from azure.core.pipeline.policies import (
    AsyncBearerTokenCredentialPolicy,
    BearerTokenCredentialPolicy,
)
from azure.core.pipeline.transport import AsyncioRequestsTransport, RequestsTransport
from azure.core.rest import HttpRequest
from azure.identity import ClientSecretCredential
from tests.support import served

from ccflow import AsyncTokenClient, TokenClient, TokenValidator
from ccflow.authority import AuthorityServer
from ccflow.httpx_auth import AsyncBearerAuth, BearerAuth

CLAIMS = json.dumps({"access_token": {"nbf": {"essential": True, "value": "1767225600"}}})


class Challenger:
    """ASGI middleware: answers a CAE claims challenge (401, error="insufficient_claims") to
    every token in ``revoked``, as an Azure resource does after a revocation event."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.revoked: set[str] = set()
        self.challenged = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            header = dict(scope["headers"]).get(b"authorization", b"").decode()
            if header.removeprefix("Bearer ") in self.revoked:
                self.challenged += 1
                await self._challenge(send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def _challenge(send: Any) -> None:
        claims = base64.urlsafe_b64encode(CLAIMS.encode()).decode().rstrip("=")
        value = f'Bearer realm="", error="insufficient_claims", claims="{claims}"'
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [(b"www-authenticate", value.encode()), (b"content-length", b"0")],
            }
        )
        await send({"type": "http.response.body", "body": b""})


@dataclass
class Bed:
    server: AuthorityServer
    api_url: str
    challenger: Challenger
    scope: str = field(init=False)

    def __post_init__(self) -> None:
        self.scope = self.server.authority.api("calc-api").default_scope

    def client_settings(self) -> dict[str, Any]:
        authority = self.server.authority
        calc_client = authority.client("calc-client")
        return {
            "client_id": calc_client.client_id,
            "client_secret": calc_client.secret,
            "tenant_id": authority.tenant_id,
            "authority_host": self.server.url,
        }

    @property
    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.server.ca_file))


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    from examples.calc_api.app import create_app

    with AuthorityServer(tls=True) as server:
        authority = server.authority
        api = authority.api("calc-api")
        validator = TokenValidator(
            tenant_id=authority.tenant_id,
            authority_host=server.url,
            audience=[api.client_id, api.identifier_uri],
            # No kept-alive connections: the client lives in uvicorn's loop and is never closed.
            http_client=httpx.AsyncClient(
                verify=ssl.create_default_context(cafile=str(server.ca_file)),
                limits=httpx.Limits(max_keepalive_connections=0),
            ),
        )
        challenger = Challenger(create_app(validator))
        with served(challenger, lifespan="off") as url:
            yield Bed(server, url, challenger)


class OnlyGetToken:
    """A TokenClient seen as an azure-core TokenCredential (no get_token_info)."""

    def __init__(self, client: TokenClient) -> None:
        self.client = client

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        return self.client.get_token(*scopes, **kwargs)


def add(pipeline: Pipeline[Any, Any], bed: Bed) -> Any:
    request = HttpRequest("GET", f"{bed.api_url}/calc/v1/add/2/3")
    # The calc API listens on plain http on loopback; the policy insists on https by default.
    return pipeline.run(request, enforce_https=False).http_response


@pytest.mark.parametrize("wrap", [lambda c: c, OnlyGetToken], ids=["get_token_info", "get_token"])
def test_azure_cores_policy_takes_a_token_client(bed: Bed, wrap: Any) -> None:
    with (
        httpx.Client(verify=bed.tls) as http,
        TokenClient(**bed.client_settings(), http_client=http) as client,
    ):
        policy = BearerTokenCredentialPolicy(wrap(client), bed.scope)
        with Pipeline(transport=RequestsTransport(), policies=[policy]) as pipeline:
            response = add(pipeline, bed)
    assert response.status_code == 200
    assert response.json()["result"] == 5


@pytest.mark.parametrize("wrap", [lambda c: c, OnlyGetToken], ids=["get_token_info", "get_token"])
def test_a_claims_challenge_gets_a_fresh_token(bed: Bed, wrap: Any) -> None:
    hits = bed.server.authority.hits
    with (
        httpx.Client(verify=bed.tls) as http,
        TokenClient(**bed.client_settings(), http_client=http) as client,
    ):
        policy = BearerTokenCredentialPolicy(wrap(client), bed.scope)
        with Pipeline(transport=RequestsTransport(), policies=[policy]) as pipeline:
            assert add(pipeline, bed).status_code == 200
            challenged, before = client.get_token(bed.scope), hits["token"]
            bed.challenger.revoked.add(challenged.token)
            response = add(pipeline, bed)
        fresh = client.get_token(bed.scope)
    assert response.status_code == 200
    assert bed.challenger.challenged >= 1
    assert hits["token"] == before + 1
    assert fresh.token != challenged.token


@pytest.mark.anyio
async def test_azure_cores_async_policy_takes_an_async_token_client(bed: Bed) -> None:
    async with (
        httpx.AsyncClient(verify=bed.tls) as http,
        AsyncTokenClient(**bed.client_settings(), http_client=http) as client,
    ):
        policy = AsyncBearerTokenCredentialPolicy(client, bed.scope)
        async with AsyncPipeline(
            transport=AsyncioRequestsTransport(), policies=[policy]
        ) as pipeline:
            request = HttpRequest("GET", f"{bed.api_url}/calc/v1/add/2/3")
            first = (await pipeline.run(request, enforce_https=False)).http_response
            challenged = await client.get_token(bed.scope)
            bed.challenger.revoked.add(challenged.token)
            request = HttpRequest("GET", f"{bed.api_url}/calc/v1/add/2/3")
            second = (await pipeline.run(request, enforce_https=False)).http_response
        fresh = await client.get_token(bed.scope)
    assert (first.status_code, second.status_code) == (200, 200)
    assert fresh.token != challenged.token


def azure_identity_credential(bed: Bed) -> ClientSecretCredential:
    settings = bed.client_settings()
    return ClientSecretCredential(
        settings["tenant_id"],
        settings["client_id"],
        settings["client_secret"],
        authority=bed.server.url,
        disable_instance_discovery=True,
        connection_verify=str(bed.server.ca_file),
    )


def test_bearer_auth_takes_azure_identitys_credential(bed: Bed) -> None:
    credential = azure_identity_credential(bed)
    try:
        auth = BearerAuth(credential, bed.scope)
        with httpx.Client(auth=auth) as http:
            first = http.get(f"{bed.api_url}/calc/v1/add/2/3")
            second = http.get(f"{bed.api_url}/calc/v1/add/4/5")
    finally:
        credential.close()
    assert first.json()["result"] == 5
    assert second.json()["result"] == 9


@pytest.mark.anyio
async def test_async_bearer_auth_takes_azure_identitys_credential(bed: Bed) -> None:
    credential = azure_identity_credential(bed)
    try:
        async with httpx.AsyncClient(auth=AsyncBearerAuth(credential, bed.scope)) as http:
            response = await http.get(f"{bed.api_url}/calc/v1/add/2/3")
    finally:
        credential.close()
    assert response.json()["result"] == 5
