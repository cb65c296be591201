"""Nothing secret leaks: the demo, the CLI (success and every failure), and the caller and API
error paths, run with every ccflow logger at DEBUG, with every byte of output and every log
record captured. No client secret (plain or form-encoded), private key, client assertion or
access token may appear, except the one place it belongs: the token ``ccflow token`` prints.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Iterator
from urllib.parse import quote_plus

import httpx
import pytest
from examples.calc_api.app import create_app
from tests.support import token_args

from ccflow import (
    AuthorityUnreachableError,
    TokenClient,
    TokenRequestError,
    TokenValidator,
)
from ccflow.authority import Authority, AuthorityServer, Fault
from ccflow.cli import main
from ccflow.testing import TokenFactory

JWT = re.compile(r"eyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]{8,}")
PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
SECRETS = [Authority().client(n).secret or "" for n in ("calc-client", "reader-client")]


def assert_clean(text: str, *, allowed_tokens: tuple[str, ...] = ()) -> None:
    for secret in SECRETS:
        assert secret
        assert secret not in text
        assert quote_plus(secret) not in text
    assert PEM.search(text) is None
    for match in JWT.findall(text):
        assert match in allowed_tokens, f"a token leaked: {match[:20]}..."


@pytest.fixture
def captured(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> Iterator[pytest.LogCaptureFixture]:
    for name in list(os.environ):
        if name.startswith(("AZURE_", "CCFLOW_")):
            monkeypatch.delenv(name)
    with caplog.at_level(logging.DEBUG):
        yield caplog


def logs(caplog: pytest.LogCaptureFixture) -> str:
    parts = []
    for record in caplog.records:
        parts += [record.getMessage(), repr(record.args), str(record.exc_text or "")]
    return "\n".join(parts)


@pytest.fixture(scope="module")
def server() -> Iterator[AuthorityServer]:
    with AuthorityServer() as server:
        yield server


def test_demo_leaks_nothing(
    captured: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo"]) == 0
    out, err = capfd.readouterr()
    assert_clean(out + err + logs(captured))


@pytest.mark.parametrize(
    ("secret", "extra", "status"),
    [
        (SECRETS[0], [], 0),
        (SECRETS[0], ["--json"], 0),
        (SECRETS[0], ["--decode"], 0),
        (SECRETS[0] + "x", [], 1),
        (SECRETS[1], ["--scope", "api://nope/.default"], 1),
        (None, [], 2),
        (SECRETS[0], ["-v"], 0),
        (SECRETS[0], ["-v", "--json"], 0),
        (SECRETS[0] + "x", ["-v"], 1),
        (None, ["-v"], 2),
    ],
    ids=[
        "ok",
        "json",
        "decode",
        "wrong-secret",
        "wrong-scope",
        "no-secret",
        "verbose",
        "verbose-json",
        "verbose-wrong-secret",
        "verbose-no-secret",
    ],
)
def test_cli_token_leaks_nothing_but_its_token(
    server: AuthorityServer,
    captured: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    secret: str | None,
    extra: list[str],
    status: int,
) -> None:
    if secret is not None:
        monkeypatch.setenv("AZURE_CLIENT_SECRET", secret)
    assert main(token_args(server, *extra)) == status
    out, err = capfd.readouterr()
    printed = tuple(JWT.findall(out)) if status == 0 and "--decode" not in extra else ()
    assert len(printed) <= 1
    assert_clean(out, allowed_tokens=printed)
    assert_clean(err + logs(captured))


@pytest.mark.parametrize("fault", [Fault(status=503), Fault(drop=True)], ids=["503", "drop"])
def test_cli_token_verbose_retries_leak_nothing(
    server: AuthorityServer,
    captured: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    fault: Fault,
) -> None:
    monkeypatch.setenv("AZURE_CLIENT_SECRET", SECRETS[0])
    server.authority.set_fault("token", fault)
    try:
        status = main(token_args(server, "-v", "--max-retries", "1"))
    finally:
        server.authority.clear_fault()
    out, err = capfd.readouterr()
    assert status in (3, 4)
    assert "retrying in" in err
    assert_clean(out + err + logs(captured))


def test_cli_token_unreachable_leaks_nothing(
    captured: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket_port() as port:
        monkeypatch.setenv("AZURE_CLIENT_SECRET", SECRETS[0])
        args = ["token", "--client-id", "c", "--token-endpoint"]
        args += [f"http://127.0.0.1:{port}/t/oauth2/v2.0/token", "--scope", "api://x/.default"]
        assert main(args) == 3
    out, err = capfd.readouterr()
    assert_clean(out + err + logs(captured))


class socket_port:
    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


@pytest.mark.parametrize("kind", ["valid", "expired", "tampered", "wrong_audience", "no_roles"])
def test_cli_verify_and_decode_leak_no_key(
    server: AuthorityServer,
    captured: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    kind: str,
) -> None:
    authority = server.authority
    token = getattr(TokenFactory(authority), kind)()
    args = ["verify", token, "--tenant-id", authority.tenant_id, "--authority-host"]
    args += [authority.host, "--audience", authority.api("calc-api").client_id]
    main(args)
    main([*args, "-v"])
    main(["decode", token])
    out, err = capfd.readouterr()
    assert_clean(out + err + logs(captured), allowed_tokens=(token,))


def test_caller_error_paths_leak_nothing(captured: pytest.LogCaptureFixture) -> None:
    authority = Authority()
    app = authority.client("calc-client")
    scope = authority.api("calc-api").default_scope
    texts: list[str] = []
    faults = [Fault(status=503), Fault(drop=True), Fault(timeout=True), Fault(body=b"<html>")]
    for fault in [*faults, None]:
        authority.clear_fault()
        secret = app.secret if fault is not None else (app.secret or "") + "x"
        if fault is not None:
            authority.set_fault("token", fault)
        client = TokenClient(
            client_id=app.client_id,
            client_secret=secret,
            tenant_id=authority.tenant_id,
            authority_host=authority.host,
            http_client=httpx.Client(transport=authority.transport()),
            max_retries=1,
            sleep=lambda seconds: None,
        )
        with pytest.raises((TokenRequestError, AuthorityUnreachableError)) as info:
            client.get_token(scope)
        err = info.value
        texts += [str(err), repr(err), repr(err.__dict__), repr(err.__context__), repr(client)]
    assert_clean("\n".join(texts) + logs(captured))  # assertions are JWTs: JWT catches them


def test_api_error_paths_leak_nothing(captured: pytest.LogCaptureFixture) -> None:
    authority = Authority()
    api = authority.api("calc-api")
    tokens = TokenFactory(authority)
    bad = [tokens.expired(), tokens.tampered(), tokens.wrong_audience(), tokens.no_roles()]
    bad += [tokens.unknown_kid(), tokens.alg_none(), tokens.other_key(), tokens.valid()]

    async def go() -> list[str]:
        validator = TokenValidator(
            tenant_id=authority.tenant_id,
            authority_host=authority.host,
            audience=api.client_id,
            http_client=httpx.AsyncClient(transport=authority.transport()),
        )
        transport = httpx.ASGITransport(app=create_app(validator))
        texts = []
        async with httpx.AsyncClient(transport=transport, base_url="http://calc") as http:
            for token in bad:
                r = await http.get("/calc/v1/add/1/1", headers={"Authorization": f"Bearer {token}"})
                texts.append(f"{r.status_code} {r.headers} {r.text}")
            authority.set_fault("jwks", Fault(status=503))
            cold = TokenValidator(
                tenant_id=authority.tenant_id,
                authority_host=authority.host,
                audience=api.client_id,
                http_client=httpx.AsyncClient(transport=authority.transport()),
            )
            cold_app = httpx.ASGITransport(app=create_app(cold))
            async with httpx.AsyncClient(transport=cold_app, base_url="http://c") as http2:
                r = await http2.get(
                    "/calc/v1/add/1/1", headers={"Authorization": f"Bearer {bad[-1]}"}
                )
                assert r.status_code == 503
                texts.append(f"{r.status_code} {r.headers} {r.text}")
        await validator.aclose()
        await cold.aclose()
        return texts

    texts = asyncio.run(go())
    assert_clean("\n".join(texts) + logs(captured))
