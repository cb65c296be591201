"""Where the repeated-token path's cost goes: how close to bare Starlette a cache hit can get.

Runs, side by side with ``bench/middleware.py``'s driver, in one process:

- bare Starlette: the calc route without authentication (the baseline, 1.00);
- sets user only: a pure ASGI middleware that does nothing but set ``scope["auth"]`` and
  ``scope["user"]`` from a verdict it holds, in front of the calc API's own handler: the floor
  any authentication middleware that fills ``request.user`` stands on;
- calc API, no digest: the real calc API (``RequireRole`` + ``TokenValidator``) whose
  cache lookup (``_probe``, what ``RequireRole`` calls) is replaced by a dict looked up by the
  raw token, i.e. the verified-token cache with a free digest. ccflow does not do this (the
  cache would hold usable tokens); it shows what the rest of the hot path costs;
- calc API, repeated token: the real thing, as in ``bench/middleware.py``.

    .venv/bin/python bench/middleware_floor.py
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import httpx
from middleware import (
    ASGIApp,
    bare_app,
    calc_validator,
    print_vs_bare,
    repeated_token_rounds,
)
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials
from starlette.routing import Route

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
    http = httpx.AsyncClient(transport=authority.transport())
    real, free = calc_validator(authority, http), calc_validator(authority, http)
    token = authority.mint()
    verdict = await real.validate(token)
    await free.validate(token)
    # RequireRole looks a plain TokenValidator's tokens up through _probe (a verdict on a hit):
    # a dict keyed by the raw token stands in for it, a lookup with no digest at all.
    free._probe = {token.encode(): verdict}.get  # type: ignore[method-assign,assignment]

    sets_user = Starlette(routes=[Route("/calc/v1/add/{a}/{b}", add, methods=["GET"])])
    sets_user.add_middleware(SetsUserOnly, verdict=verdict)
    apps: dict[str, ASGIApp] = {
        "bare Starlette": bare_app(),
        "sets user only": sets_user,
        "calc API, no digest": create_app(free),
        "calc API, repeated token": create_app(real),
    }
    results = await repeated_token_rounds(apps, token, REQUESTS)
    await http.aclose()
    print_vs_bare(results, REQUESTS)


if __name__ == "__main__":
    asyncio.run(main())
