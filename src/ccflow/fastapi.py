"""FastAPI: a dependency that requires a valid bearer token and returns its claims.

Needs the ``fastapi`` extra (``pip install 'ccflow-oauth[fastapi]'``); ``ccflow.starlette``
never imports FastAPI. The dependency declares an HTTP bearer security scheme, so the OpenAPI
document (and Swagger UI's "Authorize" button) shows the route as protected::

    from typing import Annotated, Any
    from collections.abc import Mapping
    from fastapi import Depends, FastAPI
    from ccflow.fastapi import BearerClaims

    app = FastAPI()
    invoker = BearerClaims("invokeRole")                 # TokenValidator.from_env()

    @app.get("/calc/v1/add/{a}/{b}")
    async def add(a: int, b: int, claims: Annotated[Mapping[str, Any], Depends(invoker)]):
        return {"result": a + b, "caller": claims.get("azp") or claims.get("appid")}

A dependency built from the environment owns its validator's HTTP client; close it when
the app stops, in the app's lifespan::

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await invoker.aclose()

Refusals are ``HTTPException`` s with the RFC 6750 status and ``WWW-Authenticate`` header of
:mod:`ccflow.starlette` (401, 403, 400, 503 with ``Retry-After``) and a JSON ``detail``; on a
WebSocket route, ``WebSocketException`` s closing the handshake with 1008 (1013 for the 503). The
request's ``scope["user"]`` and ``scope["auth"]`` are set as ``RequireRole`` sets them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import HTTPException, WebSocketException
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security import SecurityScopes
from fastapi.security.base import SecurityBase
from starlette.authentication import AuthCredentials
from starlette.requests import HTTPConnection

from ccflow._bearer import (
    Match,
    Rejection,
    Validator,
    ValidatorHolder,
    authenticate,
    checked_roles,
    rejection_for,
)
from ccflow.starlette import TokenUser

__all__ = ["BearerClaims"]

_NO_SCOPES = SecurityScopes()  # called directly, or through Depends(): no scopes


class BearerClaims(ValidatorHolder, SecurityBase):
    """A FastAPI dependency: validate the bearer token, check roles, return the claims.

    ``BearerClaims()`` accepts any valid token; ``BearerClaims("invokeRole", "adminRole")``
    also needs one of the roles (``match="all"``: every one); through
    ``Security(dependency, scopes=["invokeRole"])``, a route adds roles it needs, all of them.
    Without ``validator``, ``TokenValidator.from_env()`` is built on first use (not here, so
    that importing the module needs no configuration; a bad variable fails that request with
    the ``ConfigurationError`` naming it), and :meth:`aclose` closes it. ``scheme_name`` is the
    security scheme's name in the OpenAPI document.
    """

    def __init__(
        self,
        *roles: str,
        validator: Validator | None = None,
        match: Match = "any",
        scheme_name: str = "bearerAuth",
        description: str | None = "An OAuth 2.0 access token (client credentials).",
    ) -> None:
        self.roles: tuple[str, ...] = checked_roles("BearerClaims", roles, match)
        self.model = HTTPBearerModel(bearerFormat="JWT", description=description)
        self.scheme_name = scheme_name
        self.match: Match = match
        ValidatorHolder.__init__(self, validator, "BearerClaims")

    async def __call__(
        self, request: HTTPConnection, security_scopes: SecurityScopes = _NO_SCOPES
    ) -> Mapping[str, Any]:
        """Validate the request's token; raise ``HTTPException`` with the RFC 6750 answer.

        Used as ``Security(dependency, scopes=[...])``, the scopes are roles the token must
        hold, every one of them (FastAPI's convention), on top of the dependency's own roles.

        On a WebSocket route, a refusal is a ``WebSocketException`` instead: the handshake is
        refused with close code 1008 (1013, try again later, when no signing keys can be had),
        as ``RequireRole`` does.
        """
        validator = self.validator  # a configuration error is the app's, not a refusal
        try:
            verdict = await authenticate(
                request.scope["headers"], validator, self.roles, match=self.match
            )
            if verdict is not None and security_scopes.scopes:
                verdict.require_roles(security_scopes.scopes, match="all")
        except Exception as exc:
            raise _refusal(rejection_for(exc, validator.realm), request) from None
        if verdict is None:
            raise _refusal(rejection_for(None, validator.realm), request)
        request.scope["auth"] = AuthCredentials(verdict.roles)
        request.scope["user"] = TokenUser(verdict)
        return verdict.claims


def _refusal(rejection: Rejection, request: HTTPConnection) -> HTTPException | WebSocketException:
    """The exception FastAPI turns into ``rejection``: HTTP, or a refused WebSocket handshake."""
    if request.scope["type"] == "websocket":
        return WebSocketException(*rejection.websocket_close)
    return HTTPException(rejection.status, detail=rejection.description, headers=rejection.headers)
