"""A CLI that scripts can trust: ``--version``, ``-v``, ``--timeout``/``--max-retries``, the
retry lines, the exit codes (0 ok, 1 refused, 2 usage, 3 network, 4 temporarily unavailable),
the credential from the environment as ``from_env()`` reads it, hosts without a scheme,
``verify``'s audience and wording, ``decode`` of a quoted token, and ``authority serve``
behind another name. In-process (``ccflow.cli.main``) against a local authority server."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from tests.support import free_port, token_args

from ccflow._version import __version__
from ccflow.authority import AuthorityServer, Fault
from ccflow.cli import main
from ccflow.testing import TokenFactory

RETRY_LINE = re.compile(r"^ccflow: retrying in [0-9.]+ s after (\S.*)$", re.MULTILINE)


@pytest.fixture(scope="module")
def server() -> Iterator[AuthorityServer]:
    with AuthorityServer() as server:
        yield server


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, server: AuthorityServer) -> None:
    for name in list(os.environ):
        if name.startswith(("AZURE_", "CCFLOW_")) or name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
            monkeypatch.delenv(name)
    server.authority.clear_fault()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def secret(server: AuthorityServer, client: str = "calc-client") -> str:
    value = server.authority.client(client).secret
    assert value
    return value


@pytest.fixture
def with_secret(monkeypatch: pytest.MonkeyPatch, server: AuthorityServer) -> str:
    monkeypatch.setenv("AZURE_CLIENT_SECRET", secret(server))
    return secret(server)


# --- --version, --help -----------------------------------------------------------------------


def test_version_prints_the_import_name_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"ccflow {__version__}\n"


@pytest.mark.parametrize("argv", [[], ["token"], ["decode"], ["verify"], ["demo"]], ids=str)
def test_help_lists_every_exit_code(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    out = capsys.readouterr().out
    assert "exit codes:" in out
    for line in ("0  success", "1  refused", "2  usage", "3  network", "4  temporarily"):
        assert line in out


# --- -v, retries, --timeout, --max-retries, exit codes 3 and 4 -------------------------------


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_shows_each_request_on_stderr_and_no_secret(
    server: AuthorityServer, with_secret: str, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    argv = ["-v", *token_args(server)] if where == "before" else [*token_args(server), "-v"]
    status, out, err = run(capsys, *argv)
    assert status == 0, err
    endpoint = server.authority.token_endpoint
    assert f"ccflow: POST {endpoint}\n" in err
    assert f"ccflow: HTTP 200 from {endpoint}\n" in err
    assert "ccflow: fetched token host=" in err
    assert with_secret not in err
    assert out.strip() not in err  # the token goes to stdout only


def test_quiet_by_default(
    server: AuthorityServer, with_secret: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, *token_args(server))[::2] == (0, "")


def test_a_retry_is_announced_on_stderr_without_verbose(
    server: AuthorityServer, with_secret: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # A slow authority was silent through every backoff wait (up to 40 s).
    server.authority.set_fault("token", Fault(status=503, times=1))
    status, out, err = run(capsys, *token_args(server))
    assert status == 0, err
    assert out.count(".") == 2
    assert RETRY_LINE.findall(err) == ["503"]
    assert err.count("\n") == 1


@pytest.mark.parametrize("status", [503, 429, 500])
def test_still_unavailable_after_the_retries_exits_4(
    server: AuthorityServer, with_secret: str, capsys: pytest.CaptureFixture[str], status: int
) -> None:
    server.authority.set_fault("token", Fault(status=status, retry_after="0"))
    code, out, err = run(capsys, *token_args(server, "--max-retries", "2"))
    assert (code, out) == (4, "")
    assert RETRY_LINE.findall(err) == [str(status)] * 2
    assert server.authority.hits["token"] >= 3


def test_max_retries_0_asks_once(
    server: AuthorityServer, with_secret: str, capsys: pytest.CaptureFixture[str]
) -> None:
    server.authority.set_fault("token", Fault(status=503))
    before = server.authority.hits["token"]
    code, _, err = run(capsys, *token_args(server, "--max-retries", "0"))
    assert code == 4
    assert server.authority.hits["token"] - before == 1
    assert RETRY_LINE.findall(err) == []


@pytest.mark.parametrize(("kind", "status"), [("imds", 404), ("imds", 410), ("app_service", 410)])
def test_a_managed_identity_still_updating_after_the_retries_exits_4(
    server: AuthorityServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    kind: str,
    status: int,
) -> None:
    # IMDS answers 404 and 410 while an identity is assigned or IMDS updates: retried, so
    # still failing afterwards is "try again later", not a refusal.
    for name, value in server.authority.identity_environ(kind).items():
        monkeypatch.setenv(name, value)
    server.authority.set_fault(kind, Fault(status=status))
    scope = server.authority.api("calc-api").default_scope
    argv = ["token", "--managed-identity", "--scope", scope, "--max-retries", "0"]
    code, out, _ = run(capsys, *argv)
    assert (code, out) == (4, "")


def test_a_refusal_is_1_and_never_retried(
    server: AuthorityServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "not-the-secret")
    code, _, err = run(capsys, *token_args(server))
    assert code == 1
    assert "AADSTS7000215" in err
    assert RETRY_LINE.findall(err) == []


def test_timeout_then_retry_says_after_timeout_and_exits_3(
    server: AuthorityServer, with_secret: str, capsys: pytest.CaptureFixture[str]
) -> None:
    server.authority.set_fault("token", Fault(timeout=True, delay=3))
    argv = token_args(server, "--timeout", "0.3", "--max-retries", "1")
    code, out, err = run(capsys, *argv)
    assert (code, out) == (3, "")
    assert RETRY_LINE.findall(err) == ["timeout"]
    assert "timed out" in err
    assert "--ca-file" not in err  # TLS advice only for TLS failures


def test_unreachable_says_after_connection_error_and_exits_3(
    with_secret: str, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}/t/oauth2/v2.0/token"
    argv = ["token", "--client-id", "c", "--token-endpoint", endpoint, "--scope", "api://x"]
    code, _, err = run(capsys, *argv, "--max-retries", "1")
    assert code == 3
    assert RETRY_LINE.findall(err) == ["connection error"]
    assert "--ca-file" not in err


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--timeout", "0"),
        ("--timeout", "-1"),
        ("--timeout", "nan"),
        ("--timeout", "inf"),
        ("--timeout", "soon"),
        ("--max-retries", "-1"),
        ("--max-retries", "1.5"),
        ("--max-retries", "11"),
        ("--max-retries", "many"),
    ],
)
def test_a_bad_timeout_or_retry_count_is_a_usage_error(
    server: AuthorityServer, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    with pytest.raises(SystemExit) as info:
        main(token_args(server, f"{flag}={value}"))
    assert info.value.code == 2
    assert f"argument {flag}: expected" in capsys.readouterr().err


# --- the credential, as from_env() reads it --------------------------------------------------


def test_ccflow_client_secret_is_read_after_azure_client_secret(
    server: AuthorityServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CCFLOW_CLIENT_SECRET", "wrong-but-second")
    monkeypatch.setenv("AZURE_CLIENT_SECRET", secret(server))
    assert run(capsys, *token_args(server))[0] == 0


@pytest.mark.parametrize(
    ("variable", "named"),
    [
        ("AZURE_CLIENT_CERTIFICATE_PATH", "certificate"),
        ("AZURE_FEDERATED_TOKEN_FILE", "federated token file"),
    ],
)
def test_certificate_and_federated_token_file_variables_are_read(
    server: AuthorityServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    variable: str,
    named: str,
) -> None:
    # `ccflow token` read only the secret variables; from_env() read these too.
    missing = tmp_path / "missing"
    monkeypatch.setenv(variable, str(missing))
    code, _, err = run(capsys, *token_args(server), "-v")
    assert code == 2
    assert f"credential from the environment: {named}" in err
    assert str(missing) in err


def test_a_secret_wins_over_a_certificate_as_in_from_env(
    server: AuthorityServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("AZURE_CLIENT_CERTIFICATE_PATH", str(tmp_path / "missing.pem"))
    monkeypatch.setenv("AZURE_CLIENT_SECRET", secret(server))
    assert run(capsys, *token_args(server))[0] == 0


def test_no_credential_names_every_variable_and_the_flags(
    server: AuthorityServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, *token_args(server))
    assert code == 2
    for name in ("AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH"):
        assert name in err
    assert "AZURE_FEDERATED_TOKEN_FILE" in err
    assert "--client-secret-stdin" in err


# --- hosts without a scheme ------------------------------------------------------------------


@pytest.mark.parametrize("where", ["flag", "variable"])
def test_an_authority_host_without_a_scheme_is_refused_with_the_fix(
    server: AuthorityServer,
    with_secret: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    where: str,
) -> None:
    # It was taken as https://, so the local authority's plain port failed TLS after retries.
    bare = server.url.removeprefix("http://")
    argv = token_args(server)
    i = argv.index("--authority-host")
    if where == "flag":
        argv[i + 1] = bare
        name = "--authority-host"
    else:
        del argv[i : i + 2]
        monkeypatch.setenv("AZURE_AUTHORITY_HOST", bare)
        name = "AZURE_AUTHORITY_HOST"
    before = server.authority.hits["token"]
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert server.authority.hits["token"] == before  # refused before any request
    assert f"{name} '{bare}' has no scheme: write https://{bare}, or http://{bare}" in err
    assert RETRY_LINE.findall(err) == []
    assert "--ca-file" not in err


def test_verify_refuses_an_authority_host_without_a_scheme(
    server: AuthorityServer, capsys: pytest.CaptureFixture[str]
) -> None:
    token = TokenFactory(server.authority).valid()
    bare = server.url.removeprefix("http://")
    argv = ["verify", token, "--tenant-id", server.authority.tenant_id, "--authority-host", bare]
    code, _, err = run(capsys, *argv, "--audience", "x")
    assert code == 2
    assert "--authority-host" in err
    assert "has no scheme" in err


# --- verify --------------------------------------------------------------------------------


def verify_args(server: AuthorityServer, token: str, *extra: str) -> list[str]:
    authority = server.authority
    return [
        "verify",
        token,
        "--tenant-id",
        authority.tenant_id,
        "--authority-host",
        authority.host,
        *extra,
    ]


def test_verify_needs_an_audience(
    server: AuthorityServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # Without one it printed VALID for a token meant for any API.
    code, out, err = run(capsys, *verify_args(server, TokenFactory(server.authority).valid()))
    assert (code, out) == (2, "")
    assert "--audience" in err
    assert "CCFLOW_AUDIENCE" in err
    assert "--any-audience" in err


def test_verify_any_audience_passes_with_a_warning_line(
    server: AuthorityServer, capsys: pytest.CaptureFixture[str]
) -> None:
    token = TokenFactory(server.authority).wrong_audience()
    code, out, err = run(capsys, *verify_args(server, token, "--any-audience"))
    assert code == 0
    assert out.startswith("VALID")
    assert err.startswith("ccflow: warning: the audience was NOT checked")


def test_verify_reads_the_api_sides_variables(
    server: AuthorityServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    authority = server.authority
    monkeypatch.setenv("CCFLOW_TENANT_ID", authority.tenant_id)
    monkeypatch.setenv("AZURE_TENANT_ID", "not-this-one")
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", authority.host)
    monkeypatch.setenv("CCFLOW_AUDIENCE", authority.api("calc-api").client_id)
    code, out, err = run(capsys, "verify", TokenFactory(authority).valid())
    assert code == 0, out + err
    assert out.startswith("VALID")


def test_verify_falls_back_to_azure_tenant_id(
    server: AuthorityServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    authority = server.authority
    monkeypatch.setenv("AZURE_TENANT_ID", authority.tenant_id)
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", authority.host)
    audience = authority.api("calc-api").client_id
    code, out, _ = run(capsys, "verify", TokenFactory(authority).valid(), "--audience", audience)
    assert code == 0
    assert out.startswith("VALID")


def test_verify_without_any_authority_says_where_to_name_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run(capsys, "verify", "e30.e30.sig", "--audience", "x")
    assert code == 2
    for name in ("--tenant-id", "--issuer", "CCFLOW_TENANT_ID", "AZURE_TENANT_ID"):
        assert name in err


def test_verify_accept_v1(server: AuthorityServer, capsys: pytest.CaptureFixture[str]) -> None:
    authority = server.authority
    token = TokenFactory(authority).v1()
    payload = base64.urlsafe_b64decode(token.split(".")[1] + "==")
    aud = json.loads(payload)["aud"]
    refused = run(capsys, *verify_args(server, token, "--audience", aud))
    assert refused[0] == 1
    assert "failed check: version" in refused[1]
    accepted = run(capsys, *verify_args(server, token, "--audience", aud, "--accept-v1"))
    assert accepted[0] == 0, accepted
    assert "version   1.0" in accepted[1]


def test_verify_wrong_audience_shows_actual_against_expected(
    server: AuthorityServer, capsys: pytest.CaptureFixture[str]
) -> None:
    token = TokenFactory(server.authority).wrong_audience(audience="api://other")
    code, out, _ = run(capsys, *verify_args(server, token, "--audience", "api://calc-api"))
    assert code == 1
    assert "  aud is api://other, expected api://calc-api\n" in out
    assert "failed check: audience" in out


def test_verify_issuer_from_another_host_names_both_hosts(
    server: AuthorityServer, capsys: pytest.CaptureFixture[str]
) -> None:
    authority = server.authority
    token = TokenFactory(authority).wrong_issuer()
    audience = authority.api("calc-api").client_id
    code, out, _ = run(capsys, *verify_args(server, token, "--audience", audience))
    assert code == 1
    host = httpx.URL(authority.host).netloc.decode()
    assert f"iss is https://login.evil.test/{authority.tenant_id}/v2.0, expected" in out
    assert f"the token comes from host login.evil.test, this check expects {host}" in out


def test_verify_verbose_shows_each_fetch(
    server: AuthorityServer, capsys: pytest.CaptureFixture[str]
) -> None:
    authority = server.authority
    token = TokenFactory(authority).valid()
    audience = authority.api("calc-api").client_id
    code, _, err = run(capsys, *verify_args(server, token, "--audience", audience, "-v"))
    assert code == 0
    keys = authority.endpoints().jwks_uri
    assert f"ccflow: GET {keys}\n" in err
    assert f"ccflow: HTTP 200 from {keys}\n" in err
    assert token not in err


def test_verify_exits_4_when_the_keys_answer_503(
    server: AuthorityServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.authority.set_fault("jwks", Fault(status=503))
    token = TokenFactory(server.authority).valid()
    code, out, err = run(capsys, *verify_args(server, token, "--audience", "x"))
    assert (code, out) == (4, "")
    assert "503" in err


# --- decode ----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ['"{}"', '  "{}"\n', '"{}",', '"Bearer {}"', " {} "], ids=repr)
def test_decode_takes_a_token_pasted_with_its_json_quotes(
    server: AuthorityServer, capsys: pytest.CaptureFixture[str], shape: str
) -> None:
    token = TokenFactory(server.authority).valid()
    code, out, err = run(capsys, "decode", shape.format(token))
    assert code == 0, err
    assert out.startswith("UNVERIFIED")


def test_decode_takes_a_quoted_token_on_stdin(
    server: AuthorityServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    token = TokenFactory(server.authority).valid()
    monkeypatch.setattr(sys, "stdin", io.StringIO(f'"{token}"\n'))
    assert run(capsys, "decode", "-")[0] == 0


# --- authority serve ---------------------------------------------------------------------------


def test_authority_server_advertises_its_public_url(tmp_path: Path) -> None:
    public = "https://authority:8443"
    with AuthorityServer(tls=True, public_url=public, san=["auth2", "10.0.0.5"]) as srv:
        assert srv.authority.host == public
        assert srv.info()["issuer"].startswith(public + "/")
        assert srv.ca_file is not None
        url = f"https://127.0.0.1:{srv.port}/{srv.authority.tenant_id}/v2.0/.well-known/"
        with httpx.Client(verify=ssl.create_default_context(cafile=srv.ca_file)) as http:
            doc = http.get(url + "openid-configuration").json()
        for field in ("issuer", "jwks_uri", "token_endpoint"):
            assert doc[field].startswith(public + "/"), doc[field]
        assert srv.tls is not None
        cert = x509.load_pem_x509_certificate(srv.tls.cert_file.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"authority", "auth2", "localhost"} <= set(names.get_values_for_type(x509.DNSName))
    assert "10.0.0.5" in {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--public-url", "authority:8443"], "--public-url 'authority:8443' has no scheme"),
        (["--public-url", "http://authority:8443"], "--public-url is plain http://"),
        (["--tls", "--san", "not a name"], "--san: 'not a name' is not a host name"),
        (["--host", "0.0.0.0"], "--tls"),
    ],
)
def test_authority_serve_refuses_what_cannot_work(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["authority", "serve", "--port", "0", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ccflow: error: ")
    assert message in err


def test_authority_serve_beyond_loopback_warns_that_its_secrets_are_public() -> None:
    argv = [sys.executable, "-m", "ccflow", "authority", "serve", "--host", "0.0.0.0"]
    argv += ["--port", "0", "--tls", "--public-url", "https://authority:8443", "--json"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        info: dict[str, Any] = json.loads(proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert info["issuer"].startswith("https://authority:8443/")
    assert info["token_endpoint"].startswith("https://authority:8443/")
    assert "ccflow: warning: listening on 0.0.0.0" in err
    assert "public test values" in err


def test_https_to_a_plain_http_port_says_so_without_ca_advice(
    server: AuthorityServer, with_secret: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = token_args(server, "--max-retries", "0")
    argv[argv.index("--authority-host") + 1] = server.url.replace("http://", "https://")
    code, out, err = run(capsys, *argv)
    assert (code, out) == (3, "")
    assert "does not speak TLS there: if it is plain HTTP, use http://" in err
    assert "--ca-file" not in err
