"""The local authority's managed identity endpoints answer as Azure hosts do: IMDS and the
App Service endpoint, their proofs, their errors, their token bodies."""

from __future__ import annotations

from typing import Any

import httpx
import jwt
import pytest

from ccflow import ManagedIdentity, TokenClient
from ccflow.authority import Authority, AuthorityServer, Registrations

IMDS = "/metadata/identity/oauth2/token"
APP_SERVICE = "/msi/token"
HEADER = {"X-IDENTITY-HEADER": "ccflow-local-identity-header"}


def get(
    authority: Authority, path: str, params: dict[str, str], headers: dict[str, str]
) -> httpx.Response:
    with httpx.Client(transport=authority.transport()) as http:
        return http.get(f"{authority.host}{path}", params=params, headers=headers)


def imds_params(authority: Authority, **more: str) -> dict[str, str]:
    return {
        "api-version": "2018-02-01",
        "resource": authority.api("calc-api").identifier_uri,
        **more,
    }


def app_params(authority: Authority, **more: str) -> dict[str, str]:
    return {
        "api-version": "2019-08-01",
        "resource": authority.api("calc-api").identifier_uri,
        **more,
    }


def test_imds_without_the_metadata_header_answers_as_azure(authority: Authority) -> None:
    response = get(authority, IMDS, imds_params(authority), {})
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_request",
        "error_description": "Required metadata header not specified",
    }


def test_imds_answers_with_every_number_a_string(authority: Authority) -> None:
    response = get(authority, IMDS, imds_params(authority), {"Metadata": "true"})
    assert response.status_code == 200
    body = response.json()
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert body["expires_in"] == str(authority.token_lifetime)
    assert body["expires_on"] == str(claims["exp"])
    assert body["resource"] == authority.api("calc-api").identifier_uri
    assert body["token_type"] == "Bearer"
    assert claims["azp"] == authority.client("calc-client").client_id
    assert claims["azpacr"] == "2"


def test_app_service_answers_expires_on_without_expires_in(authority: Authority) -> None:
    body = get(authority, APP_SERVICE, app_params(authority), HEADER).json()
    assert "expires_in" not in body
    assert body["client_id"] == authority.client("calc-client").client_id
    assert body["expires_on"].isdigit()


@pytest.mark.parametrize("headers", [{}, {"X-IDENTITY-HEADER": "wrong"}])
def test_app_service_refuses_a_missing_or_wrong_header(
    authority: Authority, headers: dict[str, str]
) -> None:
    response = get(authority, APP_SERVICE, app_params(authority), headers)
    assert response.status_code == 401
    assert response.json()["statusCode"] == 401
    assert "X-IDENTITY-HEADER" in response.json()["message"]


@pytest.mark.parametrize(
    ("params", "status", "text"),
    [
        ({"resource": "api://x"}, 400, "'api-version' is missing"),
        ({"api-version": "2017-09-01", "resource": "api://x"}, 400, "Invalid version"),
        ({"api-version": "2018-02-01"}, 400, "Required audience parameter not specified"),
        ({"api-version": "2018-02-01", "resource": "api://nobody"}, 400, "AADSTS500011"),
        (
            {"api-version": "2018-02-01", "resource": "api://x", "client_id": "nobody"},
            400,
            "Identity not found",
        ),
    ],
)
def test_imds_refusals(
    authority: Authority, params: dict[str, str], status: int, text: str
) -> None:
    response = get(authority, IMDS, params, {"Metadata": "true"})
    assert response.status_code == status
    assert text in response.json()["error_description"]


def test_a_client_of_another_tenant_is_no_identity_here() -> None:
    authority = Authority(Registrations.multi_tenant())
    partner = authority.client("partner-client").client_id
    response = get(authority, IMDS, imds_params(authority, client_id=partner), {"Metadata": "true"})
    assert response.json()["error_description"] == "Identity not found"


def test_a_system_identity_that_is_not_registered_is_not_found() -> None:
    authority = Authority(managed_identity="nobody")
    response = get(authority, IMDS, imds_params(authority), {"Metadata": "true"})
    assert response.status_code == 400
    assert response.json()["error_description"] == "Identity not found"


def test_only_get_is_allowed(authority: Authority) -> None:
    with httpx.Client(transport=authority.transport()) as http:
        response = http.post(f"{authority.host}{IMDS}", headers={"Metadata": "true"})
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET"


def test_identity_environ_names_both_hosts(authority: Authority) -> None:
    assert authority.identity_environ() == {"AZURE_POD_IDENTITY_AUTHORITY_HOST": authority.host}
    assert authority.identity_environ("app_service") == {
        "IDENTITY_ENDPOINT": f"{authority.host}/msi/token",
        "IDENTITY_HEADER": "ccflow-local-identity-header",
    }
    with pytest.raises(ValueError, match="kind"):
        authority.identity_environ("arc")


@pytest.mark.parametrize("kind", ["imds", "app_service"])
def test_a_real_server_on_loopback_serves_managed_identity(kind: str) -> None:
    with AuthorityServer() as server:
        authority = server.authority
        environ = authority.identity_environ(kind)
        assert all("127.0.0.1" in v for k, v in environ.items() if k != "IDENTITY_HEADER")
        with TokenClient(credential=ManagedIdentity(environ=environ)) as client:
            token = client.get_token(authority.api("calc-api").default_scope)
    claims: dict[str, Any] = jwt.decode(token.token, options={"verify_signature": False})
    assert claims["aud"] == authority.api("calc-api").client_id
