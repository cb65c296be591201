"""ClientCertificate: PEM and PKCS#12, both header styles, the chain, reuse, and every error,
all against the in-process local authority with the certificate registered on calc-client."""

from __future__ import annotations

import concurrent.futures
import datetime
import logging
import pickle
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from tests.support import START, certificate_authority, make_certificate, pem

from ccflow import (
    AsyncTokenClient,
    ClientCertificate,
    ConfigurationError,
    Credential,
    CredentialError,
    TokenClient,
    TokenRequestError,
)
from ccflow.authority import JWT_BEARER, Authority
from ccflow.credentials import RequestFields
from ccflow.testing import CertificateMaterial, client_certificate, decode_unverified

NOW = START
PASSWORD = "pfx pässword+/="


@pytest.fixture(scope="module")
def other() -> CertificateMaterial:
    return client_certificate("ccflow unregistered client")


@pytest.fixture
def authority(cert: CertificateMaterial) -> Authority:
    return certificate_authority(cert)


@pytest.fixture
def client_id(authority: Authority) -> str:
    return authority.client("calc-client").client_id


@pytest.fixture
def scope(authority: Authority) -> str:
    return authority.api("calc-api").default_scope


def token_client(
    authority: Authority, credential: Credential, clock: Callable[[], float] = lambda: NOW
) -> TokenClient:
    return TokenClient(
        client_id=authority.client("calc-client").client_id,
        credential=credential,
        token_endpoint=authority.token_endpoint,
        http_client=httpx.Client(transport=authority.transport()),
        clock=clock,
        max_retries=0,
    )


def fields_of(
    credential: ClientCertificate, authority: Authority, now: float = NOW
) -> RequestFields:
    return credential.request_fields(
        client_id=authority.client("calc-client").client_id,
        token_endpoint=authority.token_endpoint,
        auth_method="client_secret_post",
        now=now,
    )


def assertion_of(credential: ClientCertificate, authority: Authority, now: float = NOW) -> str:
    return dict(fields_of(credential, authority, now).form)["client_assertion"]


def p12(
    cert: CertificateMaterial, password: str | None, extra: list[x509.Certificate] | None = None
) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode())
        if password
        else serialization.NoEncryption()
    )
    return pkcs12.serialize_key_and_certificates(
        b"ccflow", cert.private_key, cert.certificate, extra, encryption
    )


# --- loading -----------------------------------------------------------------------------------


@pytest.fixture(
    params=["pem-bytes", "pem-path", "pem-str-path", "pem-encrypted", "pkcs12", "pkcs12-plain"]
)
def loaded(
    request: pytest.FixtureRequest, cert: CertificateMaterial, tmp_path: Path
) -> ClientCertificate:
    kind = request.param
    if kind == "pem-bytes":
        return ClientCertificate(cert.pem)
    if kind in ("pem-path", "pem-str-path"):
        path = tmp_path / "client.pem"
        path.write_bytes(cert.certificate_pem + cert.private_key_pem)  # certificate first
        return ClientCertificate(path if kind == "pem-path" else str(path))
    if kind == "pem-encrypted":
        key = cert.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(PASSWORD.encode()),
        )
        return ClientCertificate(key + cert.certificate_pem, password=PASSWORD)
    path = tmp_path / "client.pfx"
    path.write_bytes(p12(cert, PASSWORD if kind == "pkcs12" else None))
    return ClientCertificate(path, password=PASSWORD if kind == "pkcs12" else None)


def test_loaded_certificate_gets_a_token(
    loaded: ClientCertificate, authority: Authority, cert: CertificateMaterial, scope: str
) -> None:
    assert loaded.thumbprint == cert.certificate.fingerprint(hashes.SHA1()).hex().upper()
    with token_client(authority, loaded) as client:
        token = client.get_token(scope)
    _, claims = decode_unverified(token.token)
    assert claims["roles"] == ["invokeRole"]
    assert claims["azpacr"] == "2"  # certificate-authenticated


def test_is_a_credential(cert: CertificateMaterial) -> None:
    assert isinstance(ClientCertificate(cert.pem), Credential)


# --- the assertion ------------------------------------------------------------------------------


def test_assertion_fields_and_claims(
    cert: CertificateMaterial, authority: Authority, client_id: str
) -> None:
    form = dict(fields_of(ClientCertificate(cert.pem), authority, NOW + 0.7).form)
    assert form["client_id"] == client_id
    assert form["client_assertion_type"] == JWT_BEARER
    _, claims = decode_unverified(form["client_assertion"])
    assert claims["aud"] == authority.token_endpoint
    assert claims["iss"] == claims["sub"] == client_id
    assert claims["nbf"] == claims["iat"] == int(NOW)
    assert claims["exp"] == int(NOW) + 600
    assert len(claims["jti"]) >= 32


HEADER_STYLES = [
    # (algorithm, chain, expected header keys besides alg/typ)
    ("PS256", False, {"x5t#S256"}),
    ("PS256", True, {"x5t#S256", "x5c"}),
    ("RS256", False, {"x5t"}),
    ("RS256", True, {"x5t", "x5c"}),
]


@pytest.mark.parametrize(("algorithm", "chain", "keys"), HEADER_STYLES)
def test_header_style(
    cert: CertificateMaterial, authority: Authority, algorithm: str, chain: bool, keys: set[str]
) -> None:
    credential = ClientCertificate(cert.pem, send_certificate_chain=chain, algorithm=algorithm)
    header, _ = decode_unverified(assertion_of(credential, authority))
    assert header["alg"] == algorithm
    assert set(header) - {"alg", "typ"} == keys
    if "x5t#S256" in keys:
        assert header["x5t#S256"] == cert.x5t_s256
    if "x5t" in keys:
        assert header["x5t"] == cert.x5t


@pytest.mark.parametrize(("algorithm", "chain", "keys"), HEADER_STYLES)
def test_authority_accepts_each_header_style(
    cert: CertificateMaterial,
    authority: Authority,
    scope: str,
    algorithm: str,
    chain: bool,
    keys: set[str],
) -> None:
    credential = ClientCertificate(cert.pem, send_certificate_chain=chain, algorithm=algorithm)
    with token_client(authority, credential) as client:
        assert client.get_token(scope).expires_on == int(NOW) + 3599


def test_chain_is_leaf_first_standard_base64_der(tmp_path: Path) -> None:
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = make_certificate(ca_key, subject="ccflow test CA", issuer="ccflow test CA")
    leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = make_certificate(leaf_key, issuer_key=ca_key, issuer="ccflow test CA", subject="leaf")
    # The CA comes first in the file; the leaf is the one matching the key.
    credential = ClientCertificate(pem(ca, leaf_key, leaf), send_certificate_chain=True)
    fields = credential.request_fields(
        client_id="c", token_endpoint="https://x/token", auth_method="private_key_jwt", now=NOW
    )
    header, _ = decode_unverified(dict(fields.form)["client_assertion"])
    assert header["x5c"] == [
        __import__("base64").b64encode(c.public_bytes(serialization.Encoding.DER)).decode()
        for c in (leaf, ca)
    ]


def test_pkcs12_chain_includes_the_extra_certificates(cert: CertificateMaterial) -> None:
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = make_certificate(ca_key, subject="extra CA", issuer="extra CA")
    credential = ClientCertificate(p12(cert, PASSWORD, [ca]), PASSWORD, True)
    fields = credential.request_fields(
        client_id="c", token_endpoint="https://x/token", auth_method="private_key_jwt", now=NOW
    )
    header, _ = decode_unverified(dict(fields.form)["client_assertion"])
    assert len(header["x5c"]) == 2


# --- reuse ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("later", "reused"),
    [(0, True), (1, True), (539, True), (539.9, True), (540, False), (600, False), (7200, False)],
)
def test_assertion_is_reused_until_a_minute_before_expiry(
    cert: CertificateMaterial, authority: Authority, later: float, reused: bool
) -> None:
    credential = ClientCertificate(cert.pem)
    first = assertion_of(credential, authority, NOW)
    assert (assertion_of(credential, authority, NOW + later) == first) is reused


def test_renewed_assertion_is_fresh(cert: CertificateMaterial, authority: Authority) -> None:
    credential = ClientCertificate(cert.pem)
    first = decode_unverified(assertion_of(credential, authority, NOW))[1]
    second = decode_unverified(assertion_of(credential, authority, NOW + 540))[1]
    assert second["jti"] != first["jti"]
    assert second["iat"] == int(NOW) + 540
    assert second["exp"] == int(NOW) + 1140


def test_assertion_is_not_reused_for_another_endpoint_or_client(cert: CertificateMaterial) -> None:
    credential = ClientCertificate(cert.pem)

    def make(client_id: str, endpoint: str) -> str:
        fields = credential.request_fields(
            client_id=client_id, token_endpoint=endpoint, auth_method="private_key_jwt", now=NOW
        )
        return dict(fields.form)["client_assertion"]

    a = make("c1", "https://x/t1/token")
    assert make("c1", "https://x/t2/token") != a
    b = make("c2", "https://x/t2/token")
    _, claims = decode_unverified(b)
    assert (claims["iss"], claims["aud"]) == ("c2", "https://x/t2/token")


def test_token_refresh_after_the_assertion_expired_signs_a_new_one(
    cert: CertificateMaterial, scope: str
) -> None:
    now = [NOW]
    authority = certificate_authority(cert, clock=lambda: now[0])
    with token_client(authority, ClientCertificate(cert.pem), clock=lambda: now[0]) as client:
        first = client.get_token(scope)
        now[0] += 3599  # past the token's refresh time and the assertion's expiry
        second = client.get_token(scope)
    assert second.token != first.token
    assert authority.hits["token"] == 2


@pytest.mark.anyio
async def test_async_client_with_certificate(
    cert: CertificateMaterial, authority: Authority, scope: str
) -> None:
    async with AsyncTokenClient(
        client_id=authority.client("calc-client").client_id,
        credential=ClientCertificate(cert.pem, algorithm="RS256"),
        token_endpoint=authority.token_endpoint,
        http_client=httpx.AsyncClient(transport=authority.transport()),
        clock=lambda: NOW,
    ) as client:
        token = await client.get_token(scope)
    assert decode_unverified(token.token)[1]["azpacr"] == "2"


# --- errors: loading ----------------------------------------------------------------------------


def encrypted_pem(cert: CertificateMaterial) -> bytes:
    return (
        cert.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(PASSWORD.encode()),
        )
        + cert.certificate_pem
    )


@pytest.mark.parametrize(
    ("make", "password", "message"),
    [
        (encrypted_pem, "wrong-password", "wrong password"),
        (encrypted_pem, None, "encrypted: pass its password"),
        (lambda c: p12(c, PASSWORD), "wrong-password", "wrong password"),
        (lambda c: p12(c, PASSWORD), None, "no password was given"),
    ],
    ids=["pem-wrong", "pem-missing", "pkcs12-wrong", "pkcs12-missing"],
)
def test_password_errors(
    cert: CertificateMaterial,
    make: Callable[[CertificateMaterial], bytes],
    password: str | None,
    message: str,
) -> None:
    with pytest.raises(CredentialError, match=message) as info:
        ClientCertificate(make(cert), password=password)
    assert "wrong-password" not in str(info.value)
    assert PASSWORD not in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_password_for_an_unencrypted_key_is_ignored(cert: CertificateMaterial) -> None:
    assert ClientCertificate(cert.pem, password="unused").thumbprint


def test_key_not_matching_the_certificate(
    cert: CertificateMaterial, other: CertificateMaterial
) -> None:
    with pytest.raises(CredentialError, match="does not match its certificate"):
        ClientCertificate(other.private_key_pem + cert.certificate_pem)


def test_non_rsa_key_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(CredentialError, match=r"not RSA .*need an RSA key"):
        ClientCertificate(pem(key, make_certificate(key)))


def test_expired_certificate_is_warned_about_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    expired = make_certificate(key, not_after=datetime.datetime(2021, 6, 1, tzinfo=datetime.UTC))
    with (
        caplog.at_level(logging.WARNING, logger="ccflow"),
        pytest.warns(UserWarning, match="expired on 2021-06-01"),
    ):
        credential = ClientCertificate(pem(key, expired))
    assert any("expired on 2021-06-01" in r.getMessage() for r in caplog.records)
    assert credential.thumbprint in caplog.text


def test_the_expired_certificate_warning_names_the_line_that_loads_it() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    expired = make_certificate(key, not_after=datetime.datetime(2021, 6, 1, tzinfo=datetime.UTC))
    with pytest.warns(UserWarning, match="expired on 2021-06-01") as caught:
        ClientCertificate(pem(key, expired))
    assert [w.filename for w in caught] == [__file__]


def test_threads_needing_an_assertion_at_once_share_one_signature(
    cert: CertificateMaterial,
) -> None:
    credential = ClientCertificate(cert.pem)
    barrier = threading.Barrier(8)

    def one() -> str:
        barrier.wait()
        fields = credential.request_fields(
            client_id="c", token_endpoint="https://x/token", auth_method="private_key_jwt", now=NOW
        )
        return dict(fields.form)["client_assertion"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assertions = {f.result() for f in [pool.submit(one) for _ in range(8)]}
    assert len(assertions) == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not a certificate at all", "neither PEM .* nor PKCS#12"),
        (b"\x30\x03\x02\x01\x00", "cannot open the PKCS#12"),
        (client_certificate().certificate_pem, "has no private key"),
        (client_certificate().private_key_pem, "has no certificate"),
    ],
    ids=["garbage", "bad-der", "cert-only", "key-only"],
)
def test_unusable_material(data: bytes, message: str) -> None:
    with pytest.raises(CredentialError, match=message):
        ClientCertificate(data)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(CredentialError, match=r"missing\.pem"):
        ClientCertificate(tmp_path / "missing.pem")


@pytest.mark.parametrize("path", ["", "  "])
def test_an_empty_path_is_a_configuration_error(path: str) -> None:
    # Path("") is "." (the working directory): "Is a directory" would send the user astray.
    with pytest.raises(ConfigurationError, match="empty") as info:
        ClientCertificate(path)
    assert info.value.setting == "certificate"


@pytest.mark.parametrize("algorithm", ["ES256", "HS256", "ps256", ""])
def test_unknown_algorithm(cert: CertificateMaterial, algorithm: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        ClientCertificate(cert.pem, algorithm=algorithm)
    assert info.value.setting == "algorithm"


# --- errors: the authority -----------------------------------------------------------------------


def refused(
    authority: Authority,
    credential: Credential,
    scope: str,
    clock: Callable[[], float] = lambda: NOW,
) -> TokenRequestError:
    with (
        token_client(authority, credential, clock) as client,
        pytest.raises(TokenRequestError) as info,
    ):
        client.get_token(scope)
    return info.value


def test_unregistered_certificate_is_700027(
    other: CertificateMaterial, authority: Authority, scope: str
) -> None:
    error = refused(authority, ClientCertificate(other.pem), scope)
    assert (error.status_code, error.aadsts_code) == (401, 700027)


class Tampered:
    """A certificate credential whose signature is corrupted on the way."""

    def __init__(self, inner: ClientCertificate) -> None:
        self.inner = inner

    def request_fields(self, **kwargs: Any) -> RequestFields:
        form = dict(self.inner.request_fields(**kwargs).form)
        head, body, signature = form["client_assertion"].split(".")
        flipped = "A" if signature[5] != "A" else "B"
        form["client_assertion"] = f"{head}.{body}.{signature[:5]}{flipped}{signature[6:]}"
        return RequestFields(form=tuple(form.items()))


@pytest.mark.parametrize("algorithm", ["PS256", "RS256"])
def test_invalid_signature_is_700027(
    cert: CertificateMaterial, authority: Authority, scope: str, algorithm: str
) -> None:
    error = refused(authority, Tampered(ClientCertificate(cert.pem, algorithm=algorithm)), scope)  # type: ignore[arg-type]
    assert error.aadsts_code == 700027
    assert "invalid signature" in (error.error_description or "")


def test_expired_assertion_is_700024(cert: CertificateMaterial, scope: str) -> None:
    # The authority's clock is 11 minutes ahead of ours: our fresh assertion is already expired.
    authority = certificate_authority(cert, clock=lambda: NOW + 660)
    error = refused(authority, ClientCertificate(cert.pem), scope, clock=lambda: NOW)
    assert error.aadsts_code == 700024


def test_a_reused_assertion_gets_a_second_token_as_in_azure_ad(
    cert: CertificateMaterial, authority: Authority, scope: str
) -> None:
    # The assertion is reused inside its window (as msal does); the authority, like Azure AD,
    # accepts the same assertion again, so a second scope costs no new signature.
    credential = ClientCertificate(cert.pem)
    with token_client(authority, credential) as client:
        client.get_token(scope)
        client.get_token(authority.api("calc-api").client_id + "/.default")
    assert authority.hits["token"] == 2


def test_a_one_time_authority_refuses_the_reused_assertion(
    cert: CertificateMaterial, scope: str
) -> None:
    authority = certificate_authority(cert, one_time_assertions=True)
    credential = ClientCertificate(cert.pem)
    with token_client(authority, credential) as client:
        client.get_token(scope)
        with pytest.raises(TokenRequestError) as info:
            client.get_token(authority.api("calc-api").client_id + "/.default")
    assert info.value.aadsts_code == 700229
    assert "already been used" in (info.value.error_description or "")


# --- secrets stay out of sight --------------------------------------------------------------------


def test_repr_and_str_show_only_the_thumbprint(cert: CertificateMaterial) -> None:
    credential = ClientCertificate(cert.pem, send_certificate_chain=True)
    for text in (repr(credential), str(credential)):
        assert text == (
            f"ClientCertificate(thumbprint='{credential.thumbprint}', algorithm='PS256', "
            "send_certificate_chain=True)"
        )


def test_refuses_to_be_pickled(cert: CertificateMaterial) -> None:
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(ClientCertificate(cert.pem))


def test_request_fields_repr_hides_the_assertion(
    cert: CertificateMaterial, authority: Authority
) -> None:
    fields = fields_of(ClientCertificate(cert.pem), authority)
    assertion = dict(fields.form)["client_assertion"]
    assert assertion not in repr(fields)


@pytest.fixture
def key_texts(cert: CertificateMaterial) -> list[str]:
    body = cert.private_key_pem.decode().splitlines()[1:-1]
    return [line for line in body if len(line) > 20]


def test_logs_and_errors_hold_no_key_or_assertion(
    cert: CertificateMaterial,
    authority: Authority,
    scope: str,
    caplog: pytest.LogCaptureFixture,
    key_texts: list[str],
) -> None:
    credential = ClientCertificate(cert.pem)
    assertion = assertion_of(credential, authority)
    with caplog.at_level(logging.DEBUG), token_client(authority, credential) as client:
        client.get_token(scope)
        with pytest.raises(TokenRequestError) as info:
            client.get_token("api://unknown-api/.default")
    texts = [caplog.text, str(info.value), repr(info.value), repr(credential)]
    for text in texts:
        assert assertion not in text
        assert assertion.split(".")[2] not in text
        assert not any(line in text for line in key_texts)


@pytest.mark.parametrize("value", ["false", "0", "", None])
def test_send_certificate_chain_must_be_a_bool(cert: CertificateMaterial, value: object) -> None:
    # bool("false") is True: a value passed straight from the environment turned the chain on.
    with pytest.raises(ConfigurationError, match="send_certificate_chain") as info:
        ClientCertificate(cert.pem, send_certificate_chain=value)  # type: ignore[arg-type]
    assert info.value.setting == "send_certificate_chain"


@pytest.mark.parametrize(("value", "on"), [(True, True), (False, False), (1, True), (0, False)])
def test_send_certificate_chain_takes_bools_and_0_or_1(
    cert: CertificateMaterial, value: bool, on: bool
) -> None:
    assert ClientCertificate(cert.pem, send_certificate_chain=value).send_certificate_chain is on
