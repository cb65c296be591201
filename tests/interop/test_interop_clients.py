"""Microsoft's own clients (msal, azure-identity) against the local authority's TLS server."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import jwt
import msal
import pytest
import requests
from azure.core.credentials import AccessToken
from azure.identity import CertificateCredential, ClientSecretCredential
from cryptography.hazmat.primitives import hashes

from ccflow.authority import AuthorityServer, Outcome, Registrations
from ccflow.testing import CertificateMaterial, client_certificate


@pytest.fixture(scope="module")
def cert() -> CertificateMaterial:
    return client_certificate("msal interop")


@pytest.fixture(scope="module")
def server(cert: CertificateMaterial) -> Iterator[AuthorityServer]:
    regs = Registrations.default().with_certificate("calc-client", cert.certificate_pem)
    with AuthorityServer(regs, tls=True) as running:
        yield running


@pytest.fixture(autouse=True)
def _no_env_ca_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    # requests lets these override an explicit verify=; the test trusts only the local CA.
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


def session_for(server: AuthorityServer) -> requests.Session:
    session = requests.Session()
    session.verify = str(server.ca_file)
    return session


def verify_with_served_jwks(server: AuthorityServer, token: str) -> dict[str, Any]:
    ctx = ssl.create_default_context(cafile=str(server.ca_file))
    with httpx.Client(verify=ctx) as http:
        discovery = http.get(server.authority.discovery_url).json()
        jwks = jwt.PyJWKSet.from_dict(http.get(discovery["jwks_uri"]).json())
    key = jwks[jwt.get_unverified_header(token)["kid"]]
    claims: dict[str, Any] = jwt.decode(
        token,
        key.key,
        algorithms=["RS256"],
        audience=server.authority.api("calc-api").client_id,
        issuer=discovery["issuer"],
    )
    return claims


def msal_app(server: AuthorityServer, credential: Any) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        server.authority.client("calc-client").client_id,
        client_credential=credential,
        authority=f"{server.url}/{server.authority.tenant_id}",
        instance_discovery=False,
        http_client=session_for(server),
    )


def test_msal_with_a_secret(server: AuthorityServer) -> None:
    app = msal_app(server, server.authority.client("calc-client").secret)
    result = app.acquire_token_for_client([server.authority.api("calc-api").default_scope])
    assert "access_token" in result, result.get("error_description")
    claims = verify_with_served_jwks(server, result["access_token"])
    assert claims["azp"] == server.authority.client("calc-client").client_id
    assert claims["azpacr"] == "1"
    assert claims["roles"] == ["invokeRole"]


def test_msal_with_a_wrong_secret_sees_the_aadsts_code(server: AuthorityServer) -> None:
    app = msal_app(server, "wrong")
    result = app.acquire_token_for_client([server.authority.api("calc-api").default_scope])
    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [7000215]


def test_msal_with_a_certificate(server: AuthorityServer, cert: CertificateMaterial) -> None:
    credential = {
        "private_key": cert.private_key_pem.decode(),
        "public_certificate": cert.certificate_pem.decode(),
    }
    app = msal_app(server, credential)
    result = app.acquire_token_for_client([server.authority.api("calc-api").default_scope])
    assert "access_token" in result, result.get("error_description")
    claims = verify_with_served_jwks(server, result["access_token"])
    assert claims["azpacr"] == "2"


def test_msal_with_a_sha1_thumbprint(server: AuthorityServer, cert: CertificateMaterial) -> None:
    thumbprint = cert.certificate.fingerprint(hashes.SHA1())
    credential = {"private_key": cert.private_key_pem.decode(), "thumbprint": thumbprint.hex()}
    app = msal_app(server, credential)
    result = app.acquire_token_for_client([server.authority.api("calc-api").default_scope])
    assert "access_token" in result, result.get("error_description")


def _azure_identity_options(server: AuthorityServer) -> dict[str, Any]:
    """The keywords that point an azure-identity credential at ``server`` over its TLS."""
    return {
        "authority": server.url,
        "disable_instance_discovery": True,
        "connection_verify": str(server.ca_file),
    }


def _token_and_claims(
    server: AuthorityServer, credential: ClientSecretCredential | CertificateCredential
) -> tuple[AccessToken, dict[str, Any]]:
    """The credential's calc-api token (closing it), and its claims checked with the JWKS."""
    try:
        token = credential.get_token(server.authority.api("calc-api").default_scope)
    finally:
        credential.close()
    return token, verify_with_served_jwks(server, token.token)


def test_azure_identity_client_secret_credential(server: AuthorityServer) -> None:
    client = server.authority.client("calc-client")
    assert client.secret is not None
    credential = ClientSecretCredential(
        server.authority.tenant_id,
        client.client_id,
        client.secret,
        **_azure_identity_options(server),
    )
    token, claims = _token_and_claims(server, credential)
    assert claims["azp"] == client.client_id
    assert token.expires_on == claims["exp"] or abs(token.expires_on - claims["exp"]) <= 5


@pytest.fixture
def sent_assertions(server: AuthorityServer, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Client assertions the server receives during the test (a spy around Authority.serve)."""
    seen: list[str] = []
    serve = server.authority.serve

    def spy(request: httpx.Request) -> Outcome:
        form = dict(parse_qsl(request.read().decode("ascii", "replace")))
        if "client_assertion" in form:
            seen.append(form["client_assertion"])
        return serve(request)

    monkeypatch.setattr(server.authority, "serve", spy)
    return seen


@pytest.mark.parametrize("chain", [False, True], ids=["no chain", "send_certificate_chain"])
def test_azure_identity_certificate_credential(
    server: AuthorityServer,
    cert: CertificateMaterial,
    sent_assertions: list[str],
    tmp_path: Path,
    chain: bool,
) -> None:
    path = tmp_path / "calc-client.pem"
    path.write_bytes(cert.private_key_pem + cert.certificate_pem)
    client = server.authority.client("calc-client")
    credential = CertificateCredential(
        server.authority.tenant_id,
        client.client_id,
        certificate_path=str(path),
        send_certificate_chain=chain,
        **_azure_identity_options(server),
    )
    _, claims = _token_and_claims(server, credential)
    assert claims["azp"] == client.client_id
    assert claims["azpacr"] == "2"
    assert claims["roles"] == ["invokeRole"]
    (assertion,) = sent_assertions
    header = jwt.get_unverified_header(assertion)
    assert header["x5t"].rstrip("=") == cert.x5t  # RS256 with the SHA-1 thumbprint (msal pads it)
    assert ("x5c" in header) is chain
