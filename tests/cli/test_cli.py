"""``ccflow token``, ``decode`` and ``verify``: the real command, in a subprocess, against the
local authority served by ``ccflow authority serve --port 0 --json`` (plain HTTP on 127.0.0.1,
and with ``--tls`` for the CA options)."""

from __future__ import annotations

import base64
import datetime
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from tests.support import deeply_nested_payload_token, free_port, make_certificate, pem

from ccflow.cli import main

TIMEOUT = 60  # seconds for any one command; they normally take well under one


@dataclass(frozen=True)
class Server:
    """A running ``ccflow authority serve`` and what its first JSON line reported."""

    info: Mapping[str, Any]

    def client(self, name: str) -> Mapping[str, Any]:
        return next(c for c in self.info["clients"] if c["name"] == name)

    def api(self, name: str) -> Mapping[str, Any]:
        return next(a for a in self.info["apis"] if a["name"] == name)

    @property
    def scope(self) -> str:
        return f"{self.api('calc-api')['identifier_uri']}/.default"


def _clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any variable ccflow reads, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AZURE_", "CCFLOW_")) and k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")
    }
    env.update(extra)
    return env


def _serve(*flags: str) -> Iterator[Server]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ccflow", "authority", "serve", "--port", "0", "--json", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_clean_env(),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, f"the authority did not start: {proc.stderr.read() if proc.stderr else ''}"
        yield Server(json.loads(line))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    yield from _serve()


@pytest.fixture(scope="module")
def tls_server() -> Iterator[Server]:
    yield from _serve("--tls")


def ccflow(
    *args: str, env: Mapping[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m ccflow ARGS`` with a clean environment plus ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "ccflow", *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        env=_clean_env(**(env or {})),
        timeout=TIMEOUT,
        check=False,
    )


def token_args(server: Server, client: str = "calc-client") -> list[str]:
    info = server.info
    return [
        "token",
        "--client-id",
        server.client(client)["client_id"],
        "--tenant-id",
        info["tenant_id"],
        "--authority-host",
        info["authority_host"],
        "--scope",
        server.scope,
    ]


def secret_env(server: Server, client: str = "calc-client") -> dict[str, str]:
    return {"AZURE_CLIENT_SECRET": server.client(client)["secret"]}


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def assert_no_secret(result: subprocess.CompletedProcess[str], secret: str) -> None:
    assert secret not in result.stdout
    assert secret not in result.stderr


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr
    assert "Traceback" not in result.stdout


@pytest.fixture(scope="module")
def calc_token(server: Server) -> str:
    # Module scope comes before each test's own cache directory: keep the user's out of it.
    result = ccflow(*token_args(server), "--no-cache", env=secret_env(server))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def reader_token(server: Server) -> str:
    args = token_args(server, "reader-client")
    result = ccflow(*args, "--no-cache", env=secret_env(server, "reader-client"))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


# --- ccflow token ------------------------------------------------------------------------------


def test_token_prints_the_bare_token_and_a_newline(server: Server) -> None:
    result = ccflow(*token_args(server), env=secret_env(server))
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("\n")
    assert result.stdout.count("\n") == 1
    token = result.stdout[:-1]
    assert token.count(".") == 2
    assert claims_of(token)["azp"] == server.client("calc-client")["client_id"]
    assert result.stderr == ""


def test_token_secret_from_ccflow_client_secret(server: Server) -> None:
    env = {"CCFLOW_CLIENT_SECRET": server.client("calc-client")["secret"]}
    result = ccflow(*token_args(server), env=env)
    assert result.returncode == 0, result.stderr


def test_token_secret_from_one_line_of_stdin(server: Server) -> None:
    secret = server.client("calc-client")["secret"]
    result = ccflow(*token_args(server), "--client-secret-stdin", stdin=secret + "\n")
    assert result.returncode == 0, result.stderr
    assert claims_of(result.stdout.strip())["azp"] == server.client("calc-client")["client_id"]
    assert_no_secret(result, secret)


def test_token_client_secret_flag_works_but_warns_about_the_process_list(server: Server) -> None:
    secret = server.client("calc-client")["secret"]
    result = ccflow(*token_args(server), "--client-secret", secret)
    assert result.returncode == 0, result.stderr
    assert "process list" in result.stderr
    assert_no_secret(result, secret)


def test_token_json_is_the_token_response(server: Server) -> None:
    result = ccflow(*token_args(server), "--json", env=secret_env(server))
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert set(body) >= {"access_token", "token_type", "expires_in", "expires_on"}
    assert body["token_type"] == "Bearer"
    assert 3000 < body["expires_in"] <= 3599
    assert claims_of(body["access_token"])["aud"] == server.api("calc-api")["client_id"]


def test_token_decode_shows_claims_marked_unverified(server: Server) -> None:
    result = ccflow(*token_args(server), "--decode", env=secret_env(server))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("UNVERIFIED")
    assert server.client("calc-client")["client_id"] in result.stdout
    assert "authorized party" in result.stdout
    assert "(in 59 min)" in result.stdout


def test_token_decode_json(server: Server) -> None:
    result = ccflow(*token_args(server), "--decode", "--json", env=secret_env(server))
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["verified"] is False
    assert body["header"]["alg"] == "RS256"
    assert body["claims"]["roles"] == ["invokeRole"]


def test_token_falls_back_to_azure_variables(server: Server) -> None:
    info = server.info
    env = {
        "AZURE_CLIENT_ID": server.client("calc-client")["client_id"],
        "AZURE_TENANT_ID": info["tenant_id"],
        "AZURE_AUTHORITY_HOST": info["authority_host"],
        **secret_env(server),
    }
    result = ccflow("token", "--scope", server.scope, env=env)
    assert result.returncode == 0, result.stderr


def test_token_endpoint_wins_over_the_tenant_variable(server: Server) -> None:
    env = {
        "AZURE_CLIENT_ID": server.client("calc-client")["client_id"],
        "AZURE_TENANT_ID": "not-a-tenant",
        **secret_env(server),
    }
    result = ccflow(
        "token", "--token-endpoint", server.info["token_endpoint"], "--scope", server.scope, env=env
    )
    assert result.returncode == 0, result.stderr


def test_an_authority_host_flag_ignored_for_the_endpoint_variable_is_warned(
    server: Server,
) -> None:
    env = {
        "AZURE_CLIENT_ID": server.client("calc-client")["client_id"],
        "CCFLOW_TOKEN_ENDPOINT": server.info["token_endpoint"],
        **secret_env(server),
    }
    result = ccflow(
        "token", "--authority-host", "https://login.example", "--scope", server.scope, env=env
    )
    assert result.returncode == 0, result.stderr
    assert "--authority-host is ignored: CCFLOW_TOKEN_ENDPOINT wins" in result.stderr


def test_token_wrong_secret_exits_1_with_the_aadsts_code(server: Server) -> None:
    wrong = "not-the-secret-0123456789"
    result = ccflow(*token_args(server), env={"AZURE_CLIENT_SECRET": wrong})
    assert result.returncode == 1
    assert result.stdout == ""
    assert "7000215" in result.stderr
    assert_no_traceback(result)
    assert_no_secret(result, wrong)


def test_token_scope_the_authority_does_not_know_exits_1_with_the_aadsts_code(
    server: Server,
) -> None:
    args = token_args(server)
    args[-1] = "api://no-such-api/.default"
    result = ccflow(*args, env=secret_env(server))
    assert result.returncode == 1
    assert "AADSTS" in result.stderr
    assert_no_traceback(result)


def test_token_scope_naming_a_role_exits_2_saying_what_client_credentials_take(
    server: Server,
) -> None:
    # api://<api>/invokeRole was sent as api://<api>/invokeRole/.default: a puzzling AADSTS.
    resource = server.api("calc-api")["identifier_uri"]
    args = token_args(server)
    args[-1] = f"{resource}/invokeRole"
    result = ccflow(*args, env=secret_env(server))
    assert result.returncode == 2
    assert "client credentials" in result.stderr
    assert f"'{resource}/.default'" in result.stderr
    assert "AADSTS" not in result.stderr
    assert_no_traceback(result)


@pytest.mark.parametrize(
    ("drop", "env", "message"),
    [
        ("--client-id", {"AZURE_CLIENT_SECRET": "s"}, "AZURE_CLIENT_ID"),
        ("--tenant-id", {"AZURE_CLIENT_SECRET": "s"}, "AZURE_TENANT_ID"),
        ("--scope", {"AZURE_CLIENT_SECRET": "s"}, "--scope"),
        (None, {}, "AZURE_CLIENT_SECRET"),
    ],
)
def test_token_missing_configuration_exits_2_naming_it(
    server: Server, drop: str | None, env: dict[str, str], message: str
) -> None:
    args = token_args(server)
    if drop:
        i = args.index(drop)
        del args[i : i + 2]
    result = ccflow(*args, env=env)
    assert result.returncode == 2
    assert message in result.stderr
    assert_no_traceback(result)


def test_token_empty_stdin_secret_exits_2(server: Server) -> None:
    result = ccflow(*token_args(server), "--client-secret-stdin", stdin="\n")
    assert result.returncode == 2
    assert "standard input" in result.stderr


def test_token_endpoint_flag_wins_over_a_tenant_flag_with_a_warning(server: Server) -> None:
    args = token_args(server)
    args[args.index("--tenant-id") + 1] = "not-a-tenant"  # would be AADSTS90002 if used
    args[args.index("--authority-host") + 1] = "https://login.example"  # unreachable
    result = ccflow(
        *args, "--token-endpoint", server.info["token_endpoint"], env=secret_env(server)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(".") == 2
    assert "--tenant-id is ignored: --token-endpoint wins" in result.stderr
    assert "--authority-host is ignored: --token-endpoint wins" in result.stderr


def test_token_usage_shows_the_promised_form() -> None:
    result = ccflow("token", "--help", env={})
    usage = " ".join(result.stdout.split())
    assert "--client-id ID (--tenant-id T | --token-endpoint URL) --scope S" in usage


@pytest.mark.parametrize(
    "typo",
    [
        ["--client_secret", "s3cr3t-Value~x"],
        ["--secret=s3cr3t-Value~x"],
        ["s3cr3t-Value~x"],
        ["--client-secre=s3cr3t-Value~x"],  # argparse: "ambiguous option: --client-secre=..."
        ["--json=s3cr3t-Value~x"],  # argparse: "ignored explicit argument '...'"
    ],
)
def test_a_mistyped_flag_never_echoes_the_value_after_it(typo: list[str]) -> None:
    # argparse quoted every unrecognized argument, so `--client_secret "$SECRET"` (a typo for
    # --client-secret) printed the secret to stderr, and into CI logs.
    result = ccflow("token", "--client-id", "x", "--tenant-id", "t", "--scope", "s", *typo)
    assert result.returncode == 2
    assert "s3cr3t" not in result.stderr + result.stdout
    assert result.stderr.startswith("usage: ccflow token")
    assert "ccflow token: error: " in result.stderr
    if typo[0].startswith("--"):
        assert typo[0].split("=")[0] in result.stderr


def test_a_secret_given_before_the_command_is_not_echoed_as_a_bad_command() -> None:
    # argparse takes the value for the command name and quoted it: "invalid choice: '<secret>'".
    result = ccflow("--client-secret", "s3cr3t-Value~x", "token")
    assert result.returncode == 2
    assert "s3cr3t" not in result.stderr + result.stdout
    assert "invalid choice: '...' (choose from 'token'" in result.stderr


def test_token_plain_http_to_a_remote_host_is_refused_with_exit_2() -> None:
    result = ccflow(
        "token",
        "--client-id",
        "c",
        "--token-endpoint",
        "http://login.example.com/token",
        "--scope",
        "api://x/.default",
        env={"AZURE_CLIENT_SECRET": "s3cr3t-value"},
    )
    assert result.returncode == 2
    assert_no_traceback(result)
    assert_no_secret(result, "s3cr3t-value")


def test_token_certificate_that_cannot_be_used_exits_2(server: Server, tmp_path: Any) -> None:
    missing = tmp_path / "missing.pem"
    result = ccflow(*token_args(server), "--certificate", str(missing))
    assert result.returncode == 2
    assert_no_traceback(result)


def test_token_unreachable_authority_exits_3() -> None:
    result = ccflow(
        "token",
        "--client-id",
        "c",
        "--token-endpoint",
        f"http://127.0.0.1:{free_port()}/tenant/oauth2/v2.0/token",
        "--scope",
        "api://x/.default",
        env={"AZURE_CLIENT_SECRET": "s3cr3t-value"},
    )
    assert result.returncode == 3
    assert result.stdout == ""
    assert_no_traceback(result)
    assert_no_secret(result, "s3cr3t-value")


def test_token_over_tls_with_ca_file(tls_server: Server) -> None:
    result = ccflow(
        *token_args(tls_server), "--ca-file", tls_server.info["ca_file"], env=secret_env(tls_server)
    )
    assert result.returncode == 0, result.stderr


def test_token_over_tls_with_ssl_cert_file(tls_server: Server) -> None:
    env = {**secret_env(tls_server), "SSL_CERT_FILE": tls_server.info["ca_file"]}
    result = ccflow(*token_args(tls_server), env=env)
    assert result.returncode == 0, result.stderr


def test_token_over_tls_without_the_ca_exits_3_with_a_hint(tls_server: Server) -> None:
    result = ccflow(*token_args(tls_server), env=secret_env(tls_server))
    assert result.returncode == 3
    assert "--ca-file" in result.stderr
    # Once: the library's advice and the CLI's hint were both printed.
    assert result.stderr.count("SSL_CERT_FILE") == 1
    assert "after 1 attempt(s)" in result.stderr  # a certificate that did not verify: no retry
    assert_no_traceback(result)


# --- ccflow decode -----------------------------------------------------------------------------


def test_decode_explains_each_claim_and_says_unverified(calc_token: str) -> None:
    result = ccflow("decode", calc_token)
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith("UNVERIFIED")
    for text in ("audience", "issuer", "authorized party", "tenant id", "token version"):
        assert text in result.stdout
    assert "UTC (in 59 min)" in result.stdout


def test_decode_reads_stdin(calc_token: str) -> None:
    result = ccflow("decode", "-", stdin=calc_token + "\n")
    assert result.returncode == 0, result.stderr
    assert "invokeRole" in result.stdout


def test_decode_json(calc_token: str) -> None:
    result = ccflow("decode", "--json", calc_token)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["verified"] is False
    assert body["claims"] == claims_of(calc_token)
    assert set(body["header"]) >= {"typ", "alg", "kid"}


@pytest.mark.parametrize("text", ["not-a-token", "a.b", "e30.%%%.sig"])
def test_decode_refuses_what_is_not_a_jwt_with_exit_1(text: str) -> None:
    result = ccflow("decode", text)
    assert result.returncode == 1
    assert "not a decodable JWT" in result.stderr
    assert_no_traceback(result)


def test_decode_empty_stdin_exits_2() -> None:
    result = ccflow("decode", "-", stdin="")
    assert result.returncode == 2


def test_output_to_a_closed_pipe_is_quiet(calc_token: str) -> None:
    # As in `ccflow decode "$T" | head -1`: the reader is gone before ccflow writes. It said
    # "ccflow: error: unexpected BrokenPipeError" and exited 1 (the code for "not a JWT").
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "ccflow", "decode", calc_token],
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=_clean_env(),
            timeout=TIMEOUT,
            check=False,
        )
    finally:
        os.close(write_end)
    assert result.stderr == ""
    assert result.returncode == 141  # 128 + SIGPIPE, as shells report a closed pipe


# --- ccflow verify -----------------------------------------------------------------------------


def verify_args(server: Server, token: str, *extra: str) -> list[str]:
    return [
        "verify",
        token,
        "--tenant-id",
        server.info["tenant_id"],
        "--authority-host",
        server.info["authority_host"],
        "--audience",
        server.api("calc-api")["client_id"],
        *extra,
    ]


def test_verify_valid_token_exits_0(server: Server, calc_token: str) -> None:
    result = ccflow(*verify_args(server, calc_token, "--role", "invokeRole"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("VALID")
    assert server.client("calc-client")["client_id"] in result.stdout


def test_verify_with_issuer(server: Server, calc_token: str) -> None:
    aud = server.api("calc-api")["client_id"]
    result = ccflow("verify", calc_token, "--issuer", server.info["issuer"], "--audience", aud)
    assert result.returncode == 0, result.stdout + result.stderr


def test_verify_reads_stdin(server: Server, calc_token: str) -> None:
    args = verify_args(server, "-")
    result = ccflow(*args, stdin=calc_token + "\n")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("token_name", "extra", "check"),
    [
        ("calc", ["--audience", "other-api"], "audience"),
        ("reader", ["--role", "invokeRole"], "role"),
        ("calc", ["--allowed-client", "someone-else"], ""),
        ("tampered", [], "signature"),
    ],
)
def test_verify_invalid_token_exits_1_with_the_failing_check(
    server: Server,
    calc_token: str,
    reader_token: str,
    token_name: str,
    extra: list[str],
    check: str,
) -> None:
    token = {"calc": calc_token, "reader": reader_token}.get(token_name)
    if token is None:
        header, _payload, signature = reader_token.split(".")
        claims = {**claims_of(reader_token), "roles": ["invokeRole"]}
        forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        token = f"{header}.{forged}.{signature}"
    args = verify_args(server, token)
    if extra[:1] == ["--audience"]:
        i = args.index("--audience")
        del args[i : i + 2]
    result = ccflow(*args, *extra)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.startswith("INVALID")
    assert "failed check:" in result.stdout
    assert check in result.stdout.split("failed check:")[1]
    assert_no_traceback(result)


def test_verify_without_issuer_or_tenant_is_a_usage_error(calc_token: str) -> None:
    result = ccflow("verify", calc_token)
    assert result.returncode == 2


def test_verify_unreachable_authority_exits_3(calc_token: str) -> None:
    issuer = f"http://127.0.0.1:{free_port()}/t/v2.0"
    result = ccflow("verify", calc_token, "--issuer", issuer, "--audience", "api://calc-api")
    assert result.returncode == 3
    assert_no_traceback(result)


def test_verify_over_tls_with_ca_file(tls_server: Server) -> None:
    token = ccflow(
        *token_args(tls_server), "--ca-file", tls_server.info["ca_file"], env=secret_env(tls_server)
    ).stdout.strip()
    result = ccflow(*verify_args(tls_server, token), "--ca-file", tls_server.info["ca_file"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_verify_over_tls_without_ca_file_says_why_and_how(tls_server: Server) -> None:
    token = ccflow(
        *token_args(tls_server), "--ca-file", tls_server.info["ca_file"], env=secret_env(tls_server)
    ).stdout.strip()
    result = ccflow(*verify_args(tls_server, token))
    assert result.returncode == 3
    # One error line naming the failed request, its TLS cause and the fix; no raw log lines.
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("ccflow: error: cannot check the token:")
    assert "CERTIFICATE_VERIFY_FAILED" in result.stderr
    assert "--ca-file" in result.stderr
    assert_no_traceback(result)


def test_verify_not_a_jwt_without_audience_says_malformed(server: Server) -> None:
    args = verify_args(server, "not-a-token")
    i = args.index("--audience")
    args[i : i + 2] = ["--any-audience"]
    result = ccflow(*args)
    assert result.returncode == 1
    assert result.stdout.startswith("INVALID: a JWT has 3 dot-separated parts")
    assert "failed check: malformed" in result.stdout


@pytest.mark.parametrize(
    "aud", ["api://calc other", ["", "x\ty"]], ids=["blank inside", "empty, tab"]
)
def test_verify_without_audience_a_tokens_odd_aud_is_a_refusal_not_a_usage_error(
    server: Server, calc_token: str, aud: object
) -> None:
    header, _payload, signature = calc_token.split(".")
    claims = {**claims_of(calc_token), "aud": aud}
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    args = verify_args(server, f"{header}.{body}.{signature}")
    i = args.index("--audience")
    args[i : i + 2] = ["--any-audience"]
    result = ccflow(*args)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.startswith("INVALID")
    assert "failed check: audience" in result.stdout
    assert_no_traceback(result)


# --- the same commands in-process (ccflow.cli.main), so coverage sees them -------------------


@pytest.fixture
def main_in_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    from ccflow.cli import main

    for name in list(os.environ):
        if name.startswith(("AZURE_", "CCFLOW_")) or name == "SSL_CERT_FILE":
            monkeypatch.delenv(name)

    def run(*args: str, env: Mapping[str, str] | None = None) -> tuple[int, str, str]:
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        status = main(list(args))
        out, err = capsys.readouterr()
        return status, out, err

    return run


def test_in_process_token_then_verify(server: Server, main_in_process: Any) -> None:
    status, out, err = main_in_process(*token_args(server), env=secret_env(server))
    assert (status, err) == (0, "")
    status, out, _ = main_in_process(*verify_args(server, out.strip(), "--role", "invokeRole"))
    assert status == 0
    assert out.startswith("VALID")


def test_in_process_verify_says_why_the_keys_could_not_be_had(
    server: Server, main_in_process: Any, calc_token: str
) -> None:
    # The discovery document answered 200 but named another issuer (here: the one given with
    # a trailing slash); the cause went only to a log record verify silences, and the error
    # said just "cannot get the authority's signing keys right now".
    issuer = server.info["issuer"] + "/"
    aud = server.api("calc-api")["client_id"]
    status, out, err = main_in_process("verify", calc_token, "--issuer", issuer, "--audience", aud)
    assert (status, out) == (3, "")
    assert err.count("\n") == 1, err
    assert "is not the configured issuer" in err
    assert repr(issuer) in err


@pytest.mark.parametrize("alias", ["organizations", "Common"])
def test_in_process_verify_with_a_multi_tenant_alias_says_what_to_pass(
    server: Server, main_in_process: Any, calc_token: str, alias: str
) -> None:
    # The validator's error asked to list allowed_tenants, which verify has no flag for.
    host = server.info["authority_host"]
    status, out, err = main_in_process(
        "verify", calc_token, "--tenant-id", alias, "--authority-host", host
    )
    assert (status, out) == (2, "")
    assert "allowed_tenants" not in err
    assert "--tenant-id" in err
    assert "tid" in err


@pytest.mark.parametrize("flags", [["--json"], ["--decode"], ["--decode", "--json"]])
def test_in_process_token_output_forms(
    server: Server, main_in_process: Any, flags: list[str]
) -> None:
    status, out, _ = main_in_process(*token_args(server), *flags, env=secret_env(server))
    assert status == 0
    assert out.strip()


def test_in_process_verify_refuses_a_reader_without_the_role(
    server: Server, main_in_process: Any, reader_token: str
) -> None:
    status, out, _ = main_in_process(*verify_args(server, reader_token, "--role", "invokeRole"))
    assert status == 1
    assert "failed check: role" in out


def test_in_process_decode(main_in_process: Any, calc_token: str) -> None:
    status, out, _ = main_in_process("decode", calc_token)
    assert status == 0
    assert out.startswith("UNVERIFIED")


def test_decode_escapes_control_characters_a_token_carries(main_in_process: Any) -> None:
    # decode reads untrusted tokens: their strings were printed raw, so a token could send
    # terminal escape sequences (clear the screen, rewrite lines) or reverse the text around.
    def segment(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    evil = "\x1b[2J\x1b[1;1HVALID\r\x7f\u202eiss"
    header, claims = {"alg": "none", "x" + chr(0x9B): evil}, {"aud": evil, "n" + chr(0x1B): 1}
    token = f"{segment(header)}.{segment(claims)}."
    status, out, _ = main_in_process("decode", token)
    assert status == 0
    assert not any(c in out for c in "\x1b\x9b\r\x7f\u202e"), repr(out)
    assert "\\u001b[2J\\u001b[1;1HVALID\\u000d\\u007f\\u202eiss" in out
    assert "\\u009b" in out


def test_in_process_verify_without_audience_reports_it_unchecked(
    server: Server, main_in_process: Any, calc_token: str
) -> None:
    args = verify_args(server, calc_token)
    i = args.index("--audience")
    args[i : i + 2] = ["--any-audience"]
    status, out, err = main_in_process(*args)
    assert status == 0
    assert "audience NOT checked" in out
    assert err.count("\n") == 1
    assert err.startswith("ccflow: warning: the audience was NOT checked (--any-audience)")


# --- ccflow token --certificate (issue 6) --------------------------------------------------------


CERT_CLIENT_ID = "c0ffee00-cc10-4000-8000-0000000000e1"


@pytest.fixture(scope="module")
def cert_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from ccflow.testing import client_certificate

    material = client_certificate()
    base = tmp_path_factory.mktemp("cert-authority")
    (base / "client-cert.pem").write_bytes(material.certificate_pem)
    (base / "client.pem").write_bytes(material.pem)
    (base / "registrations.toml").write_text(
        f"""
tenant_id = "c0ffee00-cc10-4000-8000-000000000001"

[apis.calc-api]
client_id = "c0ffee00-cc10-4000-8000-0000000000a1"
roles = ["invokeRole"]

[clients.cert-client]
client_id = "{CERT_CLIENT_ID}"
certificates = ["client-cert.pem"]
roles = {{ calc-api = ["invokeRole"] }}
""",
        encoding="utf-8",
    )
    return {"base": base, "material": material}


@pytest.fixture(scope="module")
def cert_server(cert_files: dict[str, Any]) -> Iterator[Server]:
    yield from _serve("--config", str(cert_files["base"] / "registrations.toml"))


def test_token_with_certificate_gets_a_certificate_authenticated_token(
    cert_server: Server, cert_files: dict[str, Any]
) -> None:
    pem = str(cert_files["base"] / "client.pem")
    result = ccflow(*token_args(cert_server, "cert-client"), "--certificate", pem)
    assert result.returncode == 0, result.stderr
    claims = claims_of(result.stdout.strip())
    assert claims["azp"] == CERT_CLIENT_ID
    assert claims["azpacr"] == "2"
    assert claims["roles"] == ["invokeRole"]
    key_line = cert_files["material"].private_key_pem.decode().splitlines()[1]
    assert_no_secret(result, key_line)


def _stdin(data: bytes, errors: str = "strict") -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors=errors)


_TOKEN_ARGS = [
    "token",
    "--client-id",
    "c",
    "--token-endpoint",
    "http://127.0.0.1:9/token",
    "--scope",
    "s",
    "--client-secret-stdin",
]


@pytest.mark.parametrize(
    "argv", [_TOKEN_ARGS, ["decode", "-"], ["verify", "-", "--tenant-id", "t"]], ids=str
)
@pytest.mark.parametrize(
    "stdin",
    [
        lambda: None,  # `ccflow ... <&-`: Python sets sys.stdin to None
        lambda: _stdin(b"\xffs3cr\xe9t\n"),  # UTF-8 locale: readline() raises
        lambda: _stdin(b"\xffs3cr\xe9t\n", "surrogateescape"),  # C locale: lone surrogates
    ],
    ids=["closed", "strict", "surrogateescape"],
)
def test_unusable_stdin_is_a_usage_error_naming_standard_input(
    argv: list[str],
    stdin: Callable[[], io.TextIOWrapper | None],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # These were "ccflow: error: unexpected AttributeError/UnicodeDecodeError/
    # UnicodeEncodeError: ..." with exit 1, the code for "the authority refused".
    monkeypatch.setattr(sys, "stdin", stdin())
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "standard input" in err
    assert "unexpected" not in err
    assert "s3cr" not in err


@pytest.mark.parametrize(
    ("argv", "status"),
    [(["decode"], 1), (["verify", "--issuer", "http://127.0.0.1:9", "--any-audience"], 1)],
    ids=["decode", "verify-without-audience"],
)
def test_cli_calls_a_deeply_nested_token_not_a_jwt_rather_than_unexpected(
    argv: list[str], status: int, capsys: pytest.CaptureFixture[str]
) -> None:
    # Both printed "ccflow: error: unexpected RecursionError: maximum recursion depth...".
    assert main([argv[0], deeply_nested_payload_token(), *argv[1:]]) == status
    out = capsys.readouterr()
    assert "unexpected" not in out.err
    assert "not JSON" in out.err + out.out


_NO_ENV = ("AZURE_TENANT_ID", "AZURE_AUTHORITY_HOST", "CCFLOW_TOKEN_ENDPOINT", "SSL_CERT_FILE")


@pytest.mark.parametrize(
    ("flags", "env", "named"),
    [
        (["--tenant-id", "t", "--authority-host", "http://ex.com"], {}, "--authority-host"),
        (["--tenant-id", "t"], {"AZURE_AUTHORITY_HOST": "http://ex.com"}, "AZURE_AUTHORITY_HOST"),
        (
            [],
            {"AZURE_TENANT_ID": "t", "AZURE_AUTHORITY_HOST": "https://login.example/t"},
            "AZURE_AUTHORITY_HOST",
        ),
        (["--token-endpoint", "http://ex.com/token"], {}, "--token-endpoint"),
        ([], {"CCFLOW_TOKEN_ENDPOINT": "http://ex.com/token"}, "CCFLOW_TOKEN_ENDPOINT"),
        (["--tenant-id", "a/b"], {}, "--tenant-id"),
        ([], {"AZURE_TENANT_ID": "a/b"}, "AZURE_TENANT_ID"),
    ],
)
def test_token_names_the_flag_or_variable_holding_a_bad_value(
    flags: list[str],
    env: dict[str, str],
    named: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The errors named the Python argument (authority_host, token_endpoint, tenant_id), which
    # a command-line user never typed.
    for name in _NO_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "s3cret")
    assert main(["token", "--client-id", "c", "--scope", "api://x", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ccflow: error: {named}: ")


def test_token_with_an_expired_certificate_warns_once_in_its_own_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # It printed the message twice: once from the log, once as Python's
    # "/.../token.py:265: UserWarning: ..." followed by a line of ccflow's source code.
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    expired = make_certificate(key, not_after=datetime.datetime(2021, 6, 1, tzinfo=datetime.UTC))
    path = tmp_path / "client.pem"
    path.write_bytes(pem(key, expired))
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    argv = ["token", "--client-id", "c", "--token-endpoint", "https://login.example/token"]
    argv += ["--scope", "s", "--certificate", str(path), "--ca-file", str(tmp_path / "none")]
    assert main(argv) == 2  # the missing --ca-file stops it before any request
    err = capsys.readouterr().err
    assert err.count("expired on 2021-06-01") == 1
    assert "ccflow: warning: the certificate" in err
    assert "UserWarning" not in err
    assert ".py:" not in err


@pytest.mark.parametrize(
    "arg",
    [
        "--client-secre=abc SECRETPART",
        "--client-secre=abc\nSECRETPART",
        "--client-se=a b c SECRETPART",
    ],
)
def test_an_ambiguous_flag_never_shows_any_part_of_its_value(
    arg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Only the value's first word was hidden: "--client-secre=... SECRETPART could match".
    with pytest.raises(SystemExit) as info:
        main(["token", arg])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "ambiguous option: --client-se" in err
    assert "could match --client-secret-stdin, --client-secret" in err
    assert "SECRETPART" not in err


@pytest.mark.parametrize("secret", ["-Abc~SECRET", "-AbcSECRET", "-A"])
def test_a_mistyped_flags_value_starting_with_a_dash_is_not_shown(
    secret: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # An Azure AD secret may start with "-": after a mistyped --client_secret it was printed
    # as if it were a flag ("unrecognized arguments: --client_secret -Abc~SECRET").
    with pytest.raises(SystemExit) as info:
        main(["token", "--client_secret", secret])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--client_secret ..." in err
    assert secret not in err


@pytest.mark.parametrize("argv", [["decode", "e30.e30.sig"], _TOKEN_ARGS[:-1]], ids=str)
def test_a_closed_standard_output_is_a_usage_error_not_unexpected(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `ccflow decode "$T" >&-`: Python sets sys.stdout to None; it said "unexpected
    # AttributeError: 'NoneType' object has no attribute 'flush'" and exited 1, after doing
    # the work (for `token`, a token request) whose output could go nowhere.
    monkeypatch.setattr(sys, "stdout", None)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "standard output is closed" in err
    assert "unexpected" not in err


def test_a_command_that_ran_with_standard_output_closed_keeps_its_status(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `ccflow authority serve >&-` serves fine; the flush after it said "unexpected
    # AttributeError" and turned its status into 1.
    monkeypatch.setattr(sys, "stdout", None)
    default = signal.getsignal(signal.SIGTERM)

    def stop_once_serving() -> None:
        # serve installs its SIGTERM handler before it starts: only then is SIGTERM safe here.
        deadline = time.monotonic() + TIMEOUT
        while signal.getsignal(signal.SIGTERM) is default and time.monotonic() < deadline:
            time.sleep(0.01)
        if signal.getsignal(signal.SIGTERM) is not default:
            os.kill(os.getpid(), signal.SIGTERM)

    stopper = threading.Thread(target=stop_once_serving, daemon=True)
    stopper.start()
    assert main(["authority", "serve", "--port", "0"]) == 0
    stopper.join(TIMEOUT)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--tenant-id", "t", "--authority-host", "http://ex.com"], "--authority-host"),
        (["--issuer", "http://ex.com"], "--issuer"),
        (["--tenant-id", "a/b"], "--tenant-id"),
        (["--tenant-id", "t", "--allowed-client", " "], "--allowed-client"),
    ],
)
def test_verify_names_the_flag_holding_a_bad_value(
    flags: list[str],
    named: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The errors named the validator's arguments (authority_host, issuer, tenant_id).
    for name in ("AZURE_AUTHORITY_HOST", "CCFLOW_AUDIENCE", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
    assert main(["verify", "e30.eyJhdWQiOiJ4In0.sig", "--any-audience", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ccflow: error: {named}")


def test_with_standard_error_closed_messages_never_land_on_standard_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `T=$(ccflow token ... 2>&-)`: print(file=None) writes to stdout, so the warning and the
    # error became the "token" a script would send.
    monkeypatch.setattr(sys, "stderr", None)
    argv = [*_TOKEN_ARGS[:-1], "--client-secret", "s3cret", "--ca-file", str(tmp_path / "none")]
    assert main(argv) == 2
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    "argv", [["gate", "--port", "70000"], ["authority", "serve", "--port", "70000"]], ids=str
)
def test_with_standard_error_closed_the_servers_errors_never_land_on_standard_output(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `ccflow gate ... 2>&-`: the servers printed their errors with print(file=sys.stderr),
    # which writes to stdout when sys.stderr is None.
    monkeypatch.setattr(sys, "stderr", None)
    assert main(argv) == 2
    assert capsys.readouterr().out == ""
