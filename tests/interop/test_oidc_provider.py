"""ccflow against an authorization server nobody on this team wrote.

The server is panva's ``oidc-provider`` (OpenID Certified), pinned in
``tests/oidc_provider/package.json`` and configured by ``tests/oidc_provider/server.js`` for the
client-credentials grant with resource indicators, so it issues RS256 JWT access tokens for
``scope=<resource>/.default`` with ``azp`` and ``roles`` claims. It runs under Node on
127.0.0.1 for the duration of this module. Without Node or npm the module is skipped with the
reason, except in CI (``CI=true``), where that is a failure.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import secrets
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ccflow import AccessToken, RequireRole, TokenClient, TokenRequestError, TokenValidator

TESTBED = Path(__file__).parent / "oidc_provider"
RESOURCE = "api://calc-api"
SCOPE = f"{RESOURCE}/.default"
START_TIMEOUT = 30.0  # seconds; Node starts in well under one, but the machines are shared
INSTALL_TIMEOUT = 300.0


@dataclass(frozen=True)
class Client:
    client_id: str
    secret: str
    auth_method: str
    roles: tuple[str, ...]


CALLER = Client("calc-client", secrets.token_urlsafe(24), "client_secret_post", ("invokeRole",))
# Every character RFC 6749 section 2.3.1 makes a client form-urlencode before base64, including
# a ready-made escape ("%2F") that a double decode would turn into "/".
RESERVED_SECRET = f"p+q/r%2Fs&t=u:v?w x  y{secrets.token_urlsafe(8)}"
BASIC_CALLER = Client("basic-client", RESERVED_SECRET, "client_secret_basic", ("invokeRole",))
READER = Client("reader-client", secrets.token_urlsafe(24), "client_secret_post", ())
CLIENTS = (CALLER, BASIC_CALLER, READER)


@dataclass(frozen=True)
class Provider:
    issuer: str
    token_endpoint: str
    jwks_uri: str
    discovery_url: str


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not on PATH: the oidc-provider interoperability tests need Node 20+"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def _installed_version() -> str | None:
    manifest = TESTBED / "node_modules" / "oidc-provider" / "package.json"
    try:
        return str(json.loads(manifest.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


@pytest.fixture(scope="session")
def node_testbed() -> Path:
    """``node`` with the pinned oidc-provider installed (``npm ci`` once, when missing or stale)."""
    node = _tool("node")
    npm = _tool("npm")
    pinned = json.loads((TESTBED / "package.json").read_text())["dependencies"]["oidc-provider"]
    # Several people and runs share this tree: two concurrent installs would trip over each other.
    lock_path = Path(tempfile.gettempdir()) / "ccflow-oidc-provider-npm.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _installed_version() != pinned:
            has_lock = (TESTBED / "package-lock.json").exists()
            command = [npm, "ci" if has_lock else "install", "--no-audit", "--no-fund"]
            done = subprocess.run(
                command,
                cwd=TESTBED,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT,
                check=False,
            )
            if done.returncode != 0:
                pytest.fail(f"{' '.join(command[1:])} failed in {TESTBED}:\n{done.stderr[-2000:]}")
    return Path(node)


def _testbed_config() -> str:
    return json.dumps(
        {
            "resource": RESOURCE,
            "clients": [
                {
                    "client_id": c.client_id,
                    "client_secret": c.secret,
                    "token_endpoint_auth_method": c.auth_method,
                    "roles": list(c.roles),
                }
                for c in CLIENTS
            ],
        }
    )


def _read_ready_line(process: subprocess.Popen[bytes], log: Path) -> dict[str, Any]:
    assert process.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT
    while (remaining := deadline - time.monotonic()) > 0:
        if process.poll() is not None:
            break
        ready, _, _ = select.select([process.stdout], [], [], min(remaining, 0.5))
        if ready:
            line = process.stdout.readline()
            if line:
                return dict(json.loads(line))
    code = process.poll()
    what = f"exited with code {code}" if code is not None else f"was silent {START_TIMEOUT:.0f} s"
    pytest.fail(f"oidc-provider {what} before reporting its URL:\n{log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def provider(node_testbed: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    """oidc-provider listening on 127.0.0.1 on a free port, stopped when the module ends."""
    log = tmp_path_factory.mktemp("oidc_provider") / "stderr.log"
    env = {**os.environ, "CCFLOW_OIDC_TESTBED": _testbed_config()}
    with log.open("wb") as stderr:
        # stdin stays open while we run: the server exits by itself when it closes.
        process = subprocess.Popen(
            [str(node_testbed), "server.js", "0"],
            cwd=TESTBED,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    try:
        ready = _read_ready_line(process, log)
        yield Provider(
            issuer=ready["issuer"],
            token_endpoint=ready["token_endpoint"],
            jwks_uri=ready["jwks_uri"],
            discovery_url=ready["discovery_url"],
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()


def _claims(token: str, provider: Provider) -> dict[str, Any]:
    """Verify ``token`` against the provider's JWKS with PyJWT, independently of ccflow."""
    keys = jwt.PyJWKSet.from_dict(httpx.get(provider.jwks_uri).json())
    header = jwt.get_unverified_header(token)
    return dict(
        jwt.decode(
            token,
            keys[header["kid"]].key,
            algorithms=["RS256"],
            audience=RESOURCE,
            issuer=provider.issuer,
        )
    )


def test_testbed_issues_rs256_jwt_access_tokens_for_the_default_scope(provider: Provider) -> None:
    # Checks the test bed itself with plain httpx, so a failure below points at ccflow.
    discovery = httpx.get(provider.discovery_url).json()
    response = httpx.post(
        discovery["token_endpoint"],
        data={
            "grant_type": "client_credentials",
            "client_id": CALLER.client_id,
            "client_secret": CALLER.secret,
            "scope": SCOPE,
        },
    )
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    claims = _claims(token, provider)
    assert (claims["iss"], claims["aud"], claims["azp"], claims["roles"]) == (
        provider.issuer,
        RESOURCE,
        CALLER.client_id,
        ["invokeRole"],
    )


def test_testbed_refuses_a_secret_sent_other_than_registered(provider: Provider) -> None:
    # oidc-provider alone accepts either secret method; server.js enforces the registered one,
    # which is what lets the client_secret_basic test below prove the method ccflow used.
    credentials = base64.b64encode(f"{CALLER.client_id}:{CALLER.secret}".encode()).decode()
    response = httpx.post(
        provider.token_endpoint,
        data={"grant_type": "client_credentials", "scope": SCOPE},
        headers={"Authorization": f"Basic {credentials}"},
    )
    assert (response.status_code, response.json()["error"]) == (401, "invalid_client")


def _get_token(provider: Provider, client: Client, secret: str | None = None) -> AccessToken:
    with TokenClient(
        client_id=client.client_id,
        client_secret=client.secret if secret is None else secret,
        token_endpoint=provider.token_endpoint,
        auth_method=client.auth_method,
    ) as token_client:
        return token_client.get_token(SCOPE)


async def _call_api(provider: Provider, token: str) -> httpx.Response:
    """GET a Starlette route behind RequireRole, validating through the provider's discovery."""

    async def whoami(request: Request) -> JSONResponse:
        return JSONResponse({"caller": request.user.client_id})

    validator = TokenValidator(issuer=provider.issuer, audience=RESOURCE)
    app = Starlette(routes=[Route("/whoami", whoami)])
    app.add_middleware(RequireRole("invokeRole", validator=validator))
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://calc.test") as api:
            return await api.get("/whoami", headers={"Authorization": f"Bearer {token}"})
    finally:
        await validator.aclose()


SECRET_METHODS = pytest.mark.parametrize(
    "client", [CALLER, BASIC_CALLER], ids=[CALLER.auth_method, BASIC_CALLER.auth_method]
)


@SECRET_METHODS
def test_token_client_gets_a_token_with_each_secret_method(
    provider: Provider, client: Client
) -> None:
    token = _get_token(provider, client)
    claims = _claims(token.token, provider)
    assert (claims["azp"], claims["aud"], token.token_type.lower()) == (
        client.client_id,
        RESOURCE,
        "bearer",
    )


@SECRET_METHODS
@pytest.mark.anyio
async def test_require_role_accepts_the_token_through_discovery(
    provider: Provider, client: Client
) -> None:
    response = await _call_api(provider, _get_token(provider, client).token)
    assert (response.status_code, response.json()) == (200, {"caller": client.client_id})


@pytest.mark.anyio
async def test_require_role_refuses_a_valid_token_without_the_role(provider: Provider) -> None:
    token = _get_token(provider, READER).token
    assert "roles" not in _claims(token, provider)
    response = await _call_api(provider, token)
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


def test_wrong_secret_gives_a_clear_token_request_error(provider: Provider) -> None:
    wrong = secrets.token_urlsafe(24)
    with pytest.raises(TokenRequestError) as caught:
        _get_token(provider, CALLER, secret=wrong)
    error = caught.value
    assert (error.status_code, error.error) == (401, "invalid_client")
    message = str(error)
    assert CALLER.client_id in message
    assert "secret" in message
    assert wrong not in message
    assert wrong not in repr(error)
