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

Both set ``scope["user"]`` (a :class:`TokenUser`: client id, tenant id, roles, claims) and
``scope["auth"]`` (``AuthCredentials`` whose scopes are the token's roles), so
``request.user.client_id`` and ``@requires("invokeRole")`` work in endpoints.

Refusals follow RFC 6750 with a JSON body as well:

=================================================  ======  =============================
condition                                          status  ``WWW-Authenticate`` error
=================================================  ======  =============================
no bearer token (or another auth scheme)           401     none (``Bearer realm="..."``)
malformed header, several Authorization headers    400     ``invalid_request``
token fails a check (signature, exp, aud, ...)     401     ``invalid_token`` + which check
caller, tenant or role not allowed                 403     ``insufficient_scope``
no signing keys (cold start; authority down)       503     none; ``Retry-After`` instead
=================================================  ======  =============================

Roles are checked only after the token's signature and claims pass, so a forged token that
also lacks the role is a 401, never a 403. Tokens never reach a log line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    BaseUser,
    UnauthenticatedUser,
)
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ccflow._bearer import (
    Match,
    Rejection,
    Validator,
    ValidatorHolder,
    Verdict,
    authenticate,
    bearer_token,
    checked_roles,
    checked_validator,
    is_b64token,
    rejection_for,
    validator_from_env,
)
from ccflow.errors import ConfigurationError, InvalidRequestError

__all__ = [
    "BearerAuthBackend",
    "BearerAuthenticationError",
    "Rejection",
    "RequireRole",
    "RequireRoleMiddleware",
    "TokenUser",
    "Validator",
    "Verdict",
    "InvalidRequestError",
    "bearer_token",
    "is_b64token",
    "rejection_for",
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
    def claims(self) -> Mapping[str, Any]:
        """Every claim of the validated token."""
        return self.token.claims

    def __repr__(self) -> str:
        return f"TokenUser(client_id={self.client_id!r}, roles={self.roles!r})"


# ---------------------------------------------------------------------------------------------
# RequireRole


class RequireRole:
    """Require a valid bearer token holding app roles, for every request an ASGI app serves.

    ``RequireRole(...)`` is a middleware factory, so ``app.add_middleware(RequireRole(...))``
    works as written: Starlette calls the instance with the app to wrap when it builds the
    middleware stack, at the app's start-up.

    - ``roles``: one or more app roles; with ``match="any"`` (the default) one of them is
      enough, with ``match="all"`` the caller needs every one.
    - ``validator``: a ``ccflow.TokenValidator`` (or anything with its interface). Without
      one, ``TokenValidator.from_env()`` is built at start-up (not here, so that importing a
      module that declares ``RequireRole("invokeRole")`` needs no configuration): bad
      configuration then fails the start-up with a ``ConfigurationError`` naming the variable,
      and that validator is closed on lifespan shutdown.
    - ``exempt``: paths served without a token, such as health checks; exact paths, or a
      prefix written ``"/health/*"`` (a single string is one path). Paths are matched as the
      app routes them, without the ``root_path`` a ``Mount`` or ``uvicorn --root-path`` adds.
    - ``allow_preflight``: let CORS preflights (``OPTIONS`` with ``Origin`` and
      ``Access-Control-Request-Method``) through without a token. Off by default: anyone can
      send those headers. Put Starlette's ``CORSMiddleware`` outside ``RequireRole`` instead
      (add it after), and it answers preflights before they get here.

    Lifespan passes through; a WebSocket with a bad token is closed with code 1008 before it
    is accepted (1013, try again later, when no signing keys can be had); any other ASGI
    scope type is refused with a ``RuntimeError``.
    """

    __slots__ = ("allow_preflight", "exempt", "match", "roles", "validator")

    def __init__(
        self,
        *roles: str,
        validator: Validator | None = None,
        match: Match = "any",
        exempt: Iterable[str] = (),
        allow_preflight: bool = False,
    ) -> None:
        self.roles: tuple[str, ...] = _checked_roles(roles, match)
        self.match: Match = match
        self.exempt: tuple[str, ...] = _exempt_paths(exempt)
        self.allow_preflight = bool(allow_preflight)
        self.validator = None if validator is None else checked_validator(validator, "RequireRole")

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
        return f"RequireRole({', '.join(map(repr, self.roles))}, match={self.match!r})"


def _checked_roles(roles: tuple[object, ...], match: object) -> tuple[str, ...]:
    """``roles`` (one at least) and ``match``, checked as every face checks them."""
    if not roles:
        raise ConfigurationError("RequireRole needs at least one role", setting="roles")
    if any(callable(role) for role in roles):
        # add_middleware(RequireRole, "invokeRole") hands the app over as a role.
        raise ConfigurationError(
            "RequireRole(...) builds the middleware: write "
            "app.add_middleware(RequireRole('invokeRole', ...)), not "
            "app.add_middleware(RequireRole, 'invokeRole', ...)",
            setting="roles",
        )
    return checked_roles("RequireRole", roles, match)


def _exempt_paths(exempt: object) -> tuple[str, ...]:
    """``exempt`` as a tuple of paths (a string is one path), each checked."""
    if isinstance(exempt, str):
        paths: tuple[object, ...] = (exempt,)
    elif isinstance(exempt, Iterable):
        paths = tuple(exempt)
    else:
        raise ConfigurationError(
            f"RequireRole exempt must be a list of paths, got {exempt!r}", setting="exempt"
        )
    for path in paths:
        if not isinstance(path, str) or not path.startswith("/"):
            raise ConfigurationError(
                f"RequireRole exempt paths must start with '/', got {path!r}", setting="exempt"
            )
        if path == "/*":
            # Every path would be served without a token: almost surely a mistake, and one
            # that fails open.
            raise ConfigurationError(
                "RequireRole exempt '/*' would exempt every path; exempt the paths that "
                "need no token (such as '/healthz' or '/public/*'), or leave RequireRole off",
                setting="exempt",
            )
    return paths  # type: ignore[return-value]  # each one checked above


class RequireRoleMiddleware:
    """The ASGI app :class:`RequireRole` builds around another; keeps no per-request state."""

    __slots__ = (
        "allow_preflight",
        "app",
        "exact",
        "match",
        "owns_validator",
        "prefixes",
        "roles",
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
        self.roles = config.roles
        self.match: Match = config.match
        self.allow_preflight = config.allow_preflight
        self.exact = frozenset(p for p in config.exempt if not p.endswith("/*"))
        self.prefixes = tuple(p[:-1] for p in config.exempt if p.endswith("/*"))
        self.validator = validator
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
        if self._is_exempt(scope) or (self.allow_preflight and _is_preflight(scope)):
            scope.setdefault("auth", AuthCredentials())
            scope.setdefault("user", UnauthenticatedUser())
            await self.app(scope, receive, send)
            return
        try:
            verdict = await authenticate(
                scope["headers"], self.validator, self.roles, match=self.match
            )
        except Exception as exc:  # every refusal, and validator bugs: never a 500
            await self._refuse(exc, scope, receive, send)
            return
        if verdict is None:
            await self._refuse(None, scope, receive, send)
            return
        scope["auth"] = AuthCredentials(verdict.roles)
        scope["user"] = TokenUser(verdict)
        await self.app(scope, receive, send)

    def _is_exempt(self, scope: Scope) -> bool:
        """Whether the path, as the app routes it, is exempt."""
        # Match the path without the root path (a Mount, or uvicorn --root-path, puts it in
        # front), as Starlette's router does: see docs/api.md.
        path: str = scope["path"]
        root_path: str = scope.get("root_path", "")
        if root_path and path.startswith(root_path):
            rest = path[len(root_path) :]
            if not rest or rest[0] == "/":
                path = rest or "/"
        return path in self.exact or bool(self.prefixes and path.startswith(self.prefixes))

    async def _refuse(
        self, exc: BaseException | None, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Send the RFC 6750 answer for ``exc`` (``None``: no token), logged at DEBUG."""
        rejection = rejection_for(exc, self.validator.realm)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "refused %s %s: %s %s",
                scope["type"],
                _loggable(scope.get("path", "")),
                rejection.status,
                rejection.error or "no token",
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


_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def _loggable(path: object) -> str:
    """``path`` with everything but printable ASCII escaped, fit for one log line."""
    # The server percent-decodes the path: "%0a" arrives as a line break. Escaped, a caller
    # cannot write log lines (or terminal escapes) of its own.
    text = str(path)
    if text.isascii() and text.isprintable():
        return text
    return _UNPRINTABLE.sub(lambda m: ascii(m.group())[1:-1], text)


def _is_preflight(scope: Scope) -> bool:
    """Whether the request is a CORS preflight: ``OPTIONS`` with Origin and the method asked."""
    # Without Origin it is no preflight (Fetch standard), and needs a token like any request.
    if scope["type"] != "http" or scope["method"] != "OPTIONS":
        return False
    names = {name.lower() for name, _ in scope["headers"]}
    return b"origin" in names and b"access-control-request-method" in names


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
    roles), so ``@requires("invokeRole")`` guards each route; no token gives Starlette's
    unauthenticated user. Pass ``on_error=BearerAuthBackend.on_error`` to
    ``AuthenticationMiddleware`` to answer bad tokens per RFC 6750 (401/403/400/503) instead
    of Starlette's plain 400. Without ``validator``, ``TokenValidator.from_env()`` is built on
    first use (a bad variable fails that request with the ``ConfigurationError``), and
    :meth:`aclose` closes it (call it in the app's lifespan; Starlette's
    ``AuthenticationMiddleware`` does not).
    """

    def __init__(self, validator: Validator | None = None) -> None:
        super().__init__(validator, "BearerAuthBackend")

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        """Validate the request's bearer token, if it has one."""
        validator = self.validator  # a configuration error is the app's, not a refusal
        try:
            verdict = await authenticate(conn.scope["headers"], validator)
        except Exception as exc:
            raise BearerAuthenticationError(rejection_for(exc, validator.realm)) from None
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
