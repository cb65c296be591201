"""Where the repeated-token path's cost goes: how close to bare Starlette a cache hit can get.

Runs, side by side with ``bench/middleware.py``'s driver, in one process:

- bare Starlette: the calc route without authentication (the baseline, 1.00);
- sets user only: a pure ASGI middleware that does nothing but set ``scope["auth"]`` and
  ``scope["user"]`` from a verdict it holds, in front of the calc API's own handler: the floor
  any authentication middleware that fills ``request.user`` stands on;
- calc API, no digest: the real calc API (``RequireRole`` + ``TokenValidator``) whose
  ``cached()`` is replaced by a dict looked up by the raw token, i.e. the verified-token cache
  with a free digest. ccflow does not do this (the cache would hold usable tokens); it shows
  what the rest of the hot path costs;
- calc API, repeated token: the real thing, as in ``bench/middleware.py``.

    .venv/bin/python bench/middleware_floor.py
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import httpx
from middleware import ROUNDS, ASGIApp, bare_app, drive, repeat
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials
from starlette.routing import Route

from ccflow import TokenValidator
from ccflow.authority import Authority
from ccflow.starlette import TokenUser

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.calc_api.app import add, create_app

REQUESTS = 3000  # per round per contender


class SetsUserOnly:
    """Sets ``request.auth`` and ``request.user`` from a fixed verdict; checks nothing."""

    def __init__(self, app: ASGIApp, verdict: Any) -> None:
        self.app = app
        self.verdict = verdict

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["auth"] = AuthCredentials(self.verdict.roles)
        scope["user"] = TokenUser(self.verdict)
        await self.app(scope, receive, send)


async def main() -> None:
    authority = Authority()
    api = authority.api("calc-api")
    client = authority.client("calc-client")
    http = httpx.AsyncClient(transport=authority.transport())

    def validator() -> TokenValidator:
        return TokenValidator(
            tenant_id=authority.tenant_id,
            authority_host=authority.host,
            audience=[api.client_id, api.identifier_uri],
            allowed_clients=[client.client_id],
            http_client=http,
        )

    real, free = validator(), validator()
    token = authority.mint()
    verdict = await real.validate(token)
    await free.validate(token)
    free.cached = {token.encode(): verdict}.get  # type: ignore[method-assign,assignment]

    sets_user = Starlette(routes=[Route("/calc/v1/add/{a}/{b}", add, methods=["GET"])])
    sets_user.add_middleware(SetsUserOnly, verdict=verdict)
    apps: dict[str, ASGIApp] = {
        "bare Starlette": bare_app(),
        "sets user only": sets_user,
        "calc API, no digest": create_app(free),
        "calc API, repeated token": create_app(real),
    }
    for app in apps.values():
        await drive(app, repeat(token, 200))  # warm up
    batches = {name: [repeat(token, REQUESTS) for _ in range(ROUNDS)] for name in apps}
    results = {name: float("inf") for name in apps}
    for round_ in range(ROUNDS):
        for name, app in apps.items():
            results[name] = min(results[name], await drive(app, batches[name][round_]))
    await http.aclose()

    bare = results["bare Starlette"]
    print(f"best of {ROUNDS} interleaved rounds of {REQUESTS} requests, in-process ASGI")
    print(f"{'contender':<30} {'us/req':>9} {'vs bare':>8}")
    for name, t in results.items():
        print(f"{name:<30} {t * 1e6:>9.1f} {bare / t:>8.2f}")


if __name__ == "__main__":
    asyncio.run(main())
