"""The calc API: ``GET /calc/v1/add/{a}/{b}`` for callers holding the ``invokeRole`` app role.

Run from the repository root, configured from the environment (see README.md)::

    CCFLOW_TENANT_ID=<tenant> CCFLOW_AUDIENCE=<api client id>,<api App ID URI> \\
    CCFLOW_ALLOWED_CLIENTS=<client app id> uvicorn examples.calc_api.app:app

``GET /healthz`` needs no token. Missing configuration fails at startup, naming the variable
(``RequireRole`` reads the environment then, so importing this module needs none).
"""

from __future__ import annotations

import math
import re

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from ccflow import RequireRole
from ccflow.starlette import TokenUser, Validator

__all__ = ["app", "create_app"]

_INTEGER = re.compile(r"[+-]?[0-9]{1,30}")
# A plain decimal number. float() alone would also take "1_000", " 1" or "1\n" (Python's own
# literal and whitespace rules), which are not numbers in a URL.
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _number(text: str) -> int | float | None:
    if text.isdigit() and text.isascii() and len(text) <= 30:
        return int(text)
    if _INTEGER.fullmatch(text):
        return int(text)
    if _DECIMAL.fullmatch(text) is None:
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def _invalid_number(description: str) -> JSONResponse:
    return JSONResponse(
        {"error": "invalid_number", "error_description": description}, status_code=400
    )


async def add(request: Request) -> JSONResponse:
    """``{"result": a + b, "caller": <azp or appid>}``."""
    a = _number(request.path_params["a"])
    b = _number(request.path_params["b"])
    if a is None or b is None:
        return _invalid_number("a and b must be finite numbers")
    result = a + b
    if isinstance(result, float) and not math.isfinite(result):
        # 1e308 + 1e308 overflows to inf, which JSON cannot carry (it would be a 500).
        return _invalid_number("a + b is not a finite number")
    user: TokenUser = request.user
    return JSONResponse({"result": result, "caller": user.client_id})


async def healthz(request: Request) -> PlainTextResponse:
    """Liveness probe: no token needed."""
    return PlainTextResponse("ok")


def create_app(validator: Validator | None = None) -> Starlette:
    """The calc API; without ``validator``, ``TokenValidator.from_env()`` configures it."""
    app = Starlette(
        routes=[
            Route("/calc/v1/add/{a}/{b}", add, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )
    app.add_middleware(RequireRole("invokeRole", validator=validator, exempt=["/healthz"]))
    return app


app = create_app()
