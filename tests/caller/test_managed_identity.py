"""TokenClient over a managed identity, on the local authority's IMDS and App Service
endpoints: the same cache, single flight, refresh and retries as every credential; from_env()
only when asked; the header secret never shown."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from ccflow import (
    AsyncTokenClient,
    ClientCertificate,
    ClientSecret,
    ConfigurationError,
    ManagedIdentity,
    TokenClient,
    TokenRequestError,
)
from ccflow.authority import Authority, AuthorityServer, Fault
from ccflow.credentials import CREDENTIAL_VARIABLES, FederatedTokenFile, credential_from_env
from ccflow.testing import client_certificate

KINDS = ["imds", "app_service"]


def identity_client(
    authority: Authority, kind: str, *, client_id: str | None = None, **options: Any
) -> tuple[TokenClient, list[float]]:
    sleeps: list[float] = []
    credential = ManagedIdentity(client_id, environ=authority.identity_environ(kind))
    client = TokenClient(
        credential=credential,
        http_client=httpx.Client(transport=authority.transport()),
        clock=authority.clock,
        sleep=sleeps.append,
        **options,
    )
    return client, sleeps


def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


@pytest.mark.parametrize("kind", KINDS)
def test_the_system_assigned_identity_gets_a_token(
    authority: Authority, scope: str, kind: str
) -> None:
    client, _ = identity_client(authority, kind)
    token = client.get_token(scope)
    claims = claims_of(token.token)
    assert claims["azp"] == authority.client("calc-client").client_id
    assert claims["aud"] == authority.api("calc-api").client_id
    assert token.expires_on == claims["exp"]
    assert token.scopes == (scope,)


@pytest.mark.parametrize("kind", KINDS)
def test_a_user_assigned_identity_is_chosen_by_client_id(
    authority: Authority, scope: str, kind: str
) -> None:
    reader = authority.client("reader-client").client_id
    client, _ = identity_client(authority, kind, client_id=reader)
    assert claims_of(client.get_token(scope).token)["azp"] == reader
    assert client.client_id == f"managed identity {reader}"


def test_a_bare_resource_is_completed_and_asked_as_a_resource(authority: Authority) -> None:
    client, _ = identity_client(authority, "imds")
    token = client.get_token(authority.api("calc-api").identifier_uri)
    assert token.scopes == (authority.api("calc-api").default_scope,)


def test_tokens_are_cached_and_refreshed_like_any_other(
    authority: Authority, scope: str, clock: Any
) -> None:
    client, _ = identity_client(authority, "imds")
    first = client.get_token(scope)
    assert client.get_token(scope) is first
    assert authority.hits["imds"] == 1
    clock.advance(3599 - 299)  # within the 300 s refresh margin
    assert client.get_token(scope) is not first
    assert authority.hits["imds"] == 2


@pytest.mark.parametrize("status", [404, 410, 429, 500, 503])
def test_imds_failures_are_retried_as_azure_advises(
    authority: Authority, scope: str, status: int
) -> None:
    authority.set_fault("imds", Fault(status=status, times=2))
    client, sleeps = identity_client(authority, "imds")
    client.get_token(scope)
    assert authority.hits["imds"] == 3
    assert len(sleeps) == 2
    if status == 410:  # IMDS is being updated: longer waits
        assert sleeps[0] >= 5.0
        assert sleeps[1] >= 10.0


def test_retries_stop_at_max_retries(authority: Authority, scope: str) -> None:
    authority.set_fault("app_service", Fault(status=503))
    client, sleeps = identity_client(authority, "app_service", max_retries=1)
    with pytest.raises(TokenRequestError) as info:
        client.get_token(scope)
    assert info.value.status_code == 503
    assert len(sleeps) == 1


def test_a_wrong_header_secret_is_refused_without_retries_and_never_shown(
    authority: Authority, scope: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    environ = {**authority.identity_environ("app_service"), "IDENTITY_HEADER": "s3cret-header"}
    client = TokenClient(
        credential=ManagedIdentity(environ=environ),
        http_client=httpx.Client(transport=authority.transport()),
        clock=authority.clock,
        sleep=lambda s: None,
    )
    with pytest.raises(TokenRequestError) as info:
        client.get_token(scope)
    assert info.value.status_code == 401
    assert authority.hits["app_service"] == 1
    assert "X-IDENTITY-HEADER header is missing or wrong" in str(info.value)
    for text in (str(info.value), repr(client), caplog.text):
        assert "s3cret-header" not in text


def test_an_unknown_identity_says_what_imds_said(authority: Authority, scope: str) -> None:
    client, _ = identity_client(authority, "imds", client_id="no-such-identity")
    with pytest.raises(TokenRequestError) as info:
        client.get_token(scope)
    assert info.value.error == "invalid_request"
    assert str(info.value).endswith("server said: Identity not found")


def test_an_unknown_resource_is_refused(authority: Authority) -> None:
    client, _ = identity_client(authority, "imds")
    with pytest.raises(TokenRequestError, match="AADSTS500011"):
        client.get_token("api://nobody/.default")


def test_several_scopes_are_refused_before_any_request(authority: Authority) -> None:
    client, _ = identity_client(authority, "imds")
    with pytest.raises(ConfigurationError, match="one resource at a time"):
        client.get_token("api://a/.default", "api://b/.default")
    assert authority.hits["imds"] == 0


@pytest.mark.parametrize("tenant", ["own", "another-tenant"])
def test_tenant_id_is_ignored_as_azure_identity_does(
    authority: Authority, scope: str, tenant: str
) -> None:
    # Azure Storage's and Key Vault's challenge policies pass the resource's tenant_id with
    # every request; refusing it would make a managed identity unusable with them.
    client, _ = identity_client(authority, "imds")
    tenant_id = authority.tenant_id if tenant == "own" else tenant
    assert client.get_token(scope, tenant_id=tenant_id) == client.get_token(scope)
    assert authority.hits["imds"] == 1


def test_a_malformed_tenant_id_is_still_refused(authority: Authority, scope: str) -> None:
    client, _ = identity_client(authority, "imds")
    with pytest.raises(ConfigurationError, match="tenant id"):
        client.get_token(scope, tenant_id="a/b")


@pytest.mark.parametrize(
    ("options", "setting"),
    [
        ({"client_secret": "x"}, "client_secret"),
        ({"tenant_id": "t"}, "tenant_id"),
        ({"authority_host": "https://login.test"}, "authority_host"),
        ({"token_endpoint": "https://login.test/token"}, "token_endpoint"),
        ({"client_id": "someone-else"}, "client_id"),
    ],
)
def test_settings_that_do_not_apply_are_refused(
    authority: Authority, options: dict[str, Any], setting: str
) -> None:
    credential = ManagedIdentity(environ=authority.identity_environ())
    with pytest.raises(ConfigurationError) as info:
        TokenClient(credential=credential, **options)
    assert info.value.setting == setting


def test_without_a_credential_a_client_id_is_still_required() -> None:
    with pytest.raises(ConfigurationError, match="client_id is required"):
        TokenClient(client_secret="x", tenant_id="t")


@pytest.mark.anyio
async def test_the_async_client_uses_a_managed_identity(authority: Authority, scope: str) -> None:
    credential = ManagedIdentity(environ=authority.identity_environ("app_service"))
    async with AsyncTokenClient(
        credential=credential,
        http_client=httpx.AsyncClient(transport=authority.transport()),
        clock=authority.clock,
    ) as client:
        token, _ = await client.get_token(scope)
        info = await client.get_token_info(scope)
    assert info.token == token


@pytest.mark.anyio
async def test_concurrent_callers_share_one_request(
    authority: Authority, scope: str, yielding_transport: Any
) -> None:
    credential = ManagedIdentity(environ=authority.identity_environ())
    http = httpx.AsyncClient(transport=yielding_transport(authority.handle))
    async with AsyncTokenClient(
        credential=credential, http_client=http, clock=authority.clock
    ) as c:
        tokens = await asyncio.gather(*(c.get_token(scope) for _ in range(5)))
    assert len({t.token for t in tokens}) == 1
    assert authority.hits["imds"] == 1


# -- from_env(): only when asked ----------------------------------------------------------


def test_from_env_uses_the_identity_when_asked(authority: Authority, scope: str) -> None:
    environ = {"CCFLOW_MANAGED_IDENTITY": "true", **authority.identity_environ("app_service")}
    client = TokenClient.from_env(
        environ=environ,
        http_client=httpx.Client(transport=authority.transport()),
        clock=authority.clock,
    )
    assert (
        claims_of(client.get_token(scope).token)["azp"] == authority.client("calc-client").client_id
    )


def test_from_env_takes_azure_client_id_as_the_user_assigned_identity(
    authority: Authority,
) -> None:
    reader = authority.client("reader-client").client_id
    environ = {
        "CCFLOW_MANAGED_IDENTITY": "1",
        "AZURE_CLIENT_ID": reader,
        "AZURE_TENANT_ID": "ignored",
        **authority.identity_environ(),
    }
    credential = credential_from_env(environ)
    assert isinstance(credential, ManagedIdentity)
    assert credential.client_id == reader


def test_every_other_credential_comes_first(authority: Authority, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("projected-token")
    pem = tmp_path / "client.pem"
    pem.write_bytes(client_certificate().pem)
    asked = {"CCFLOW_MANAGED_IDENTITY": "true", **authority.identity_environ()}
    for other, kind in (
        ({"AZURE_CLIENT_SECRET": "x"}, ClientSecret),
        ({"AZURE_CLIENT_CERTIFICATE_PATH": str(pem)}, ClientCertificate),
        ({"AZURE_FEDERATED_TOKEN_FILE": str(token_file)}, FederatedTokenFile),
    ):
        assert isinstance(credential_from_env({**asked, **other}), kind)


@pytest.mark.parametrize("value", ["", "false", "0", "no"])
def test_the_identity_is_never_guessed(authority: Authority, value: str) -> None:
    environ = {"CCFLOW_MANAGED_IDENTITY": value, **authority.identity_environ()}
    with pytest.raises(ConfigurationError, match="CCFLOW_MANAGED_IDENTITY=true"):
        credential_from_env(environ)


def test_a_value_that_is_no_boolean_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="true or false") as info:
        credential_from_env({"CCFLOW_MANAGED_IDENTITY": "maybe"})
    assert info.value.setting == "CCFLOW_MANAGED_IDENTITY"


# -- ccflow token --managed-identity --------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("asked_by", ["flag", "environment"])
def test_ccflow_token_uses_the_managed_identity(
    kind: str, asked_by: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """By ``--managed-identity`` (a --tenant-id is then ignored, said so), or by
    CCFLOW_MANAGED_IDENTITY=true as ``from_env()`` reads it."""
    from ccflow.cli import main

    with AuthorityServer() as server:
        authority = server.authority
        for name in (
            "AZURE_CLIENT_ID",
            "IDENTITY_ENDPOINT",
            "IDENTITY_HEADER",
            *CREDENTIAL_VARIABLES,
        ):
            monkeypatch.delenv(name, raising=False)
        for name, value in authority.identity_environ(kind).items():
            monkeypatch.setenv(name, value)
        scope = authority.api("calc-api").default_scope
        if asked_by == "flag":
            args = ["token", "--managed-identity", "--scope", scope, "--tenant-id", "t"]
        else:
            monkeypatch.setenv("CCFLOW_MANAGED_IDENTITY", "true")
            args = ["-v", "token", "--scope", scope]
        status = main(args)
    out, err = capsys.readouterr()
    assert status == 0, err
    assert claims_of(out.strip())["azp"] == authority.client("calc-client").client_id
    if asked_by == "flag":
        assert "--tenant-id is ignored" in err
    assert "ccflow-local-identity-header" not in out + err


def test_ccflow_token_managed_identity_needs_a_scope(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ccflow.cli import main

    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://127.0.0.1:9")
    assert main(["token", "--managed-identity"]) == 2
    assert "no scope" in capsys.readouterr().err
