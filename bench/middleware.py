"""What protecting an ASGI API costs per request: ccflow's RequireRole against the alternatives.

Every contender is an ASGI app driven in-process by the same minimal loop (a fresh scope per
request, a constant ``receive``, a ``send`` that keeps the status): no sockets, no HTTP client,
so the numbers are the apps' own cost. Keys come from ccflow's local authority, fetched once
before timing; every contender answers ``GET /calc/v1/add/2/3`` with the same JSON.

- bare Starlette: the route with no authentication (the baseline, ratio 1.00);
- calc API, repeated token: ``examples.calc_api`` (RequireRole + TokenValidator), one token;
- calc API, fresh token: the same, a different token on every request (pre-minted);
- naive PyJWT: a pure ASGI middleware calling ``jwt.decode`` with the right key per request;
- fastapi-azure-auth on FastAPI: its bearer dependency, key cache seeded (no HTTP), one token;
- raw RS256 verify: ``cryptography``'s ``public_key.verify`` alone, the floor of any fresh token.

Targets (issue 4): repeated token >= 0.85 of bare; fresh-token cost
``(t_fresh - t_bare) / t_verify`` <= 3. Each contender runs a few rounds of a fixed time
budget; the best round counts (the machine is shared). Runs well under a minute.

    .venv/bin/python bench/middleware.py
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.calc_api.app import create_app

from ccflow import TokenValidator
from ccflow.authority import Authority

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
PATH = "/calc/v1/add/2/3"
ROUNDS = 3
BUDGET = 0.4  # seconds per round per contender


# --- the contenders -----------------------------------------------------------------------


async def bare_add(request: Request) -> JSONResponse:
    a, b = int(request.path_params["a"]), int(request.path_params["b"])
    return JSONResponse({"result": a + b, "caller": None})


def bare_app() -> Starlette:
    return Starlette(routes=[Route("/calc/v1/add/{a}/{b}", bare_add)])


class NaivePyJWT:
    """What a hand-written pure ASGI middleware usually does: jwt.decode on every request."""

    def __init__(self, app: ASGIApp, keys: dict[str, Any], audience: str, issuer: str) -> None:
        self.app, self.keys, self.audience, self.issuer = app, keys, audience, issuer

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        auth = dict(scope["headers"]).get(b"authorization", b"").decode()
        try:
            token = auth.split(" ", 1)[1]
            kid = jwt.get_unverified_header(token)["kid"]
            claims = jwt.decode(
                token,
                self.keys[kid],
                algorithms=["RS256"],
                audience=self.audience,
                issuer=self.issuer,
            )
            if "invokeRole" not in claims.get("roles", []):
                raise PermissionError
        except Exception:
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        scope["user"] = claims
        await self.app(scope, receive, send)


def naive_app(authority: Authority) -> ASGIApp:
    keys = {k["kid"]: jwt.PyJWK(k, "RS256").key for k in authority.jwks()["keys"]}
    api = authority.api("calc-api")
    return NaivePyJWT(bare_app(), keys, api.client_id, authority.issuer)


def fastapi_azure_auth_app(authority: Authority) -> FastAPI:
    from fastapi_azure_auth import SingleTenantAzureAuthorizationCodeBearer

    api = authority.api("calc-api")
    scheme = SingleTenantAzureAuthorizationCodeBearer(
        app_client_id=api.client_id, tenant_id=authority.tenant_id
    )
    # Seed its OpenID configuration and key cache as load_config() would, so it does no HTTP.
    config = scheme.openid_config
    config.authorization_endpoint = f"{authority.host}/{authority.tenant_id}/oauth2/v2.0/authorize"
    config.token_endpoint = authority.token_endpoint
    config.issuer = authority.issuer
    config._load_keys([{"use": "sig", **k} for k in authority.jwks()["keys"]])
    config._config_timestamp = datetime.datetime.now()

    app = FastAPI(openapi_url=None)

    @app.get("/calc/v1/add/{a}/{b}")
    async def add(a: int, b: int, user: Any = Depends(scheme)) -> dict[str, Any]:  # noqa: B008
        if "invokeRole" not in user.roles:
            raise PermissionError
        return {"result": a + b, "caller": user.claims.get("azp")}

    return app


# --- the driver ---------------------------------------------------------------------------


def scopes(headers: Iterator[list[tuple[bytes, bytes]]]) -> Iterator[dict[str, Any]]:
    for h in headers:
        yield {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": PATH,
            "raw_path": PATH.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": h,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }


async def drive(app: ASGIApp, headers: Iterator[list[tuple[bytes, bytes]]], n: int) -> float:
    """Run ``n`` requests; seconds per request. Any non-200 answer aborts the bench."""
    request = {"type": "http.request", "body": b"", "more_body": False}

    async def receive() -> dict[str, Any]:
        return request

    status = [0]

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status[0] = message["status"]

    it = scopes(headers)
    start = time.perf_counter()
    for _ in range(n):
        await app(next(it), receive, send)
        if status[0] != 200:
            raise SystemExit(f"bench contender answered {status[0]}")
    return (time.perf_counter() - start) / n


def repeat(token: str) -> Iterator[list[tuple[bytes, bytes]]]:
    h = [(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {token}".encode())]
    while True:
        yield list(h)


def each(tokens: list[str]) -> Iterator[list[tuple[bytes, bytes]]]:
    for token in tokens:
        yield [(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {token}".encode())]


async def timed(app: ASGIApp, make: Callable[[int], Iterator[list[tuple[bytes, bytes]]]]) -> float:
    """Best seconds per request over ROUNDS rounds of about BUDGET seconds each."""
    await drive(app, make(20), 20)  # warm up: imports, caches, key fetch
    probe = await drive(app, make(50), 50)
    n = max(50, int(BUDGET / probe))
    return min([await drive(app, make(n), n) for _ in range(ROUNDS)])


def raw_verify_cost(authority: Authority, token: str) -> float:
    signing_input, _, signature = token.rpartition(".")
    sig = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    public_key = authority.key(authority.signing_kid).private_key.public_key()
    data = signing_input.encode()
    pad, sha = padding.PKCS1v15(), hashes.SHA256()
    best = float("inf")
    for _ in range(ROUNDS):
        n = 400
        start = time.perf_counter()
        for _ in range(n):
            public_key.verify(sig, data, pad, sha)
        best = min(best, (time.perf_counter() - start) / n)
    return best


async def main() -> None:
    authority = Authority()
    api = authority.api("calc-api")
    client = authority.client("calc-client")
    http = httpx.AsyncClient(transport=authority.transport())
    validator = TokenValidator(
        tenant_id=authority.tenant_id,
        authority_host=authority.host,
        audience=[api.client_id, api.identifier_uri],
        allowed_clients=[client.client_id],
        http_client=http,
    )
    calc = create_app(validator)
    token = authority.mint()

    results: dict[str, float] = {}
    results["bare Starlette"] = await timed(bare_app(), lambda n: repeat(token))
    results["calc API, repeated token"] = await timed(calc, lambda n: repeat(token))

    # Fresh tokens: a distinct token per request, so the verified-token cache never hits.
    probe = await drive(calc, each([authority.mint() for _ in range(50)]), 50)
    n_fresh = max(50, min(1500, int(BUDGET / probe)))
    minted = [authority.mint() for _ in range(n_fresh * ROUNDS)]
    fresh = [minted[i * n_fresh : (i + 1) * n_fresh] for i in range(ROUNDS)]
    results["calc API, fresh token"] = min(
        [await drive(calc, each(batch), n_fresh) for batch in fresh]
    )
    results["naive PyJWT middleware"] = await timed(naive_app(authority), lambda n: repeat(token))
    results["fastapi-azure-auth"] = await timed(
        fastapi_azure_auth_app(authority), lambda n: repeat(token)
    )
    verify = raw_verify_cost(authority, token)
    await validator.aclose()
    await http.aclose()

    bare = results["bare Starlette"]
    print(f"{'contender':<30} {'req/s':>10} {'us/req':>9} {'vs bare':>8}")
    for name, t in results.items():
        print(f"{name:<30} {1 / t:>10,.0f} {t * 1e6:>9.1f} {bare / t:>8.2f}")
    print(f"{'raw RS256 verify':<30} {1 / verify:>10,.0f} {verify * 1e6:>9.1f}")
    print()
    repeated = bare / results["calc API, repeated token"]
    fresh_cost = (results["calc API, fresh token"] - bare) / verify
    naive_cost = (results["naive PyJWT middleware"] - bare) / verify
    print(f"repeated token: {repeated:.2f} of bare Starlette  (target >= 0.85)")
    print(f"fresh-token cost: {fresh_cost:.2f} raw verifies  (target <= 3)")
    print(f"naive PyJWT, same measure: {naive_cost:.2f} raw verifies")
    print(json.dumps({"repeated_ratio": round(repeated, 3), "fresh_cost": round(fresh_cost, 3)}))


if __name__ == "__main__":
    asyncio.run(main())
