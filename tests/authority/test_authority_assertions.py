"""private_key_jwt: the local authority checks client assertions as Azure AD does."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qsl

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from tests.support import START, certificate_authority

from ccflow import ClientCertificate, TokenClient
from ccflow.authority import JWT_BEARER, Authority, Registrations
from ccflow.testing import CertificateMaterial, client_assertion, client_certificate

NOW = START


@pytest.fixture
def authority(cert: CertificateMaterial) -> Authority:
    return certificate_authority(cert)


@pytest.fixture
def http(authority: Authority) -> httpx.Client:
    return httpx.Client(transport=authority.transport())


def assertion_for(authority: Authority, cert: CertificateMaterial, **kwargs: Any) -> str:
    options: dict[str, Any] = {
        "client_id": authority.client("calc-client").client_id,
        "audience": authority.token_endpoint,
        "now": NOW,
    }
    options.update(kwargs)
    return client_assertion(cert, **options)


def post(authority: Authority, http: httpx.Client, assertion: str, **extra: str) -> httpx.Response:
    data = {
        "grant_type": "client_credentials",
        "client_id": authority.client("calc-client").client_id,
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion,
        "scope": authority.api("calc-api").default_scope,
        **extra,
    }
    return http.post(authority.token_endpoint, data=data)


def error_code(response: httpx.Response) -> int:
    codes: list[int] = response.json()["error_codes"]
    return codes[0]


@pytest.mark.parametrize("style", ["x5t#S256", "x5t"])
def test_assertion_with_either_thumbprint_header_gets_a_token(
    authority: Authority, http: httpx.Client, cert: CertificateMaterial, style: Any
) -> None:
    response = post(authority, http, assertion_for(authority, cert, header_style=style))
    assert response.status_code == 200
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert claims["azpacr"] == "2"
    assert claims["roles"] == ["invokeRole"]


def test_float_times_are_accepted(
    authority: Authority, http: httpx.Client, cert: CertificateMaterial
) -> None:
    # msal writes exp and iat as floats (time.time() + 600).
    assertion = assertion_for(authority, cert, claims={"exp": NOW + 600.5, "iat": NOW + 0.25})
    assert post(authority, http, assertion).status_code == 200


REJECTIONS = [
    # (case, assertion options, AADSTS code)
    ("expired", {"now": NOW - 700}, 700024),
    ("too far ahead", {"lifetime": 86400}, 700024),
    ("not yet valid", {"claims": {"nbf": NOW + 3600}}, 700024),
    (
        "wrong audience",
        {"audience": "https://login.microsoftonline.com/x/oauth2/v2.0/token"},
        700023,
    ),
    ("wrong issuer", {"claims": {"iss": "someone-else"}}, 700021),
    ("wrong subject", {"claims": {"sub": "someone-else"}}, 700021),
    ("no exp", {"claims": {"exp": None}}, 50027),
    ("no jti", {"claims": {"jti": None}}, 50027),
]


@pytest.mark.parametrize(("case", "options", "code"), REJECTIONS, ids=[r[0] for r in REJECTIONS])
def test_bad_assertions_are_refused(
    authority: Authority,
    http: httpx.Client,
    cert: CertificateMaterial,
    case: str,
    options: dict[str, Any],
    code: int,
) -> None:
    response = post(authority, http, assertion_for(authority, cert, **options))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert error_code(response) == code
    assert response.json()["error_description"].startswith(f"AADSTS{code}: ")


def test_a_seen_jti_in_another_assertion_is_refused(
    authority: Authority, http: httpx.Client, cert: CertificateMaterial
) -> None:
    assert post(authority, http, assertion_for(authority, cert, jti="once")).status_code == 200
    replay = post(authority, http, assertion_for(authority, cert, jti="once", lifetime=500))
    assert replay.status_code == 401
    assert replay.json()["error"] == "invalid_client"
    assert error_code(replay) == 700229
    assert "already been used" in replay.json()["error_description"]


def test_the_same_assertion_may_be_presented_again_as_in_azure_ad(
    authority: Authority, http: httpx.Client, cert: CertificateMaterial
) -> None:
    assertion = assertion_for(authority, cert, jti="reused")
    assert post(authority, http, assertion).status_code == 200
    assert post(authority, http, assertion).status_code == 200


def test_one_time_assertions_refuse_the_same_assertion_twice(cert: CertificateMaterial) -> None:
    authority = Authority(
        Registrations.default().with_certificate("calc-client", cert.certificate_pem),
        clock=lambda: NOW,
        one_time_assertions=True,
    )
    with httpx.Client(transport=authority.transport()) as http:
        assertion = assertion_for(authority, cert, jti="once")
        assert post(authority, http, assertion).status_code == 200
        replay = post(authority, http, assertion)
    assert replay.status_code == 401
    assert error_code(replay) == 700229


def test_invalid_signature_is_700027(
    authority: Authority, http: httpx.Client, cert: CertificateMaterial
) -> None:
    header, payload, signature = assertion_for(authority, cert).split(".")
    forged = f"{header}.{payload}.{signature[:-8]}AAAAAAAA"
    response = post(authority, http, forged)
    assert (response.status_code, error_code(response)) == (401, 700027)
    assert "invalid signature" in response.json()["error_description"]


def test_unregistered_certificate_is_700027(authority: Authority, http: httpx.Client) -> None:
    other = client_certificate("not registered")
    response = post(authority, http, assertion_for(authority, other))
    assert (response.status_code, error_code(response)) == (401, 700027)
    assert "not registered" in response.json()["error_description"]


def test_signed_by_another_key_under_a_registered_thumbprint_is_700027(
    authority: Authority, http: httpx.Client, cert: CertificateMaterial
) -> None:
    other = client_certificate("impostor")
    assertion = jwt.encode(
        jwt.decode(assertion_for(authority, cert), options={"verify_signature": False}),
        other.private_key,
        algorithm="PS256",
        headers={"x5t#S256": cert.x5t_s256},
    )
    response = post(authority, http, assertion)
    assert (response.status_code, error_code(response)) == (401, 700027)


@pytest.mark.parametrize("assertion", ["garbage", "a.b.c", "", "eyJhbGciOiJub25lIn0.e30."])
def test_malformed_assertions_are_refused(
    authority: Authority, http: httpx.Client, assertion: str
) -> None:
    response = post(authority, http, assertion)
    assert response.status_code in (400, 401)
    assert response.json()["error_description"].startswith("AADSTS")


def test_hs256_assertion_is_refused(
    authority: Authority, http: httpx.Client, cert: CertificateMaterial
) -> None:
    assertion = jwt.encode(
        {"iss": "x"}, "k" * 32, algorithm="HS256", headers={"x5t#S256": cert.x5t_s256}
    )
    response = post(authority, http, assertion)
    assert response.status_code == 401


def test_wrong_assertion_type_is_400(
    authority: Authority, http: httpx.Client, cert: CertificateMaterial
) -> None:
    response = post(
        authority, http, assertion_for(authority, cert), client_assertion_type="urn:something:else"
    )
    assert response.status_code == 400
    assert error_code(response) == 9002313


def test_client_without_certificates_cannot_use_assertions(
    authority: Authority, http: httpx.Client, cert: CertificateMaterial
) -> None:
    reader = authority.client("reader-client").client_id
    assertion = assertion_for(authority, cert, client_id=reader)
    response = post(authority, http, assertion, client_id=reader)
    assert (response.status_code, error_code(response)) == (401, 700027)


def test_certificate_material_repr_hides_the_key(cert: CertificateMaterial) -> None:
    assert b"PRIVATE KEY" in cert.private_key_pem
    assert "PRIVATE" not in repr(cert)


def test_padded_thumbprints_match(authority: Authority, cert: CertificateMaterial) -> None:
    client = authority.client("calc-client")
    assert client.certificate(x5t_s256=cert.x5t_s256 + "=") is not None
    assert client.certificate(x5t=cert.x5t + "=") is not None


# --- x5c: optional, but when sent its first certificate must be the registered one -----------


def signed(
    authority: Authority, cert: CertificateMaterial, header: dict[str, Any], **claims: Any
) -> str:
    """An assertion signed by ``cert`` with exactly ``header`` (besides ``alg``/``typ``)."""
    body = jwt.decode(assertion_for(authority, cert), options={"verify_signature": False})
    body.update(claims)
    return jwt.encode(body, cert.private_key, algorithm="PS256", headers=header)


def der_b64(cert: CertificateMaterial) -> str:
    return base64.b64encode(cert.certificate.public_bytes(serialization.Encoding.DER)).decode()


@pytest.mark.parametrize("chain", [False, True], ids=["no x5c", "x5c chain"])
def test_client_certificate_with_and_without_the_chain_gets_a_token(
    authority: Authority, cert: CertificateMaterial, chain: bool
) -> None:
    intermediate = client_certificate("some issuing CA")
    credential = ClientCertificate(
        cert.pem + intermediate.certificate_pem, send_certificate_chain=chain
    )
    sent: list[str] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(dict(parse_qsl(request.read().decode()))["client_assertion"])
        return authority.handle(request)

    client = TokenClient(
        client_id=authority.client("calc-client").client_id,
        credential=credential,
        token_endpoint=authority.token_endpoint,
        http_client=httpx.Client(transport=httpx.MockTransport(record)),
        clock=lambda: NOW,
        max_retries=0,
    )
    with client:
        token = client.get_token(authority.api("calc-api").default_scope)
    assert jwt.decode(token.token, options={"verify_signature": False})["azpacr"] == "2"
    (assertion,) = sent
    header = jwt.get_unverified_header(assertion)
    assert header.get("x5c") == ([der_b64(cert), der_b64(intermediate)] if chain else None)


def test_assertion_without_x5c_is_accepted(
    authority: Authority, http: httpx.Client, cert: CertificateMaterial
) -> None:
    assertion = signed(authority, cert, {"x5t#S256": cert.x5t_s256})
    assert "x5c" not in jwt.get_unverified_header(assertion)
    assert post(authority, http, assertion).status_code == 200


def test_x5c_as_msal_sends_it_pem_body_with_line_breaks_is_accepted(
    authority: Authority, http: httpx.Client, cert: CertificateMaterial
) -> None:
    body = cert.certificate_pem.decode().split("-----")[2].strip()
    assert "\n" in body
    assertion = signed(authority, cert, {"x5t#S256": cert.x5t_s256, "x5c": [body]})
    assert post(authority, http, assertion).status_code == 200


MISMATCHED_CHAINS = {
    "another certificate": lambda cert, other: [der_b64(other)],
    "the registered certificate second": lambda cert, other: [der_b64(other), der_b64(cert)],
}


@pytest.mark.parametrize("chain", MISMATCHED_CHAINS.values(), ids=MISMATCHED_CHAINS.keys())
def test_x5c_that_is_not_the_thumbprinted_certificate_is_700027(
    authority: Authority, http: httpx.Client, cert: CertificateMaterial, chain: Any
) -> None:
    other = client_certificate("impostor chain")
    assertion = signed(authority, cert, {"x5t#S256": cert.x5t_s256, "x5c": chain(cert, other)})
    response = post(authority, http, assertion)
    assert (response.status_code, error_code(response)) == (401, 700027)
    assert response.json()["error"] == "invalid_client"
    description = response.json()["error_description"]
    assert "'x5c' header is not the certificate its thumbprint names" in description
    assert other.x5t_s256 in description
    assert authority.client("calc-client").certificates[0].thumbprint in description


@pytest.mark.parametrize(
    "x5c", [[], "MIIB", [7], ["not base64 !"]], ids=["empty", "string", "number", "garbage"]
)
def test_malformed_x5c_is_refused(
    authority: Authority, http: httpx.Client, cert: CertificateMaterial, x5c: Any
) -> None:
    assertion = signed(authority, cert, {"x5t#S256": cert.x5t_s256, "x5c": x5c})
    response = post(authority, http, assertion)
    assert (response.status_code, error_code(response)) == (401, 50027)
    assert "x5c" in response.json()["error_description"]


def test_an_upper_case_client_id_in_form_and_assertion_is_the_same_client(
    authority: Authority, http: httpx.Client, cert: CertificateMaterial
) -> None:
    # Client ids are GUIDs, matched in any case as in Azure AD.
    upper = authority.client("calc-client").client_id.upper()
    response = post(
        authority, http, assertion_for(authority, cert, client_id=upper), client_id=upper
    )
    assert response.status_code == 200, response.text


def test_an_assertion_at_the_v1_endpoint_must_name_the_v1_endpoint(
    authority: Authority, http: httpx.Client, cert: CertificateMaterial
) -> None:
    def post_v1(audience: str) -> httpx.Response:
        data = {
            "grant_type": "client_credentials",
            "client_id": authority.client("calc-client").client_id,
            "client_assertion_type": JWT_BEARER,
            "client_assertion": assertion_for(authority, cert, audience=audience),
            "resource": authority.api("calc-api").identifier_uri,
        }
        return http.post(authority.endpoints(version=1).token_endpoint, data=data)

    assert post_v1(authority.endpoints(version=1).token_endpoint).status_code == 200
    wrong = post_v1(authority.token_endpoint)
    assert wrong.status_code == 401
    assert error_code(wrong) == 700023


def test_an_assertion_aud_differing_only_in_case_is_accepted(
    authority: Authority, http: httpx.Client, cert: CertificateMaterial
) -> None:
    # The tenant segment is a GUID, matched in any case (msal may spell it as configured).
    audience = authority.token_endpoint.replace(authority.tenant_id, authority.tenant_id.upper())
    assert audience != authority.token_endpoint
    assert post(authority, http, assertion_for(authority, cert, audience=audience)).is_success
