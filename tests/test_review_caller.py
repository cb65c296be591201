"""Caller side and CLI: behaviours found in review, each pinned by the test that found it."""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import io
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from tests.test_credentials_certificate import make_certificate, pem

from ccflow import TokenClient
from ccflow._cli._common import guarded
from ccflow._core.assertions import unverified_expiry
from ccflow._core.explain import decode_unverified
from ccflow.authority import Authority, Fault
from ccflow.cli import main
from ccflow.errors import InvalidTokenError, TokenRequestError

if TYPE_CHECKING:
    from tests.caller.conftest import AsyncClientFactory, ClientFactory
    from tests.conftest import FakeClock


@pytest.mark.anyio
async def test_a_fetch_cancelled_before_it_started_does_not_poison_the_scopes(
    async_client: AsyncClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    # A shutdown handler cancelling every task can cancel the fetch task before its first
    # step: its cleanup never ran, and every later get_token() for these scopes awaited the
    # cancelled task again and raised CancelledError, forever.
    tc, _ = async_client()
    async with tc:
        waiter = asyncio.ensure_future(tc.get_token(scope))
        await asyncio.sleep(0)  # the waiter registered the fetch task, which has not run yet
        (fetch,) = tc._flights.values()
        fetch.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        token = await tc.get_token(scope)
        assert token.scopes == (scope,)
    assert authority.hits["token"] == 1


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


def _deeply_nested_payload_token() -> str:
    def b64(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()

    header = b64('{"alg": "RS256"}')
    payload = b64('{"a": ' + "[" * 5000 + "]" * 5000 + "}")
    return f"{header}.{payload}.sig"


def test_decode_unverified_refuses_a_deeply_nested_payload_as_malformed() -> None:
    # json raised RecursionError, which escaped decode_unverified().
    with pytest.raises(InvalidTokenError, match="not JSON") as info:
        decode_unverified(_deeply_nested_payload_token())
    assert info.value.reason == "malformed"


@pytest.mark.parametrize(
    ("argv", "status"),
    [(["decode"], 1), (["verify", "--issuer", "http://127.0.0.1:9"], 1)],
    ids=["decode", "verify-without-audience"],
)
def test_cli_calls_a_deeply_nested_token_not_a_jwt_rather_than_unexpected(
    argv: list[str], status: int, capsys: pytest.CaptureFixture[str]
) -> None:
    # Both printed "ccflow: error: unexpected RecursionError: maximum recursion depth...".
    assert main([argv[0], _deeply_nested_payload_token(), *argv[1:]]) == status
    out = capsys.readouterr()
    assert "unexpected" not in out.err
    assert "not JSON" in out.err + out.out


@pytest.mark.parametrize(
    "payload", ['{"exp": 1' + "0" * 400 + "}", "[" * 5000 + "]" * 5000], ids=["huge-exp", "deep"]
)
def test_unverified_expiry_of_an_odd_assertion_is_unknown_not_an_exception(payload: str) -> None:
    # OverflowError / RecursionError escaped, so a FederatedTokenFile caught holding such a
    # file failed with an "unexpected" wrapped error instead of reading it as opaque.
    segment = base64.urlsafe_b64encode(payload.encode()).rstrip(b"=").decode()
    assert unverified_expiry(f"e30.{segment}.sig") is None


def _raise_for_status(response: httpx.Response) -> None:
    response.raise_for_status()  # the event hook httpx's documentation suggests


async def _araise_for_status(response: httpx.Response) -> None:
    response.raise_for_status()


def test_a_raise_for_status_hook_on_a_shared_client_does_not_break_retries_or_refresh(
    sync_client: ClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    # The hook's httpx.HTTPStatusError escaped get_token(): a 503 was not retried, a failed
    # proactive refresh raised although a valid token was cached, and the error was not a
    # ccflow one (its .request holds the secret in its body).
    http = httpx.Client(
        transport=authority.transport(), event_hooks={"response": [_raise_for_status]}
    )
    tc, sleeps = sync_client(max_retries=1)
    tc._http = http
    with http, tc:
        authority.set_fault("token", Fault(status=503, retry_after="1", times=1))
        first = tc.get_token(scope)
        assert sleeps == [1.0]
        clock.advance(3599 - 200)  # inside the refresh margin: a proactive refresh
        authority.set_fault("token", Fault(status=503))
        assert tc.get_token(scope) is first
        authority.clear_fault("token")
        authority.set_fault("token", Fault(status=400))
        clock.advance(400)  # expired: the refusal reaches the caller, as ccflow's error
        with pytest.raises(TokenRequestError) as info:
            tc.get_token(scope)
    assert info.value.status_code == 400
    assert info.value.aadsts_code == 90033  # the in-process answer was read before the hook


def test_an_answer_a_hook_left_unread_is_explained_not_called_empty(scope: str) -> None:
    # Over a real connection httpx closes the answer unread when a hook raises for it.
    def unread(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, stream=httpx.ByteStream(b'{"error": "invalid_client"}'))

    http = httpx.Client(
        transport=httpx.MockTransport(unread), event_hooks={"response": [_raise_for_status]}
    )
    with (
        http,
        TokenClient(
            client_id="c",
            client_secret="s3cret",
            token_endpoint="https://x.test/token",
            http_client=http,
        ) as tc,
        pytest.raises(TokenRequestError) as info,
    ):
        tc.get_token(scope)
    assert info.value.status_code == 400
    assert "event hook of the http_client" in str(info.value)
    assert "empty" not in str(info.value)


@pytest.mark.anyio
async def test_a_raise_for_status_hook_on_a_shared_async_client_does_not_break_retries(
    async_client: AsyncClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    http = httpx.AsyncClient(
        transport=authority.transport(), event_hooks={"response": [_araise_for_status]}
    )
    tc, sleeps = async_client(max_retries=1)
    tc._http = http
    async with http, tc:
        authority.set_fault("token", Fault(status=429, retry_after="2", times=1))
        first = await tc.get_token(scope)
        assert sleeps == [2.0]
        clock.advance(3599 - 200)
        authority.set_fault("token", Fault(status=500))
        assert await tc.get_token(scope) is first


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
        fields = client._config.credential.request_fields(
            client_id="cid", token_endpoint="https://x/t", auth_method="client_secret_post", now=0
        )
    assert dict(fields.form)["client_secret"] == "s3cret"


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
    assert guarded(lambda args: 0)(argparse.Namespace()) == 0
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
    assert main(["verify", "e30.eyJhdWQiOiJ4In0.sig", *flags]) == 2
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
