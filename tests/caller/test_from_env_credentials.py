"""TokenClient.from_env / credential_from_env: azure-identity's order (secret, certificate,
federated token file), the certificate variables, and what it says when nothing fits."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import pytest

from ccflow import ClientCertificate, ClientSecret, ConfigurationError, CredentialError, TokenClient
from ccflow.authority import Authority, Registrations
from ccflow.credentials import FederatedTokenFile, credential_from_env
from ccflow.testing import CertificateMaterial


@pytest.fixture
def files(tmp_path: Path, cert: CertificateMaterial) -> dict[str, str]:
    pem = tmp_path / "client.pem"
    pem.write_bytes(cert.pem)
    token = tmp_path / "token"
    token.write_text("projected-token")
    return {"CERT": str(pem), "TOKEN": str(token)}


PRECEDENCE = [
    # (variables set, expected credential type)
    ({"AZURE_CLIENT_SECRET"}, ClientSecret),
    ({"AZURE_CLIENT_CERTIFICATE_PATH"}, ClientCertificate),
    ({"AZURE_FEDERATED_TOKEN_FILE"}, FederatedTokenFile),
    ({"AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH"}, ClientSecret),
    ({"AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE"}, ClientSecret),
    ({"AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_FEDERATED_TOKEN_FILE"}, ClientCertificate),
    (
        {"AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_FEDERATED_TOKEN_FILE"},
        ClientSecret,
    ),
]


def environ(names: set[str], files: dict[str, str]) -> dict[str, str]:
    values = {
        "AZURE_CLIENT_SECRET": "s3cret",
        "AZURE_CLIENT_CERTIFICATE_PATH": files["CERT"],
        "AZURE_FEDERATED_TOKEN_FILE": files["TOKEN"],
    }
    return {name: values[name] for name in names}


@pytest.mark.parametrize(("names", "kind"), PRECEDENCE)
def test_precedence(names: set[str], kind: type, files: dict[str, str]) -> None:
    assert type(credential_from_env(environ(names, files))) is kind


@pytest.mark.parametrize(("names", "kind"), PRECEDENCE)
def test_token_client_from_env_uses_the_same_choice(
    names: set[str], kind: type, files: dict[str, str]
) -> None:
    env = {"AZURE_CLIENT_ID": "cid", "AZURE_TENANT_ID": "tid", **environ(names, files)}
    form = token_form(env)
    assert [sent for sent, looks_so in SENT_BY.items() if looks_so(form)] == [kind]


def token_form(env: dict[str, str]) -> dict[str, str]:
    """The form of the token POST that ``TokenClient.from_env(environ=env)`` sends."""
    forms: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        forms.append(dict(parse_qsl(request.content.decode())))
        return httpx.Response(200, json={"access_token": "t", "expires_in": 3600})

    http = httpx.Client(transport=httpx.MockTransport(handler))
    with TokenClient.from_env(environ=env, http_client=http) as client:
        client.get_token("api://calc-api")
    (form,) = forms
    return form


def _signed_with_a_certificate(form: dict[str, str]) -> bool:
    """A client assertion whose header names a certificate thumbprint."""
    assertion = form.get("client_assertion", "")
    if assertion.count(".") != 2:
        return False
    head = assertion.split(".")[0]
    header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    return "client_secret" not in form and any(name.startswith("x5t") for name in header)


# What each credential type puts in the token POST.
SENT_BY = {
    ClientSecret: lambda form: (
        form.get("client_secret") == "s3cret" and "client_assertion" not in form
    ),
    ClientCertificate: _signed_with_a_certificate,
    FederatedTokenFile: lambda form: (
        form.get("client_assertion") == "projected-token" and "client_secret" not in form
    ),
}


def test_empty_variables_count_as_unset(files: dict[str, str]) -> None:
    env = {
        "AZURE_CLIENT_SECRET": "",
        "AZURE_CLIENT_CERTIFICATE_PATH": "",
        **environ({"AZURE_FEDERATED_TOKEN_FILE"}, files),
    }
    assert isinstance(credential_from_env(env), FederatedTokenFile)


@pytest.mark.parametrize(
    ("value", "on"),
    [
        ("1", True),
        ("true", True),
        ("True", True),
        ("TRUE", True),
        (" true ", True),
        ("0", False),
        ("false", False),
        ("yes", False),
        ("on", False),
        ("", False),
        (None, False),
    ],
)
def test_send_certificate_chain_only_1_or_true(
    value: str | None, on: bool, files: dict[str, str]
) -> None:
    env = {"AZURE_CLIENT_CERTIFICATE_PATH": files["CERT"]}
    if value is not None:
        env["AZURE_CLIENT_SEND_CERTIFICATE_CHAIN"] = value
    credential = credential_from_env(env)
    assert isinstance(credential, ClientCertificate)
    assert credential.send_certificate_chain is on


def test_certificate_password_variable(tmp_path: Path, cert: CertificateMaterial) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    pfx = tmp_path / "client.pfx"
    pfx.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"c",
            cert.private_key,
            cert.certificate,
            None,
            serialization.BestAvailableEncryption(b"pfx-pass"),
        )
    )
    env = {"AZURE_CLIENT_CERTIFICATE_PATH": str(pfx)}
    with pytest.raises(CredentialError, match="no password was given"):
        credential_from_env(env)
    env["AZURE_CLIENT_CERTIFICATE_PASSWORD"] = "not-the-pass"
    with pytest.raises(CredentialError, match="wrong password") as info:
        credential_from_env(env)
    assert "not-the-pass" not in str(info.value)
    env["AZURE_CLIENT_CERTIFICATE_PASSWORD"] = "pfx-pass"
    assert isinstance(credential_from_env(env), ClientCertificate)


def test_unreadable_certificate_path_names_it(tmp_path: Path) -> None:
    with pytest.raises(CredentialError, match=r"missing\.pem"):
        credential_from_env({"AZURE_CLIENT_CERTIFICATE_PATH": str(tmp_path / "missing.pem")})


@pytest.mark.parametrize(
    ("names", "kind"),
    [
        ({"AZURE_CLIENT_SECRET"}, "client secret (AZURE_CLIENT_SECRET)"),
        ({"AZURE_CLIENT_CERTIFICATE_PATH"}, "certificate (AZURE_CLIENT_CERTIFICATE_PATH="),
        ({"AZURE_FEDERATED_TOKEN_FILE"}, "federated token file (AZURE_FEDERATED_TOKEN_FILE="),
    ],
)
def test_choice_is_logged_at_debug_without_secrets(
    names: set[str], kind: str, files: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="ccflow"):
        credential_from_env(environ(names, files))
    (record,) = [r for r in caplog.records if "credential from the environment" in r.getMessage()]
    assert record.levelno == logging.DEBUG
    assert kind in record.getMessage()
    assert "s3cret" not in caplog.text
    assert "PRIVATE KEY" not in caplog.text


def test_nothing_set_names_every_variable() -> None:
    with pytest.raises(ConfigurationError) as info:
        credential_from_env({})
    message = str(info.value)
    for name in (
        "AZURE_CLIENT_SECRET",
        "AZURE_CLIENT_CERTIFICATE_PATH",
        "AZURE_FEDERATED_TOKEN_FILE",
    ):
        assert name in message
    assert info.value.setting == "AZURE_CLIENT_SECRET"


@pytest.mark.parametrize(
    "stray", ["AZURE_CLIENT_CERTIFICATE_PASSWORD", "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN"]
)
def test_certificate_options_without_the_path_say_the_path_is_missing(stray: str) -> None:
    with pytest.raises(ConfigurationError, match=f"{stray} set, but AZURE_CLIENT_CERTIFICATE_PATH"):
        credential_from_env({stray: "1"})


def test_from_env_certificate_gets_a_token_from_the_authority(
    cert: CertificateMaterial, files: dict[str, str]
) -> None:
    regs = Registrations.default().with_certificate("calc-client", cert.certificate_pem)
    authority = Authority(regs)
    env = {
        "AZURE_CLIENT_ID": authority.client("calc-client").client_id,
        "CCFLOW_TOKEN_ENDPOINT": authority.token_endpoint,
        "AZURE_CLIENT_CERTIFICATE_PATH": files["CERT"],
        "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN": "true",
    }
    with TokenClient.from_env(
        environ=env, http_client=httpx.Client(transport=authority.transport())
    ) as client:
        assert client.get_token(authority.api("calc-api").default_scope).token
    assert authority.hits["token"] == 1


def test_pem_text_in_the_certificate_variable_is_not_logged(
    cert: CertificateMaterial, caplog: pytest.LogCaptureFixture
) -> None:
    # ClientCertificate takes PEM text as well as a path, so the variable may hold the key
    # itself; the DEBUG line quoted the variable whole, private key included.
    with caplog.at_level(logging.DEBUG, logger="ccflow"):
        credential = credential_from_env({"AZURE_CLIENT_CERTIFICATE_PATH": cert.pem.decode()})
    assert isinstance(credential, ClientCertificate)
    assert "certificate (AZURE_CLIENT_CERTIFICATE_PATH=<PEM text>" in caplog.text
    assert "PRIVATE KEY" not in caplog.text


@pytest.mark.parametrize("wrap", ['"{}"', "'{}'", "x{}"])
def test_pem_text_not_recognised_as_such_is_not_quoted_as_a_path(
    cert: CertificateMaterial, caplog: pytest.LogCaptureFixture, wrap: str
) -> None:
    # Quoted PEM text is taken for a path: the error quoted that "path", private key and all.
    value = wrap.format(cert.pem.decode())
    with caplog.at_level(logging.DEBUG, logger="ccflow"), pytest.raises(CredentialError) as info:
        credential_from_env({"AZURE_CLIENT_CERTIFICATE_PATH": value})
    assert "PRIVATE KEY" not in str(info.value)
    assert "PEM" in str(info.value)
    assert "PRIVATE KEY" not in caplog.text


def test_a_token_in_the_token_file_variable_is_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.c2ln"
    with caplog.at_level(logging.DEBUG, logger="ccflow"), pytest.raises(ConfigurationError):
        credential_from_env({"AZURE_FEDERATED_TOKEN_FILE": token})
    assert token not in caplog.text


def test_a_blank_secret_variable_is_named() -> None:
    # configuration.md: bad configuration names the variable (this said "client_secret").
    with pytest.raises(ConfigurationError, match="AZURE_CLIENT_SECRET is blank") as info:
        credential_from_env({"AZURE_CLIENT_SECRET": "  \n"})
    assert info.value.setting == "AZURE_CLIENT_SECRET"


def test_from_env_ignores_whitespace_around_the_client_id_and_secret_as_ccflow_token_does() -> None:
    # A variable filled from a file (a Kubernetes secret) often ends in a newline. `ccflow
    # token` strips it; from_env() sent "id\n" and "s3cret\n", and Azure AD answered
    # AADSTS700016 / AADSTS7000215, whose advice (re-register, rotate the secret) misleads.
    client = TokenClient.from_env(
        environ={
            "AZURE_CLIENT_ID": " cid\n",
            "AZURE_TENANT_ID": "t",
            "AZURE_CLIENT_SECRET": "s3cret\n",
        }
    )
    with client:
        assert client.client_id == "cid"
    form = token_form(
        {"AZURE_CLIENT_ID": " cid\n", "AZURE_TENANT_ID": "t", "AZURE_CLIENT_SECRET": "s3cret\n"}
    )
    assert (form["client_id"], form["client_secret"]) == ("cid", "s3cret")


@pytest.mark.parametrize(
    ("extra", "sent"),
    [
        ({"CCFLOW_CLIENT_SECRET": "s3cret"}, "s3cret"),
        ({"CCFLOW_CLIENT_SECRET": "ccflow-one", "AZURE_CLIENT_SECRET": "s3cret"}, "s3cret"),
    ],
    ids=["ccflow-only", "azure-wins"],
)
def test_ccflow_client_secret_is_read_after_azure_client_secret(
    extra: dict[str, str], sent: str, files: dict[str, str]
) -> None:
    # `ccflow token` read CCFLOW_CLIENT_SECRET and from_env() did not: one order, one place.
    env = {"AZURE_CLIENT_ID": "cid", "AZURE_TENANT_ID": "tid", **extra}
    env |= environ({"AZURE_CLIENT_CERTIFICATE_PATH"}, files)  # a secret still wins
    assert token_form(env)["client_secret"] == sent
