"""FastAPI: a dependency that requires a valid bearer token and returns the caller.

Needs the ``fastapi`` extra (``pip install 'ccflow-oauth[fastapi]'``); ``ccflow.starlette`` never
imports FastAPI. The dependency returns a :class:`Principal` (client id, tenant id, roles,
scopes, object id, claims; also a read-only mapping of the claims) and declares a security
scheme, so the OpenAPI document (and Swagger UI's "Authorize" button) shows the route as
protected: OAuth 2.0 client credentials at the token endpoint of ``CCFLOW_TENANT_ID`` on
``AZURE_AUTHORITY_HOST`` (or ``token_url=``), else plain HTTP bearer::

    from typing import Annotated
    from fastapi import Depends, FastAPI
    from ccflow.fastapi import BearerClaims, Principal

    app = FastAPI()
    invoker = BearerClaims("invokeRole", or_scopes=["Calc.Read"])   # TokenValidator.from_env()

    @app.get("/calc/v1/add/{a}/{b}")
    async def add(a: int, b: int, caller: Annotated[Principal, Depends(invoker)]):
        return {"result": a + b, "caller": caller.client_id}

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

import os
from collections.abc import Iterable, Mapping
from typing import Literal

from fastapi import HTTPException, WebSocketException
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.openapi.models import OAuth2 as OAuth2Model
from fastapi.openapi.models import OAuthFlowClientCredentials, OAuthFlows
from fastapi.openapi.models import SecurityBase as SecuritySchemeModel
from fastapi.security import SecurityScopes
from fastapi.security.base import SecurityBase
from starlette.authentication import AuthCredentials
from starlette.requests import HTTPConnection

from ccflow._bearer import (
    AccessRule,
    Match,
    Principal,
    Refusal,
    RefusalHook,
    Rejection,
    RuleOwner,
    Validator,
    ValidatorHolder,
    authenticate,
    check_rule,
    checked_hook,
    checked_rule,
    refuse,
)
from ccflow._config import authority_host_from
from ccflow._core.urls import token_endpoint_for
from ccflow.starlette import GUARD_KEY, RouteGuard, TokenUser

__all__ = ["BearerClaims", "Principal", "Refusal", "token_url_from_env"]

_NO_SCOPES = SecurityScopes()  # called directly, or through Depends(): no scopes


class BearerClaims(RuleOwner, ValidatorHolder, SecurityBase):
    """A FastAPI dependency: validate the bearer token, check the rule, return the caller.

    ``BearerClaims()`` accepts any valid token; ``BearerClaims("invokeRole", "adminRole")``
    also needs one of the roles (``match="all"``: every one), ``or_scopes=["Calc.Read"]`` lets
    a delegated token with the scope in instead, and ``BearerClaims(scopes=["Calc.Read"])``
    asks for scopes alone; through ``Security(dependency, scopes=["invokeRole"])``, a route
    adds roles it needs, all of them. Without ``validator``, ``TokenValidator.from_env()`` is
    built on first use (not here, so that importing the module needs no configuration; a bad
    variable fails that request with the ``ConfigurationError`` naming it), and :meth:`aclose`
    closes it. ``scheme_name`` is the security scheme's name in the OpenAPI document;
    ``token_url`` its client-credentials token endpoint (default: :func:`token_url_from_env`;
    ``False``: a plain HTTP bearer scheme); ``on_refusal`` is called with each
    :class:`Refusal`.
    """

    def __init__(
        self,
        *roles: str,
        validator: Validator | None = None,
        match: Match = "any",
        scheme_name: str = "bearerAuth",
        description: str | None = "An OAuth 2.0 access token (client credentials).",
        or_scopes: Iterable[str] = (),
        scopes: Iterable[str] = (),
        token_url: str | Literal[False] | None = None,
        on_refusal: RefusalHook | None = None,
    ) -> None:
        listed = (*_listed(or_scopes), *_listed(scopes))
        self.rule: AccessRule = checked_rule("BearerClaims", roles, listed, match)
        self.scheme_name = scheme_name
        self.description = description
        self.token_url = token_url
        self.on_refusal = checked_hook(on_refusal, "BearerClaims")
        ValidatorHolder.__init__(self, validator, "BearerClaims")

    @property
    def model(self) -> SecuritySchemeModel:  # type: ignore[override]
        """The OpenAPI security scheme, decided when FastAPI writes the document."""
        url = token_url_from_env() if self.token_url is None else self.token_url
        if not url:
            return HTTPBearerModel(bearerFormat="JWT", description=self.description)
        flow = OAuthFlowClientCredentials(tokenUrl=url, scopes=_default_scopes())
        return OAuth2Model(flows=OAuthFlows(clientCredentials=flow), description=self.description)

    async def __call__(
        self, request: HTTPConnection, security_scopes: SecurityScopes = _NO_SCOPES
    ) -> Principal:
        """Validate the request's token; raise ``HTTPException`` with the RFC 6750 answer.

        Used as ``Security(dependency, scopes=[...])``, the scopes are roles the token must
        hold, every one of them (FastAPI's convention), on top of the dependency's own rule.

        On a WebSocket route, a refusal is a ``WebSocketException`` instead: the handshake is
        refused with close code 1008 (1013, try again later, when no signing keys can be had),
        as ``RequireRole`` does.
        """
        validator = self.validator  # a configuration error is the app's, not a refusal
        try:
            verdict = await authenticate(request.scope["headers"], validator, self.rule)
            if verdict is not None and security_scopes.scopes:
                check_rule(AccessRule(tuple(security_scopes.scopes), match="all"), verdict)
        except Exception as exc:
            raise self._refused(exc, request, validator.realm) from None
        if verdict is None:
            raise self._refused(None, request, validator.realm)
        request.scope["auth"] = AuthCredentials(verdict.roles)
        request.scope["user"] = TokenUser(verdict)
        request.scope[GUARD_KEY] = RouteGuard(validator.realm, self.on_refusal)
        return Principal.of(verdict)

    def _refused(
        self, exc: BaseException | None, request: HTTPConnection, realm: str
    ) -> HTTPException | WebSocketException:
        """The refusal of ``exc`` (``None``: no token), logged and reported."""
        rejection = refuse(
            exc,
            realm,
            method=request.scope.get("method", "WEBSOCKET"),
            path=request.url.path,
            hook=self.on_refusal,
        )
        return _refusal(rejection, request)


def token_url_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The v2 token endpoint of ``CCFLOW_TENANT_ID`` (else ``AZURE_TENANT_ID``) on
    ``AZURE_AUTHORITY_HOST`` (else the public cloud), as ``TokenValidator.from_env()`` reads
    them; ``None`` without a tenant (or with ``CCFLOW_ISSUER``: a generic OIDC server)."""
    env = os.environ if environ is None else environ
    tenant = (env.get("CCFLOW_TENANT_ID") or env.get("AZURE_TENANT_ID") or "").strip()
    if not tenant or env.get("CCFLOW_ISSUER", "").strip():
        return None
    try:
        return token_endpoint_for(authority_host_from(None, env)[0], tenant)
    except Exception:  # a bad variable is the validator's to report, on first use
        return None


def _default_scopes() -> dict[str, str]:
    """The client-credentials scope Swagger UI offers: ``<App ID URI>/.default``."""
    audiences = os.environ.get("CCFLOW_AUDIENCE", "").split(",")
    uri = next((a.strip() for a in audiences if "://" in a), None)
    if uri is None and audiences[0].strip():
        uri = f"api://{audiences[0].strip()}"
    return {f"{uri}/.default": "every app role granted to the client"} if uri else {}


def _listed(values: object) -> tuple[object, ...]:
    """A list argument as a tuple (a string is one value)."""
    if isinstance(values, str):
        return (values,)
    return tuple(values) if isinstance(values, Iterable) else (values,)


def _refusal(rejection: Rejection, request: HTTPConnection) -> HTTPException | WebSocketException:
    """The exception FastAPI turns into ``rejection``: HTTP, or a refused WebSocket handshake."""
    if request.scope["type"] == "websocket":
        return WebSocketException(*rejection.websocket_close)
    return HTTPException(rejection.status, detail=rejection.description, headers=rejection.headers)
