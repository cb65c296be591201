"""Starlette and plain ASGI: protect an API with bearer access tokens.

Two ways in, one verdict:

``RequireRole``, pure ASGI middleware for a whole app (HTTP and WebSocket)::

    from starlette.applications import Starlette
    from ccflow import RequireRole

    app = Starlette(routes=...)
    app.add_middleware(RequireRole("invokeRole"))          # configured from the environment
    app.add_middleware(RequireRole("invokeRole", validator=validator, exempt=["/healthz"]))

``BearerAuthBackend``, for Starlette's ``AuthenticationMiddleware`` and ``@requires`` per route::

    from starlette.middleware import Middleware
    from starlette.middleware.authentication import AuthenticationMiddleware
    from ccflow.starlette import BearerAuthBackend

    middleware = [
        Middleware(
            AuthenticationMiddleware,
            backend=BearerAuthBackend(validator),
            on_error=BearerAuthBackend.on_error,
        )
    ]

Both set ``scope["user"]`` (a :class:`TokenUser`: client id, tenant id, roles, scopes,
claims) and ``scope["auth"]`` (``AuthCredentials`` whose scopes are the token's roles), so
``request.user.client_id`` and ``@requires("invokeRole")`` work in endpoints.

Delegated (user) tokens: ``RequireScope("Calc.Read")`` checks ``scp``, and
``RequireRole("invokeRole", or_scopes=["Calc.Read"])`` accepts either. Per-route rules that
answer per RFC 6750 (Starlette's ``@requires`` answers a bare 403): :func:`require` on an
endpoint, with ``RequireRole(..., per_route=["/admin/*"])`` leaving those paths' decorated
routes to their own rule (``docs/per-route.md``). Every refusal is logged at INFO on
``ccflow.api`` and given to ``on_refusal``.

Refusals follow RFC 6750 with a JSON body as well:

=================================================  ======  =============================
condition                                          status  ``WWW-Authenticate`` error
=================================================  ======  =============================
no bearer token (or another auth scheme)           401     none (``Bearer realm="..."``)
malformed header, several Authorization headers    400     ``invalid_request``
token fails a check (signature, exp, aud, ...)     401     ``invalid_token`` + which check
caller, tenant, role or scope not allowed          403     ``insufficient_scope`` + ``scope``
no signing keys (cold start; authority down)       503     none; ``Retry-After`` instead
=================================================  ======  =============================

Roles are checked only after the token's signature and claims pass, so a forged token that
also lacks the role is a 401, never a 403. Tokens never reach a log line.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict, TypeVar, Unpack

from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    BaseUser,
    UnauthenticatedUser,
)
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.routing import Match as RouteMatch
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from ccflow._bearer import (
    ANY_VALID_TOKEN,
    AccessRule,
    Match,
    Paths,
    Principal,
    Refusal,
    RefusalHook,
    Rejection,
    RuleOwner,
    Validator,
    ValidatorHolder,
    Verdict,
    authenticate,
    bearer_token,
    checked_hook,
    checked_paths,
    checked_rule,
    checked_validator,
    is_b64token,
    listed,
    refuse,
    rejection_for,
    required_rule,
    rule_repr,
    validator_from_env,
)
from ccflow.errors import ConfigurationError, InvalidRequestError

__all__ = [
    "GUARD_KEY",
    "AccessRule",
    "BearerAuthBackend",
    "BearerAuthenticationError",
    "Principal",
    "Refusal",
    "RefusalHook",
    "Rejection",
    "RequireRole",
    "RequireRoleMiddleware",
    "RequireRoleOptions",
    "RequireScope",
    "RouteGuard",
    "TokenUser",
    "Validator",
    "Verdict",
    "InvalidRequestError",
    "bearer_token",
    "is_b64token",
    "rejection_for",
    "require",
]

logger = logging.getLogger("ccflow.starlette")


class TokenUser(BaseUser):
    """``request.user`` for a caller that presented a valid token.

    ``client_id``, ``tenant_id``, ``roles`` and ``claims`` come from the validated token;
    ``token`` is the validator's verdict itself. ``identity`` and ``display_name`` are the
    client id.
    """

    __slots__ = ("token",)

    def __init__(self, token: Verdict) -> None:
        self.token = token

    @property
    def is_authenticated(self) -> bool:
        """Always ``True``: the token was validated."""
        return True

    @property
    def display_name(self) -> str:
        """The caller's client id."""
        return self.token.client_id or ""

    @property
    def identity(self) -> str:
        """The caller's client id."""
        return self.token.client_id or ""

    @property
    def client_id(self) -> str | None:
        """The caller's client id (``azp`` or ``appid``)."""
        return self.token.client_id

    @property
    def tenant_id(self) -> str | None:
        """The caller's tenant id (``tid``)."""
        return self.token.tenant_id

    @property
    def roles(self) -> tuple[str, ...]:
        """The caller's app roles."""
        return self.token.roles

    @property
    def scopes(self) -> tuple[str, ...]:
        """The caller's delegated scopes (``scp``); ``()`` for an app-only token."""
        return tuple(getattr(self.token, "scopes", ()))

    @property
    def object_id(self) -> str | None:
        """The ``oid`` claim: the signed-in user (delegated) or the caller's service principal."""
        oid = self.token.claims.get("oid")
        return oid if isinstance(oid, str) else None

    @property
    def principal(self) -> Principal:
        """The caller as :class:`ccflow.fastapi.BearerClaims` returns it."""
        return Principal.of(self.token)

    @property
    def claims(self) -> Mapping[str, Any]:
        """Every claim of the validated token."""
        return self.token.claims

    def __repr__(self) -> str:
        return f"TokenUser(client_id={self.client_id!r}, roles={self.roles!r})"


# ---------------------------------------------------------------------------------------------
# RequireRole


class RequireRole(RuleOwner):
    """Require a valid bearer token holding app roles, for every request an ASGI app serves.

    ``RequireRole(...)`` is a middleware factory, so ``app.add_middleware(RequireRole(...))``
    works as written: Starlette calls the instance with the app to wrap when it builds the
    middleware stack, at the app's start-up.

    - ``roles``: one or more app roles; with ``match="any"`` (the default) one of them is
      enough, with ``match="all"`` the caller needs every one. A delegated token's ``roles``
      (app roles assigned to the signed-in user) count too.
    - ``or_scopes``: delegated scopes (``scp``) that do as well as the roles: an API called by
      applications (a role) and on behalf of users (a scope); ``match`` applies to each list.
    - ``validator``: a ``ccflow.TokenValidator`` (or anything with its interface). Without
      one, ``TokenValidator.from_env()`` is built at start-up (not here, so that importing a
      module that declares ``RequireRole("invokeRole")`` needs no configuration): bad
      configuration then fails the start-up with a ``ConfigurationError`` naming the variable,
      and that validator is closed on lifespan shutdown.
    - ``exempt``: paths served without a token, such as health checks; exact paths, or a
      prefix written ``"/health/*"`` (a single string is one path). Paths are matched as the
      app routes them, without the ``root_path`` a ``Mount`` or ``uvicorn --root-path`` adds.
    - ``per_route``: paths (written as ``exempt``) whose routes may carry their own rule,
      :func:`require`, which then replaces this one there; a token, when sent, is still
      validated here. A route there without a rule of its own gets this one: nothing is open
      by omission (``docs/per-route.md``).
    - ``allow_preflight``: let CORS preflights (``OPTIONS`` with ``Origin`` and
      ``Access-Control-Request-Method``) through without a token. Off by default: anyone can
      send those headers. Put Starlette's ``CORSMiddleware`` outside ``RequireRole`` instead
      (add it after), and it answers preflights before they get here.
    - ``on_refusal``: called with a :class:`Refusal` for each refused request (metrics); a
      hook that raises is logged and the refusal sent all the same.

    Lifespan passes through; a WebSocket with a bad token is closed with code 1008 before it
    is accepted (1013, try again later, when no signing keys can be had); any other ASGI
    scope type is refused with a ``RuntimeError``.
    """

    __slots__ = ("allow_preflight", "exempt", "on_refusal", "per_route", "rule", "validator")

    def __init__(
        self,
        *roles: str,
        validator: Validator | None = None,
        match: Match = "any",
        exempt: Iterable[str] = (),
        allow_preflight: bool = False,
        or_scopes: Iterable[str] = (),
        per_route: Iterable[str] = (),
        on_refusal: RefusalHook | None = None,
    ) -> None:
        owner = type(self).__name__  # RequireRole or RequireScope, as errors name it
        self.rule: AccessRule = required_rule(owner, roles, or_scopes, match)
        self.validator = None if validator is None else checked_validator(validator, owner)
        self.exempt: tuple[str, ...] = checked_paths(exempt, "exempt", owner)
        self.per_route: tuple[str, ...] = checked_paths(per_route, "per_route", owner)
        self.allow_preflight = bool(allow_preflight)
        self.on_refusal = checked_hook(on_refusal, owner)

    def __call__(self, app: ASGIApp) -> ASGIApp:
        """Wrap ``app``: what Starlette's ``add_middleware`` and ``Middleware`` call.

        Without a validator, this is when the environment is read. A bad variable gives an
        app that fails the lifespan start-up with the ``ConfigurationError`` (so that a server
        stops, naming the variable) and raises it for any request.
        """
        if self.validator is not None:
            return RequireRoleMiddleware(app, self, self.validator)
        try:
            validator = validator_from_env()
        except ConfigurationError as exc:
            return _FailedStartup(exc)
        return RequireRoleMiddleware(app, self, validator, owns_validator=True)

    def __repr__(self) -> str:
        return rule_repr(self, self.rule)


class RequireRoleOptions(TypedDict, total=False):
    """The keyword options :class:`RequireScope` takes and hands to :class:`RequireRole`, each
    with :class:`RequireRole`'s meaning and default:

    - ``validator``: a ``ccflow.TokenValidator`` (default: ``TokenValidator.from_env()``, built
      at start-up);
    - ``match``: ``"any"`` (the default) or ``"all"`` of the scopes, and of ``or_roles``;
    - ``exempt``: paths served without a token;
    - ``allow_preflight``: let CORS preflights through without a token (default off);
    - ``per_route``: paths whose routes may carry their own rule, :func:`require`;
    - ``on_refusal``: called with a :class:`Refusal` for each refused request.
    """

    validator: Validator | None
    match: Match
    exempt: Iterable[str]
    allow_preflight: bool
    per_route: Iterable[str]
    on_refusal: RefusalHook | None


class RequireScope(RequireRole):
    """Require a valid delegated (user) token holding scopes (``scp``), for every request.

    ``RequireScope("Calc.Read")``: the same arguments as :class:`RequireRole`, with scopes in
    place of roles (``or_roles`` for app roles that do as well; the other options:
    :class:`RequireRoleOptions`). An app-only token has no ``scp`` and never satisfies a
    scope. The 403 names the scopes in ``WWW-Authenticate``'s ``scope`` attribute.
    """

    __slots__ = ()

    def __init__(
        self, *scopes: str, or_roles: Iterable[str] = (), **options: Unpack[RequireRoleOptions]
    ) -> None:
        if not scopes:
            raise ConfigurationError("RequireScope needs at least one scope", setting="scopes")
        roles = listed(or_roles, "RequireScope", "or_roles")
        super().__init__(*roles, or_scopes=scopes, **options)  # type: ignore[arg-type]  # the rule checks them


def _route_path(scope: Scope) -> str:
    """The path as the app routes it: without the root path a Mount or ``--root-path`` adds."""
    # Match the path without the root path, as Starlette's router does: see docs/api.md.
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        rest = path[len(root_path) :]
        if not rest or rest[0] == "/":
            path = rest or "/"
    return path


@dataclass(frozen=True, slots=True)
class RouteGuard:
    """What per-route rules (:func:`require`) need from the middleware or backend in front:
    the realm of the RFC 6750 answers and the ``on_refusal`` hook. Put in
    ``scope[GUARD_KEY]`` by :class:`RequireRole` and :class:`BearerAuthBackend`."""

    realm: str
    on_refusal: RefusalHook | None = None


GUARD_KEY = "ccflow.guard"
"""The ASGI scope key under which the middleware hands a :class:`RouteGuard` to endpoints."""


class RequireRoleMiddleware:
    """The ASGI app :class:`RequireRole` builds around another; keeps no per-request state."""

    __slots__ = (
        "allow_preflight",
        "app",
        "exempt",
        "guard",
        "owns_validator",
        "per_route",
        "rule",
        "validator",
    )

    def __init__(
        self,
        app: ASGIApp,
        config: RequireRole,
        validator: Validator,
        *,
        owns_validator: bool = False,
    ) -> None:
        self.app = app
        self.rule = config.rule
        self.allow_preflight = config.allow_preflight
        self.exempt = Paths(config.exempt)
        self.per_route = Paths(config.per_route)
        self.validator = validator
        self.guard = RouteGuard(validator.realm, config.on_refusal)
        self.owns_validator = owns_validator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the request's token, then call the wrapped app or send the refusal."""
        kind = scope["type"]
        if kind == "lifespan":
            await self.app(scope, receive, self._closing(send) if self.owns_validator else send)
            return
        if kind != "http" and kind != "websocket":
            # Fail closed: no server sends other types, and the app must not get one unchecked.
            raise RuntimeError(f"RequireRole cannot check an ASGI {kind!r} scope; refused")
        path = _route_path(scope)
        scope[GUARD_KEY] = self.guard
        if path in self.exempt or (self.allow_preflight and _is_preflight(scope)):
            scope.setdefault("auth", AuthCredentials())
            scope.setdefault("user", UnauthenticatedUser())
            await self.app(scope, receive, send)
            return
        own_rule = path in self.per_route and _route_rule(scope) is not None
        rule = ANY_VALID_TOKEN if own_rule else self.rule  # a route's own rule checks later
        try:
            verdict = await authenticate(scope["headers"], self.validator, rule)
        except Exception as exc:  # every refusal, and validator bugs: never a 500
            await self._refuse(exc, scope, receive, send)
            return
        if verdict is not None:
            scope["auth"], scope["user"] = AuthCredentials(verdict.roles), TokenUser(verdict)
        elif own_rule:  # no token: the route's own rule refuses it, or lets it in
            scope["auth"], scope["user"] = AuthCredentials(), UnauthenticatedUser()
        else:
            await self._refuse(None, scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _refuse(
        self, exc: BaseException | None, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Send the RFC 6750 answer for ``exc`` (``None``: no token), logged and reported."""
        rejection = refuse(
            exc,
            self.validator.realm,
            method=scope.get("method", "WEBSOCKET"),
            path=scope.get("path", ""),
            hook=self.guard.on_refusal,
        )
        await rejection(scope, receive, send)

    def _closing(self, send: Send) -> Send:
        """``send``, closing the owned validator once the app's shutdown ends."""
        validator = self.validator

        async def closing_send(message: Message) -> None:
            # Closed however the app's own shutdown went: a failed one ends the server too.
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                try:
                    await validator.aclose()
                except Exception as exc:  # shutdown must complete regardless
                    logger.warning("closing the token validator failed (%s)", type(exc).__name__)
            await send(message)

        return closing_send


class _FailedStartup:
    """Stands for the app when the validator's configuration failed: no request gets through."""

    __slots__ = ("error",)

    def __init__(self, error: ConfigurationError) -> None:
        self.error = error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Fail the lifespan start-up with the error (a server stops), and raise it."""
        # A server running lifespan "auto" takes a bare exception for "lifespan unsupported"
        # and goes on serving; lifespan.startup.failed stops it, printing the message.
        if scope["type"] == "lifespan" and (await receive())["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.failed", "message": str(self.error)})
        raise self.error.with_traceback(None)


def _is_preflight(scope: Scope) -> bool:
    """Whether the request is a CORS preflight: ``OPTIONS`` with Origin and the method asked."""
    # Without Origin it is no preflight (Fetch standard), and needs a token like any request.
    if scope["type"] != "http" or scope["method"] != "OPTIONS":
        return False
    names = {name.lower() for name, _ in scope["headers"]}
    return b"origin" in names and b"access-control-request-method" in names


# ---------------------------------------------------------------------------------------------
# Per-route rules

_RULE_ATTRIBUTE = "__ccflow_rule__"
_Endpoint = TypeVar("_Endpoint", bound=Callable[..., Any])


def require(
    *,
    roles: Iterable[str] = (),
    scopes: Iterable[str] = (),
    match: Match = "any",
) -> Callable[[_Endpoint], _Endpoint]:
    """A per-route rule for a Starlette endpoint, answered per RFC 6750.

    ::

        @require(roles=["adminRole"])
        async def purge(request): ...

        class Reports(HTTPEndpoint):
            @require(scopes=["Reports.Read"], roles=["reportReader"])
            def get(self, request): ...

    Any-of (or ``match="all"``) ``roles``, else ``scopes``, as :class:`RequireRole`; nothing
    named: any valid token. For functions and ``HTTPEndpoint`` methods, sync and async, and
    WebSocket endpoints (refused before accept with 1008). It reads the caller that
    :class:`RequireRole` (on a ``per_route`` path, where this rule replaces the middleware's)
    or :class:`BearerAuthBackend` put in the scope: no token is a 401, a caller without the
    role or scope a 403 with the ``scope`` attribute, each logged and reported like the
    middleware's. Without either in front, the request fails with a ``RuntimeError`` (a 500):
    the rule cannot be checked, so nothing is served.
    """
    rule = checked_rule("require", listed(roles, "require", "roles"), scopes, match)

    def decorate(endpoint: _Endpoint) -> _Endpoint:
        if inspect.iscoroutinefunction(endpoint):

            @functools.wraps(endpoint)
            async def checked_async(*args: Any, **kwargs: Any) -> Any:
                conn, refusal = _judge(rule, args)
                if refusal is None:
                    return await endpoint(*args, **kwargs)
                if isinstance(conn, WebSocket):
                    await refusal.send_websocket(conn.receive, conn.send)
                    return None
                return refusal.response()

            wrapped: Any = checked_async
        else:

            @functools.wraps(endpoint)
            def checked_sync(*args: Any, **kwargs: Any) -> Any:
                _, refusal = _judge(rule, args)
                return endpoint(*args, **kwargs) if refusal is None else refusal.response()

            wrapped = checked_sync
        setattr(wrapped, _RULE_ATTRIBUTE, rule)
        return wrapped  # type: ignore[no-any-return]

    return decorate


def _judge(rule: AccessRule, args: tuple[Any, ...]) -> tuple[HTTPConnection, Rejection | None]:
    """The request among an endpoint's arguments, and the refusal of ``rule`` (``None``: pass)."""
    conn = next((a for a in args if isinstance(a, HTTPConnection)), None)
    if conn is None:
        raise RuntimeError("@require: the endpoint was called without its request")
    guard = conn.scope.get(GUARD_KEY)
    if not isinstance(guard, RouteGuard):
        # Fail closed: no ccflow middleware or backend authenticated this request.
        raise RuntimeError(
            "@require needs RequireRole (per_route=...) or BearerAuthBackend in front; "
            "the request was refused"
        )
    user = conn.scope.get("user")
    verdict = user.token if isinstance(user, TokenUser) else None
    exc: Exception | None = None  # None: no token
    if verdict is not None:
        try:
            rule.check(verdict)
            return conn, None
        except Exception as error:  # InsufficientScopeError, or a verdict without scopes
            exc = error
    method = conn.scope.get("method", "WEBSOCKET")
    rejection = refuse(
        exc, guard.realm, method=method, path=conn.url.path, hook=guard.on_refusal, verdict=verdict
    )
    return conn, rejection


def _route_rule(scope: Scope) -> AccessRule | None:
    """The :func:`require` rule of the endpoint the app would route ``scope`` to, if any.

    Looked up in the Starlette app of ``scope["app"]`` as its router matches (following
    ``Mount`` and ``Host``); an ``HTTPEndpoint`` class by the method's handler. ``None`` when
    the endpoint has no rule or cannot be found: the middleware's rule then applies.
    """
    routes = getattr(scope.get("app"), "routes", None)
    endpoint = _endpoint(routes, dict(scope), depth=0) if routes else None
    if inspect.isclass(endpoint):
        method = str(scope.get("method", "")).lower()
        if method == "head" and not hasattr(endpoint, "head"):
            method = "get"
        endpoint = getattr(endpoint, method, None)
    rule = getattr(endpoint, _RULE_ATTRIBUTE, None)
    return rule if isinstance(rule, AccessRule) else None


def _endpoint(routes: Iterable[Any], scope: dict[str, Any], depth: int) -> Any:
    """The endpoint of the first route that fully matches ``scope``, recursing into mounts."""
    if depth > 8:  # mounts within mounts this deep are no app's routing
        return None
    for route in routes:
        try:
            match, child = route.matches(scope)
        except Exception:  # a route that cannot judge: no endpoint, the middleware's rule
            return None
        if match is RouteMatch.FULL:
            inner = getattr(route, "routes", None)
            if inner is not None and not hasattr(route, "endpoint"):
                return _endpoint(inner, {**scope, **child}, depth + 1)
            return child.get("endpoint")
    return None


# ---------------------------------------------------------------------------------------------
# AuthenticationBackend


class BearerAuthenticationError(AuthenticationError):
    """Raised by :class:`BearerAuthBackend`; ``rejection`` is the RFC 6750 answer to send."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.description)
        self.rejection = rejection


class BearerAuthBackend(ValidatorHolder, AuthenticationBackend):
    """A Starlette ``AuthenticationBackend`` over a token validator.

    A good token gives ``request.user`` (:class:`TokenUser`) and ``request.auth.scopes`` (its
    roles), so ``@requires("invokeRole")`` guards each route, or, answering per RFC 6750,
    :func:`require`; no token gives Starlette's unauthenticated user. Pass
    ``on_error=BearerAuthBackend.on_error`` to ``AuthenticationMiddleware`` to answer bad
    tokens per RFC 6750 (401/403/400/503) instead of Starlette's plain 400. Without
    ``validator``, ``TokenValidator.from_env()`` is built on first use (a bad variable fails
    that request with the ``ConfigurationError``), and :meth:`aclose` closes it (call it in the
    app's lifespan; Starlette's ``AuthenticationMiddleware`` does not). ``on_refusal`` is
    called with a :class:`Refusal` for each bad token here and each refusal of :func:`require`.
    """

    def __init__(
        self, validator: Validator | None = None, *, on_refusal: RefusalHook | None = None
    ) -> None:
        super().__init__(validator, "BearerAuthBackend")
        self.on_refusal = checked_hook(on_refusal, "BearerAuthBackend")

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        """Validate the request's bearer token, if it has one."""
        validator = self.validator  # a configuration error is the app's, not a refusal
        conn.scope[GUARD_KEY] = RouteGuard(validator.realm, self.on_refusal)
        try:
            verdict = await authenticate(conn.scope["headers"], validator)
        except Exception as exc:
            rejection = refuse(
                exc,
                validator.realm,
                method=conn.scope.get("method", "WEBSOCKET"),
                path=conn.url.path,
                hook=self.on_refusal,
            )
            raise BearerAuthenticationError(rejection) from None
        if verdict is None:
            return None
        return AuthCredentials(verdict.roles), TokenUser(verdict)

    @staticmethod
    def on_error(conn: HTTPConnection, exc: Exception) -> Response:
        """The RFC 6750 response for an ``AuthenticationMiddleware`` error."""
        if isinstance(exc, BearerAuthenticationError):
            return exc.rejection.response()
        return rejection_for(
            InvalidRequestError(str(exc) or "authentication failed"), ""
        ).response()
