"""Findings of a security review of the protecting side, each pinned by the test that showed
it, and the attacks that held up, kept so they keep holding."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send
from tests.support import FakeValidator, FakeVerdict

from ccflow import RequireRole

GOOD = "good.token.value"


def _validator() -> FakeValidator:
    return FakeValidator({GOOD: FakeVerdict(roles=("invokeRole",))})


async def _inner(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"inner"})


def _call(
    middleware: Any,
    path: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    method: str = "GET",
    root_path: str = "",
) -> tuple[int, bytes]:
    scope: dict[str, Any] = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "root_path": root_path,
        "query_string": b"",
        "headers": headers or [],
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(middleware(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_a_refused_path_cannot_forge_debug_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    # scope["path"] is percent-decoded by the server: "/calc%0a..." arrives with a real line
    # break, and the refusal's debug line printed it as is, so a caller could write lines of
    # its own choosing into the API's log (or drive a terminal with escape sequences).
    middleware = RequireRole("invokeRole", validator=_validator())(_inner)
    forged = "/calc\nINFO ccflow.starlette: accepted GET /admin\r\x1b[2J\u2028"
    with caplog.at_level(logging.DEBUG, logger="ccflow.starlette"):
        assert _call(middleware, forged)[0] == 401
    lines = [r.getMessage() for r in caplog.records if r.name == "ccflow.starlette"]
    assert lines, "the refusal is logged at DEBUG"
    for line in lines:
        assert not any(ch in line for ch in "\n\r\x1b\u2028"), line
    assert "/calc\\nINFO" in lines[0]


def _user_app() -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        user = scope.get("user")
        body = b"authenticated" if user is not None and user.is_authenticated else b"anonymous"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return app


PREFLIGHT = [(b"origin", b"https://evil.example"), (b"access-control-request-method", b"GET")]


@pytest.mark.parametrize("authorization", [None, b"Bearer " + GOOD.encode(), b"Bearer forged"])
def test_an_allowed_preflight_reaches_the_app_as_the_unauthenticated_user(
    authorization: bytes | None,
) -> None:
    # Anyone can send Origin + Access-Control-Request-Method: what the docs tell a handler
    # answering OPTIONS to check (request.user.is_authenticated) must say "no" for it.
    middleware = RequireRole("invokeRole", validator=_validator(), allow_preflight=True)(
        _user_app()
    )
    headers = list(PREFLIGHT)
    if authorization is not None:
        headers.append((b"authorization", authorization))
    assert _call(middleware, "/data", headers, method="OPTIONS") == (200, b"anonymous")
    assert _call(middleware, "/data", headers[:1], method="OPTIONS")[0] == 401
    lower = _call(middleware, "/data", headers, method="options")
    assert lower[1] != b"anonymous"  # only the upper-case ASGI method counts as a preflight


def test_a_preflight_needs_a_token_unless_allowed() -> None:
    # The pass-through let a preflight's attacker-chosen headers reach handlers that answer
    # OPTIONS themselves, and mounted apps, with no token: it is opt-in now.
    middleware = RequireRole("invokeRole", validator=_validator())(_user_app())
    assert _call(middleware, "/data", PREFLIGHT, method="OPTIONS")[0] == 401
    with_token = [*PREFLIGHT, (b"authorization", b"Bearer " + GOOD.encode())]
    assert _call(middleware, "/data", with_token, method="OPTIONS") == (200, b"authenticated")


@pytest.mark.parametrize(
    ("path", "root_path"),
    [
        ("/healthz/", ""),
        ("//healthz", ""),
        ("/healthz/../calc", ""),
        ("/HEALTHZ", ""),
        ("/Healthz", ""),
        ("/healthz\x00", ""),
        ("/healthz%2f", ""),
        ("/health", ""),
        ("/healthy/x", ""),
        ("/api/healthz", ""),
        ("/healthz", "/healthz"),
        ("/health/x", "/health"),
        ("/apihealthz", "/api"),
        ("/api", "/api"),
    ],
)
def test_exempt_paths_are_not_opened_by_near_misses(path: str, root_path: str) -> None:
    middleware = RequireRole(
        "invokeRole", validator=_validator(), exempt=["/healthz", "/health/*"]
    )(_user_app())
    assert _call(middleware, path, root_path=root_path)[0] == 401


@pytest.mark.parametrize(
    ("path", "root_path"),
    [("/healthz", ""), ("/health/ready", ""), ("/api/healthz", "/api"), ("/a/health/x", "/a")],
)
def test_exempt_paths_still_pass(path: str, root_path: str) -> None:
    middleware = RequireRole(
        "invokeRole", validator=_validator(), exempt=["/healthz", "/health/*"]
    )(_user_app())
    assert _call(middleware, path, root_path=root_path) == (200, b"anonymous")


def _raw_token(header: bytes, claims: bytes) -> str:
    from tests.support import b64, rsa_key, sign

    signing_input = f"{b64(header)}.{b64(claims)}"
    return f"{signing_input}.{b64(sign(signing_input.encode(), rsa_key('a'), 'RS256'))}"


def _raw_cases(now: float) -> list[tuple[str, bytes, bytes]]:
    good = (
        f'"aud":"api://calc","iss":"https://login.example/tenant/v2.0","exp":{int(now) + 3600},'
        f'"iat":{int(now) - 100},"azp":"client","tid":"tenant","ver":"2.0"'
    )
    header = b'{"alg":"RS256","kid":"ka"}'
    return [
        ("dup aud, good last", header, ('{"aud":"api://other",' + good + "}").encode()),
        ("dup aud, other last", header, ("{" + good + ',"aud":"api://other"}').encode()),
        ("dup iss, other last", header, ("{" + good + ',"iss":"https://evil/v2.0"}').encode()),
        ("dup exp, past last", header, ("{" + good + ',"exp":1}').encode()),
        ("dup exp, past first", header, ('{"exp":1,' + good + "}").encode()),
        (
            "dup alg, none last",
            b'{"alg":"RS256","kid":"ka","alg":"none"}',
            ("{" + good + "}").encode(),
        ),
        (
            "dup alg, RS256 last",
            b'{"alg":"none","kid":"ka","alg":"RS256"}',
            ("{" + good + "}").encode(),
        ),
        (
            "dup kid, unknown last",
            b'{"alg":"RS256","kid":"ka","kid":"kz"}',
            ("{" + good + "}").encode(),
        ),
        (
            "dup kid, good last",
            b'{"alg":"RS256","kid":"kz","kid":"ka"}',
            ("{" + good + "}").encode(),
        ),
        ("exp NaN", header, ("{" + good + ',"exp":NaN}').encode()),
        ("exp Infinity", header, ("{" + good + ',"exp":Infinity}').encode()),
        ("exp 1e400", header, ("{" + good + ',"exp":1e400}').encode()),
        ("claims BOM", header, b"\xef\xbb\xbf{" + good.encode() + b"}"),
        ("claims UTF-16", header, ("{" + good + "}").encode("utf-16-le")),
        (
            "header UTF-16",
            '{"alg":"RS256","kid":"ka"}'.encode("utf-16-le"),
            ("{" + good + "}").encode(),
        ),
        ("claims array", header, b"[{" + good.encode() + b"}]"),
        ("trailing garbage", header, ("{" + good + "}x").encode()),
        ("control good", header, ("{" + good + "}").encode()),
    ]


def test_duplicate_json_keys_and_json_oddities_get_pyjwts_verdict() -> None:
    # Our parse path and PyJWT must agree on which of two duplicate keys counts (the last),
    # so a token cannot mean one thing to ccflow and another to a PyJWT-based peer.
    import time

    from test_validation_parity import ours, pyjwts

    now = time.time()
    verdicts = {
        name: (ours(tok, now), pyjwts(tok))
        for name, h, c in _raw_cases(now)
        for tok in [_raw_token(h, c)]
    }
    assert all(a == b for a, b in verdicts.values()), verdicts
    assert verdicts["control good"] == (True, True)
    assert verdicts["dup aud, good last"] == (True, True)
    assert verdicts["dup alg, none last"] == (False, False)
