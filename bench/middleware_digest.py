"""What a per-request digest costs in place: the ceiling for the repeated-token target.

The verified-token cache is keyed by a digest of the token, so a cache hit hashes the token on
every request. This bench builds the thinnest middleware that could serve such a hit, with
nothing else in it: one pass over the headers for ``Bearer <token>``, one digest of the whole
header value (no slicing), one dict lookup, and ``request.auth``/``request.user`` objects built
once and reused (no expiry, role or duplicate-header checks, none of which ccflow may skip). It
runs it with no digest at all (the dict keyed by the header bytes themselves, which would keep
usable tokens in memory), with SHA-256 and with BLAKE2b, beside bare Starlette and the real
calc API, all driven by ``bench/middleware.py``'s in-process loop.

If even "thinnest, BLAKE2b" stays under 0.85 of bare Starlette, no middleware that hashes
each request with hashlib can meet the target on that machine; the gap between "no digest"
and the hashed rows is the digest's own cost there (hashlib's per-call setup weighs more in
a real request than in a tight loop, where it looks like 1-2 us).

    .venv/bin/python bench/middleware_digest.py
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
from collections.abc import Callable
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

REQUESTS = 2000  # per round per contender
Key = Callable[[bytes], object]


class Thinnest:
    """Serves a known ``Authorization`` header from a dict keyed by ``key(header value)``."""

    def __init__(self, app: ASGIApp, table: dict[object, tuple[Any, Any]], key: Key) -> None:
        self.app = app
        self.get = table.get
        self.key = key

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        value = None
        for name, raw in scope["headers"]:
            if name == b"authorization":
                value = raw
        hit = self.get(self.key(value)) if value is not None else None
        if hit is None:
            raise SystemExit("bench: the thinnest middleware missed")
        scope["auth"], scope["user"] = hit
        await self.app(scope, receive, send)


def thinnest_app(header: bytes, verdict: Any, key: Key) -> Starlette:
    app = Starlette(routes=[Route("/calc/v1/add/{a}/{b}", add, methods=["GET"])])
    objects = (AuthCredentials(verdict.roles), TokenUser(verdict))
    app.add_middleware(Thinnest, table={key(header): objects}, key=key)
    return app


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _blake2b(data: bytes) -> bytes:
    return hashlib.blake2b(data).digest()


def _itself(data: bytes) -> bytes:
    return data


async def main() -> None:
    authority = Authority()
    http = httpx.AsyncClient(transport=authority.transport())
    validator = calc_validator(authority, http)
    token = authority.mint()
    verdict = await validator.validate(token)
    header = f"Bearer {token}".encode()
    apps: dict[str, ASGIApp] = {
        "bare Starlette": bare_app(),
        "thinnest, no digest": thinnest_app(header, verdict, _itself),
        "thinnest, SHA-256": thinnest_app(header, verdict, _sha256),
        "thinnest, BLAKE2b": thinnest_app(header, verdict, _blake2b),
        "calc API, repeated token": create_app(validator),
    }
    results = await repeated_token_rounds(apps, token, REQUESTS)
    await http.aclose()
    print_vs_bare(results, REQUESTS)


if __name__ == "__main__":
    asyncio.run(main())
