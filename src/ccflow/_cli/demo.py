"""``ccflow demo``: the client-credentials flow, end to end, on this machine, in a few seconds.

Starts the local authority and the calc API (``examples/calc_api``, which the wheel ships as
``ccflow/_examples/calc_api``) with uvicorn on free 127.0.0.1 ports, in threads of this
process, then walks the story: the registrations, the token request, the decoded token, a call
answered 200 with the sum, a caller without the role answered 403, a tampered token answered
401. Exit 0 only if every step behaved; both servers
are stopped before returning, whatever happened.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, Literal

import httpx

from ccflow._cli._common import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    add_command,
    error,
    guarded,
    stdout_closed,
)
from ccflow._core.b64 import b64url_decode, b64url_encode
from ccflow._core.explain import decode_unverified, explain_time
from ccflow.errors import CCFlowError

__all__ = ["add_parser", "run"]

# Bounds on waiting for a server to start or stop: the demo must never hang.
_START_TIMEOUT = 15.0
_STOP_TIMEOUT = 5.0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``demo`` on the ``ccflow`` subparsers."""
    return add_command(
        subparsers,
        "demo",
        run,
        help="run the whole client-credentials flow on this machine and show each step",
        description=(
            "Start the local authority and the calc API on free 127.0.0.1 ports, then walk the"
            " client-credentials flow: registrations, token request, decoded token, an allowed"
            " call (200), a caller without the role (403) and a tampered token (401). Exit 0"
            " only if every step behaved as expected; nothing is left running."
        ),
    )


@dataclass
class _Story:
    """Prints the steps and remembers whether each behaved."""

    failures: list[str] = field(default_factory=list)
    number: int = 0

    def step(self, title: str) -> None:
        """Start the next numbered step."""
        self.number += 1
        print(f"\n{self.number}. {title}", flush=True)

    def line(self, text: str = "") -> None:
        """One indented line of the current step."""
        print(f"   {text}" if text else "", flush=True)

    def check(self, ok: bool, expected: str) -> None:
        """Say whether the step behaved as ``expected``, and remember it if not."""
        if ok:
            self.line(f"ok: {expected}")
        else:
            self.line(f"FAILED: expected {expected}")
            self.failures.append(f"step {self.number}: expected {expected}")


def _status(code: int) -> str:
    """``200 OK``: the code and its phrase, when it has one."""
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return str(code)


def _bound_socket() -> socket.socket:
    """A listening socket on a free 127.0.0.1 port, for uvicorn to serve on."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


@contextlib.contextmanager
def _serve(
    app: Any, sock: socket.socket, name: str, *, lifespan: Literal["on", "off"] = "on"
) -> Iterator[None]:
    """Serve ``app`` with uvicorn on ``sock`` in a thread; always stop it on exit."""
    import uvicorn

    config = uvicorn.Config(
        app, interface="asgi3", log_level="error", access_log=False, lifespan=lifespan
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"ccflow-demo-{name}", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + _START_TIMEOUT
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the {name} did not start")
            time.sleep(0.01)
        yield
    finally:
        server.should_exit = True
        thread.join(_STOP_TIMEOUT)
        sock.close()


def _calc_api_file() -> Path | None:
    """The calc API's ``app.py``: in the installed wheel, else in the checkout ccflow runs from."""
    import ccflow

    package = Path(ccflow.__file__).resolve().parent
    for candidate in (
        package / "_examples" / "calc_api" / "app.py",  # the wheel ships examples/calc_api here
        package.parents[1] / "examples" / "calc_api" / "app.py",  # src/ccflow in a checkout
    ):
        if candidate.is_file():
            return candidate
    return None


def _tampered(token: str, **changes: Any) -> str:
    """The token with claims changed and the original signature kept: a forgery."""
    header, payload, signature = token.split(".")
    claims = json.loads(b64url_decode(payload))
    claims.update(changes)
    forged = b64url_encode(json.dumps(claims).encode())
    return f"{header}.{forged}.{signature}"


def _short(value: str, keep: int = 24) -> str:
    """A long value shortened to its start and end."""
    return value if len(value) <= keep * 2 else f"{value[:keep]}...{value[-8:]}"


def _show_response(story: _Story, response: httpx.Response) -> None:
    """The status, any ``WWW-Authenticate`` challenge, and the start of the body."""
    story.line(f"-> {_status(response.status_code)}")
    challenge = response.headers.get("www-authenticate")
    if challenge:
        story.line(f"   WWW-Authenticate: {challenge}")
    body = response.text.strip()
    if body:
        story.line(f"   {body[:200]}")


def _token_for(authority: Any, client: Any, scope: str) -> tuple[str, int]:
    """A token for ``client``, and the status the authority answered its request with."""
    from ccflow import TokenClient  # type: ignore[attr-defined,unused-ignore]

    statuses: list[int] = []

    def record(response: httpx.Response) -> None:
        statuses.append(response.status_code)

    with (
        httpx.Client(event_hooks={"response": [record]}) as http,
        TokenClient(
            client_id=client.client_id,
            client_secret=client.secret,
            tenant_id=authority.tenant_id,
            authority_host=authority.host,
            http_client=http,
        ) as tokens,
    ):
        token = tokens.get_token(scope).token
    return token, statuses[-1] if statuses else 0


def _call(story: _Story, http: httpx.Client, token: str, whose: str) -> httpx.Response:
    """Call the calc API's ``add/1/1`` with ``token`` and show the request and answer."""
    story.line(f"GET /calc/v1/add/1/1   Authorization: Bearer <{whose}>")
    response = http.get("/calc/v1/add/1/1", headers={"Authorization": f"Bearer {token}"})
    _show_response(story, response)
    return response


def _step_registrations(story: _Story, authority: Any) -> None:
    """Step 1: the API and client registrations, and who is granted invokeRole."""
    api = authority.api("calc-api")
    calc_client = authority.client("calc-client")
    reader = authority.client("reader-client")
    story.step("The app registrations (what the Azure portal holds)")
    story.line(f"tenant         {authority.tenant_id}")
    story.line(f"API app        calc-api       client id {api.client_id}")
    story.line(f"               App ID URI {api.identifier_uri}, app roles: {', '.join(api.roles)}")
    for client in (calc_client, reader):
        granted = ", ".join(client.roles_for("calc-api"))
        story.line(f"client app     {client.name:<14} client id {client.client_id}")
        story.line(f"               granted on calc-api: {granted or '(nothing)'}")
    story.check(
        "invokeRole" in api.roles
        and "invokeRole" in calc_client.roles_for("calc-api")
        and not reader.roles_for("calc-api"),
        "calc-api defines invokeRole, granted to calc-client only",
    )


def _step_token_request(story: _Story, authority: Any) -> tuple[str, str, int]:
    """Step 2: both clients get a token; the calc client's request is shown."""
    calc_client = authority.client("calc-client")
    scope = authority.api("calc-api").default_scope
    story.step("calc-client asks the authority for a token (client credentials)")
    story.line(f"POST {authority.token_endpoint}")
    story.line(f"     grant_type=client_credentials client_id={calc_client.client_id}")
    story.line(f"     client_secret=(hidden) scope={scope}")
    token, calc_status = _token_for(authority, calc_client, scope)
    reader_token, reader_status = _token_for(authority, authority.client("reader-client"), scope)
    story.line(f"-> {_status(calc_status)}, access_token {_short(token)}")
    story.check(calc_status == 200, "200 OK with an access token")
    return token, reader_token, reader_status


def _step_decoded(story: _Story, authority: Any, token: str, now: float) -> None:
    """Step 3: the calc client's token, decoded."""
    story.step("The token, decoded (ccflow decode; the API verifies it in the next steps)")
    claims = decode_unverified(token).claims
    for name in ("aud", "iss", "azp", "roles", "tid", "ver"):
        if name in claims:
            story.line(f"{name:<6} {json.dumps(claims[name])}")
    story.line(f"exp    {explain_time(claims.get('exp'), now=now, claim='exp')}")
    story.check(
        claims.get("azp") == authority.client("calc-client").client_id
        and "invokeRole" in claims.get("roles", []),
        "azp is calc-client and roles holds invokeRole",
    )


def _step_allowed(story: _Story, http: httpx.Client, token: str) -> None:
    """Step 4: the calc client's call is answered 200 with the sum."""
    story.step("calc-client calls the API with its token")
    response = _call(story, http, token, "calc-client's token")
    ok = response.status_code == 200 and response.json().get("result") == 2
    story.check(ok, '200 OK with {"result": 2}')


def _step_no_role(story: _Story, http: httpx.Client, token: str, token_status: int) -> None:
    """Step 5: the reader client, granted no role, is answered 403."""
    story.step("reader-client (registered, but granted no role) calls the API")
    roles = decode_unverified(token).claims.get("roles")
    story.line(
        f"its token request was answered {_status(token_status)} too;"
        f" its token's roles claim: {json.dumps(roles) if roles else 'absent'}"
    )
    response = _call(story, http, token, "reader-client's token")
    story.check(response.status_code == 403, "403 Forbidden (insufficient_scope)")


def _step_forged(story: _Story, http: httpx.Client, token: str) -> None:
    """Step 6: the reader's token with invokeRole forged in is answered 401."""
    story.step("reader-client forges invokeRole into its token, keeping the signature")
    forged = _tampered(token, roles=["invokeRole"])
    response = _call(story, http, forged, "tampered token")
    story.check(response.status_code == 401, "401 Unauthorized (invalid_token: signature)")


def _walk(story: _Story, authority: Any, api_url: str) -> None:
    """The story's steps, in order, against the running authority and calc API."""
    _step_registrations(story, authority)
    now = time.time()
    token, reader_token, reader_status = _step_token_request(story, authority)
    _step_decoded(story, authority, token, now)
    with httpx.Client(base_url=api_url) as http:
        _step_allowed(story, http, token)
        _step_no_role(story, http, reader_token, reader_status)
        _step_forged(story, http, reader_token)


@contextlib.contextmanager
def _environment(values: dict[str, str | None]) -> Iterator[None]:
    """Set (or, for ``None``, unset) environment variables, then restore what was there."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        _set_environment(values)
        yield
    finally:
        _set_environment(saved)


def _set_environment(values: dict[str, str | None]) -> None:
    """Set each variable to its value, or unset it for ``None``."""
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _loopback_environment() -> dict[str, str | None]:
    """Plain HTTP to 127.0.0.1 for the whole demo: no proxy, no CA bundle."""
    # httpx would send loopback requests through HTTP_PROXY too, and an SSL_CERT_FILE left
    # by a stopped local authority names a removed CA: both would break the demo.
    no_proxy = ",".join(
        v for v in (os.environ.get("no_proxy") or os.environ.get("NO_PROXY"), "127.0.0.1") if v
    )
    return {"NO_PROXY": no_proxy, "no_proxy": no_proxy, "SSL_CERT_FILE": None, "SSL_CERT_DIR": None}


def _api_environment(authority: Any) -> dict[str, str | None]:
    """The calc API's configuration, as production sets it; a real API's settings masked."""
    api = authority.api("calc-api")
    return {
        "CCFLOW_TENANT_ID": authority.tenant_id,
        "AZURE_AUTHORITY_HOST": authority.host,
        "CCFLOW_AUDIENCE": f"{api.client_id},{api.identifier_uri}",
        "CCFLOW_ISSUER": None,
        "CCFLOW_ALLOWED_CLIENTS": None,
        "CCFLOW_ALLOWED_TENANTS": None,
        "CCFLOW_ACCEPT_V1": None,
    }


def _calc_api(app_file: Path) -> Any:
    """A fresh calc API app, configured from the environment as in production."""
    # Loaded from its file, never imported by name: an ``examples`` package in the current
    # directory (someone else's) must not be what the demo runs.
    spec = importlib.util.spec_from_file_location("_ccflow_demo_calc_api", app_file)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load the calc API from {app_file}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.create_app()


def _demo_app_file() -> Path | None:
    """The calc API the demo serves, if uvicorn is there too; ``None`` after saying why not."""
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        error("ccflow demo needs uvicorn: pip install 'ccflow-oauth[server]'")
        return None
    app_file = _calc_api_file()
    if app_file is None:
        error(
            "ccflow demo needs the calc API shipped with ccflow-oauth (ccflow/_examples/calc_api),"
            " which this installation lacks: pip install --force-reinstall 'ccflow-oauth[server]'"
        )
    return app_file


def _serve_and_walk(
    story: _Story, app_file: Path, authority_sock: socket.socket, api_sock: socket.socket
) -> None:
    """Serve the local authority and the calc API on the sockets and walk the story."""
    from ccflow.authority import Authority  # type: ignore[attr-defined,unused-ignore]

    authority = Authority(host=f"http://127.0.0.1:{authority_sock.getsockname()[1]}")
    api_url = f"http://127.0.0.1:{api_sock.getsockname()[1]}"
    loopback = _loopback_environment()
    app = _calc_api(app_file)  # it reads its configuration from the environment when it starts
    with (
        _environment({**_api_environment(authority), **loopback}),
        _serve(authority.asgi, authority_sock, "local authority"),
        _serve(app, api_sock, "calc API"),
    ):
        print(f"   local authority  {authority.host}  (issuer {authority.issuer})")
        print(f'   calc API         {api_url}  (RequireRole("invokeRole"))')
        _walk(story, authority, api_url)


@guarded
def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 only if every step behaved, and nothing is left running either way."""
    if stdout_closed():
        return EXIT_USAGE
    app_file = _demo_app_file()
    if app_file is None:
        return EXIT_USAGE
    started = time.monotonic()
    story = _Story()
    print("ccflow demo: the OAuth 2.0 client-credentials flow, end to end, on 127.0.0.1")
    authority_sock, api_sock = _bound_socket(), _bound_socket()
    try:
        _serve_and_walk(story, app_file, authority_sock, api_sock)
    except (CCFlowError, RuntimeError, httpx.HTTPError, OSError) as exc:
        story.failures.append(f"{exc.__class__.__name__}: {exc}")
        error(f"the demo stopped: {exc.__class__.__name__}: {exc}")
    finally:
        authority_sock.close()
        api_sock.close()
    took = f"{time.monotonic() - started:.1f} s"
    if story.failures:
        print(f"\nFAILED ({took}): {'; '.join(story.failures)}. Both servers are stopped.")
        return EXIT_REFUSED
    print(f"\nAll {story.number} steps behaved as expected ({took}). Both servers are stopped.")
    return EXIT_OK
