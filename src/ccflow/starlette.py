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

import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

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

from ccflow.errors import (
    ConfigurationError,
    InsufficientScopeError,
    InvalidTokenError,
    KeysUnavailableError,
)

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

Match = Literal["any", "all"]


class Verdict(Protocol):
    """What a validator returns for a good token (``ccflow.ValidatedToken`` is one)."""

    @property
    def claims(self) -> Mapping[str, Any]:
        """Every claim of the token."""

    @property
    def client_id(self) -> str | None:
        """The caller's client id (``azp`` in v2 tokens, ``appid`` in v1)."""

    @property
    def tenant_id(self) -> str | None:
        """The caller's tenant (``tid``), if the token names one."""

    @property
    def roles(self) -> tuple[str, ...]:
        """The app roles granted to the caller (``roles``)."""

    def require_roles(self, roles: Sequence[str], *, match: Match = "any") -> object:
        """Raise ``InsufficientScopeError`` unless the roles are held (any or all of them)."""


class Validator(Protocol):
    """What the middleware needs of a validator (``ccflow.TokenValidator`` is one)."""

    @property
    def realm(self) -> str:
        """The realm announced in ``WWW-Authenticate``."""

    async def validate(self, token: str) -> Verdict:
        """Validate a raw token (without ``Bearer``); raise a ccflow error when it is refused.

        A validator may also offer ``cached(token: bytes) -> Verdict | None`` (as
        ``ccflow.TokenValidator`` does): the verdict on a token it accepted before, or
        ``None``, without awaiting. :class:`RequireRole` then serves repeated tokens through
        it and calls ``validate`` only when it answers ``None``.
        """

    async def aclose(self) -> None:
        """Release the validator's HTTP client."""


def _from_env() -> Validator:
    # Imported late: ccflow.validation pulls in the JWT machinery, and ccflow/__init__ imports
    # this module.
    from ccflow.validation import TokenValidator

    validator: Validator = TokenValidator.from_env()
    return validator


def _validator(validator: Validator | None, owner: str) -> Validator:
    """``validator``, checked now (a wrong object would otherwise fail on every request), or
    ``TokenValidator.from_env()`` when it is ``None``."""
    if validator is None:
        return _from_env()
    if isinstance(validator, type):
        # The class itself passes the checks below, then fails on every request (a 500).
        raise ConfigurationError(
            f"{owner} validator must be a validator instance, got the class "
            f"{validator.__name__}: pass TokenValidator(...) or TokenValidator.from_env()",
            setting="validator",
        )
    if not callable(getattr(validator, "validate", None)) or not isinstance(
        getattr(validator, "realm", None), str
    ):
        raise ConfigurationError(
            f"{owner} validator must be a ccflow.TokenValidator (or have its validate() and "
            f"realm), got {type(validator).__name__}",
            setting="validator",
        )
    return validator


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
# The Authorization header (RFC 6750 section 2.1)

_AUTHORIZATION = b"authorization"
# b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(rb"[A-Za-z0-9\-._~+/]+=*")
_B64TOKEN_STR = re.compile(r"[A-Za-z0-9\-._~+/]+=*", re.ASCII)
# RFC 7230 token: what an auth-scheme name may look like.
_SCHEME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class InvalidRequestError(ValueError):
    """The Authorization header is malformed or repeated (RFC 6750 ``invalid_request``, 400)."""


_BLANKS = (32, 9)  # space, tab
_NOT_B64TOKEN = "malformed bearer token: not RFC 6750 b64token syntax"


def bearer_token(
    headers: Iterable[tuple[bytes, bytes]], *, check_syntax: bool = True
) -> str | None:
    """The bearer token of an ASGI header list, or ``None`` when there is no bearer credential.

    The scheme name is case-insensitive. Another scheme (``Basic ...``) counts as no bearer
    credential. Raises :class:`InvalidRequestError` for more than one Authorization header, an
    empty one, ``Bearer`` without a token, a non-ASCII token, or (with ``check_syntax``) a
    token outside RFC 6750's ``b64token`` syntax. Without ``check_syntax`` the caller checks
    the syntax with :func:`is_b64token` once the validator refuses the token: a good token
    then pays nothing for it.
    """
    value: bytes | None = None
    for name, raw in headers:
        # ASGI servers send lower-case names; tolerate hand-built scopes that do not.
        if name == _AUTHORIZATION or (len(name) == 13 and name.lower() == _AUTHORIZATION):
            if value is not None:
                raise InvalidRequestError("more than one Authorization header")
            value = raw
    if value is None:
        return None
    if value[:7].lower() == b"bearer ":
        # The usual shape, "Bearer <token>", without copying the token more than once.
        rest = value[7:]
        if rest and rest[0] != 32 and rest[-1] not in _BLANKS:
            return _token(rest, check_syntax)
    value = value.strip(b" \t")
    if not value:
        raise InvalidRequestError("empty Authorization header")
    scheme, _, rest = value.partition(b" ")
    if scheme.lower() != b"bearer":
        if _SCHEME.fullmatch(scheme) is None:
            raise InvalidRequestError("malformed Authorization header")
        return None
    rest = rest.lstrip(b" ")
    if not rest:
        raise InvalidRequestError("Bearer scheme without a token")
    return _token(rest, check_syntax)


def _token(raw: bytes, check_syntax: bool) -> str:
    if check_syntax and _B64TOKEN.fullmatch(raw) is None:
        raise InvalidRequestError(_NOT_B64TOKEN)
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidRequestError(_NOT_B64TOKEN) from None


def is_b64token(token: str) -> bool:
    """Whether ``token`` has RFC 6750's ``b64token`` syntax (what a bearer token may contain)."""
    return _B64TOKEN_STR.fullmatch(token) is not None


# ---------------------------------------------------------------------------------------------
# RFC 6750 answers

_QUOTED_UNSAFE = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")


def _quoted(text: str) -> str:
    # RFC 6750 3: error_description and scope exclude '"' and '\'; replace rather than escape,
    # since many clients do not unescape quoted-pairs.
    return _QUOTED_UNSAFE.sub("?", text.replace('"', "'").replace("\\", "/"))


@dataclass(frozen=True, slots=True)
class Rejection:
    """A refused request: status, RFC 6750 challenge and JSON body, ready to send.

    ``error`` is ``None`` (no token), ``"invalid_request"``, ``"invalid_token"`` or
    ``"insufficient_scope"``; ``www_authenticate`` is ``None`` for a 503.
    """

    status: int
    error: str | None
    description: str
    www_authenticate: str | None
    retry_after: int | None = None

    @property
    def headers(self) -> dict[str, str]:
        """The response headers (``WWW-Authenticate``, ``Retry-After``, ``Cache-Control``)."""
        headers = {"cache-control": "no-store"}
        if self.www_authenticate is not None:
            headers["www-authenticate"] = self.www_authenticate
        if self.retry_after is not None:
            headers["retry-after"] = str(self.retry_after)
        return headers

    @property
    def body(self) -> bytes:
        """The JSON body: ``{"error": ..., "error_description": ...}``."""
        return json.dumps(
            {"error": self.error or "unauthorized", "error_description": self.description},
            separators=(",", ":"),
        ).encode()

    def response(self) -> Response:
        """The same answer as a Starlette ``Response``."""
        return Response(
            self.body,
            status_code=self.status,
            headers=self.headers,
            media_type="application/json",
        )

    async def send_http(self, send: Send) -> None:
        """Send the answer on a raw ASGI ``send``."""
        body = self.body
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        raw.append((b"content-type", b"application/json"))
        raw.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": self.status, "headers": raw})
        await send({"type": "http.response.body", "body": body})


def _challenge(realm: str, error: str | None = None, description: str = "", scope: str = "") -> str:
    parts = [f'Bearer realm="{_quoted(realm)}"']
    if error is not None:
        parts.append(f'error="{error}"')
        if description:
            parts.append(f'error_description="{_quoted(description)}"')
        if scope:
            parts.append(f'scope="{_quoted(scope)}"')
    return ", ".join(parts)


def rejection_for(exc: BaseException | None, realm: str) -> Rejection:
    """The RFC 6750 answer for a refusal: ``None`` means no bearer token was presented.

    ``InvalidRequestError`` -> 400, ``InvalidTokenError`` -> 401, ``InsufficientScopeError``
    -> 403, ``KeysUnavailableError`` -> 503; anything else (a bug, never the caller's fault
    alone) -> 401 ``invalid_token`` with a generic description, so no input makes a 500.
    """
    if exc is None:
        description = "a bearer access token is required"
        return Rejection(401, None, description, _challenge(realm))
    if isinstance(exc, InvalidRequestError):
        description = str(exc)
        return Rejection(
            400,
            "invalid_request",
            description,
            _challenge(realm, "invalid_request", description),
        )
    if isinstance(exc, InvalidTokenError):
        description = exc.message
        return Rejection(
            401, "invalid_token", description, _challenge(realm, "invalid_token", description)
        )
    if isinstance(exc, InsufficientScopeError):
        description = exc.message
        scope = " ".join(exc.required)
        return Rejection(
            403,
            "insufficient_scope",
            description,
            _challenge(realm, "insufficient_scope", description, scope),
        )
    if isinstance(exc, KeysUnavailableError):
        return Rejection(503, "temporarily_unavailable", exc.message, None, exc.retry_after)
    logger.error("token validation failed unexpectedly (%s)", type(exc).__name__)
    description = "the token could not be validated"
    return Rejection(
        401, "invalid_token", description, _challenge(realm, "invalid_token", description)
    )


# ---------------------------------------------------------------------------------------------
# RequireRole


class RequireRole:
    """Require a valid bearer token holding app roles, for every request an ASGI app serves.

    ``RequireRole(...)`` is a middleware factory, so ``app.add_middleware(RequireRole(...))``
    works as written: Starlette calls the instance with the app to wrap.

    - ``roles``: one or more app roles; with ``match="any"`` (the default) one of them is
      enough, with ``match="all"`` the caller needs every one.
    - ``validator``: a ``ccflow.TokenValidator`` (or anything with its interface). Without
      one, ``TokenValidator.from_env()`` is used, so bad configuration fails here, at startup,
      with a ``ConfigurationError`` naming the variable; that validator is closed on lifespan
      shutdown.
    - ``exempt``: paths served without a token, such as health checks; exact paths, or a
      prefix written ``"/health/*"`` (a single string is one path). Paths are matched as the
      app routes them, without the ``root_path`` a ``Mount`` or ``uvicorn --root-path`` adds.

    CORS preflights (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) and
    lifespan pass through; a WebSocket with a bad token is closed with code 1008 before it is
    accepted (1013, try again later, when no signing keys can be had).
    """

    __slots__ = ("exempt", "match", "owns_validator", "roles", "validator")

    def __init__(
        self,
        *roles: str,
        validator: Validator | None = None,
        match: Match = "any",
        exempt: Iterable[str] = (),
    ) -> None:
        if not roles:
            raise ConfigurationError("RequireRole needs at least one role", setting="roles")
        for role in roles:
            if callable(role):
                # add_middleware(RequireRole, "invokeRole") hands the app over as a role.
                raise ConfigurationError(
                    "RequireRole(...) builds the middleware: write "
                    "app.add_middleware(RequireRole('invokeRole', ...)), not "
                    "app.add_middleware(RequireRole, 'invokeRole', ...)",
                    setting="roles",
                )
            if not isinstance(role, str) or not role:
                raise ConfigurationError(
                    f"RequireRole roles must be non-empty strings, got {role!r}", setting="roles"
                )
        if match not in ("any", "all"):
            raise ConfigurationError(
                f'RequireRole match must be "any" or "all", got {match!r}', setting="match"
            )
        if isinstance(exempt, str):
            exempt = (exempt,)
        elif isinstance(exempt, Iterable):
            exempt = tuple(exempt)
        else:
            raise ConfigurationError(
                f"RequireRole exempt must be a list of paths, got {exempt!r}", setting="exempt"
            )
        for path in exempt:
            if not isinstance(path, str) or not path.startswith("/"):
                raise ConfigurationError(
                    f"RequireRole exempt paths must start with '/', got {path!r}",
                    setting="exempt",
                )
            if path == "/*":
                # Every path would be served without a token: almost surely a mistake, and
                # one that fails open.
                raise ConfigurationError(
                    "RequireRole exempt '/*' would exempt every path; exempt the paths that "
                    "need no token (such as '/healthz' or '/public/*'), or leave RequireRole off",
                    setting="exempt",
                )
        self.roles: tuple[str, ...] = roles
        self.match: Match = match
        self.exempt: tuple[str, ...] = exempt
        self.owns_validator = validator is None
        self.validator: Validator = _validator(validator, "RequireRole")

    def __call__(self, app: ASGIApp) -> RequireRoleMiddleware:
        """Wrap ``app``: what Starlette's ``add_middleware`` and ``Middleware`` call."""
        return RequireRoleMiddleware(app, self)

    def __repr__(self) -> str:
        return f"RequireRole({', '.join(map(repr, self.roles))}, match={self.match!r})"


class RequireRoleMiddleware:
    """The ASGI app :class:`RequireRole` builds around another; keeps no per-request state."""

    __slots__ = (
        "app",
        "exact",
        "exempting",
        "match",
        "owns_validator",
        "prefixes",
        "probe",
        "role",
        "role_set",
        "roles",
        "validate",
        "validator",
        "verify",
    )

    def __init__(self, app: ASGIApp, config: RequireRole) -> None:
        self.app = app
        self.roles = config.roles
        self.match = config.match
        # The common case, one role, is checked inline on the hot path.
        self.role = config.roles[0] if len(config.roles) == 1 else None
        self.role_set = frozenset(config.roles)
        self.validator = config.validator
        self.validate = config.validator.validate
        # ccflow.TokenValidator's _probe/_verify pair also hands the digest of a miss over;
        # any other validator with cached() (a subclass with its own validate, a wrapper) gets
        # the hot path for hits only. _hot_path is looked up on the class: a wrapper that
        # delegates through __getattr__ must not hand over its inner validator's pair, which
        # would skip the wrapper's own validate().
        hot_path = getattr(type(config.validator), "_hot_path", None)
        pair = hot_path(config.validator) if callable(hot_path) else None
        if pair is not None:
            probe, verify = pair
        else:
            probe, verify = getattr(config.validator, "cached", None), None
        self.probe: Callable[[bytes], Verdict | bytes | None] | None = (
            probe if callable(probe) else None
        )
        self.verify: Callable[[bytes, bytes], Awaitable[Verdict]] | None = verify
        self.owns_validator = config.owns_validator
        self.exact = frozenset(p for p in config.exempt if not p.endswith("/*"))
        self.prefixes = tuple(p[:-1] for p in config.exempt if p.endswith("/*"))
        self.exempting = bool(config.exempt)

    def _is_exempt(self, scope: Scope) -> bool:
        # Match the path the app routes: scope["path"] without the root path (a Mount, or
        # uvicorn --root-path, puts it in front), as Starlette's router does. The full path
        # would miss "/healthz" under a root path, and could make "/health/*" open every route
        # of an app mounted at "/health".
        path: str = scope["path"]
        root_path: str = scope.get("root_path", "")
        if root_path and path.startswith(root_path):
            rest = path[len(root_path) :]
            if not rest or rest[0] == "/":
                path = rest or "/"
        return path in self.exact or bool(self.prefixes and path.startswith(self.prefixes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the request's token, then call the wrapped app or answer the refusal."""
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            if kind == "lifespan" and self.owns_validator:
                await self.app(scope, receive, self._closing_send(send))
            else:
                await self.app(scope, receive, send)
            return
        if (self.exempting and self._is_exempt(scope)) or (
            kind == "http" and scope["method"] == "OPTIONS" and _is_preflight(scope)
        ):
            scope.setdefault("auth", AuthCredentials())
            scope.setdefault("user", UnauthenticatedUser())
            await self.app(scope, receive, send)
            return
        token: str | None = None
        verdict: Verdict | None = None
        probe = self.probe
        if probe is not None:
            # The hot path, for a token the validator accepted before: one pass over the
            # headers, no coroutine, no decode. Anything unusual (no header, several, another
            # shape than "Bearer <token>", a missing role) takes the full path below, which
            # gives every refusal its exact answer; a miss on a plain "Bearer <token>" goes
            # straight to the validator with the digest already taken.
            value = None
            for name, raw in scope["headers"]:
                if name == b"authorization" or (
                    len(name) == 13 and name.lower() == b"authorization"
                ):
                    if value is not None:
                        value = None
                        break
                    value = raw
            if value is not None and (value[:7] == b"Bearer " or value[:7].lower() == b"bearer "):
                rest = value[7:]
                try:
                    hit = probe(rest)
                except Exception as exc:  # a validator bug: the full path answers, not a 500
                    logger.error("the validator's cached() failed (%s)", type(exc).__name__)
                    hit = None
                if isinstance(hit, bytes):
                    # A miss, and the digest that validate() would take again. A verified
                    # token has no blanks and is ASCII; anything else takes the full path.
                    verify = self.verify
                    if (
                        verify is not None
                        and rest
                        and rest[0] != 32
                        and rest[-1] not in _BLANKS
                        and rest.isascii()
                    ):
                        try:
                            verdict = await verify(rest, hit)
                        except Exception as exc:
                            await self._refuse(exc, rest.decode("ascii"), scope, receive, send)
                            return
                elif hit is not None:
                    verdict = hit
                if verdict is not None:
                    roles = verdict.roles
                    role = self.role
                    if (
                        role in roles
                        if role is not None
                        else (
                            not self.role_set.isdisjoint(roles)
                            if self.match == "any"
                            else self.role_set.issubset(roles)
                        )
                    ):
                        scope["auth"] = AuthCredentials(roles)
                        scope["user"] = TokenUser(verdict)
                        await self.app(scope, receive, send)
                        return
        try:
            if verdict is None:
                token = bearer_token(scope["headers"], check_syntax=False)
                if token is None:
                    await self._reject(None, scope, receive, send)
                    return
                verdict = await self.validate(token)
            # Only now, with signature and claims good, may the answer become a 403.
            role = self.role
            if role is None or role not in verdict.roles:
                verdict.require_roles(self.roles, match=self.match)
        except Exception as exc:  # every refusal, and validator bugs: never a 500
            await self._refuse(exc, token, scope, receive, send)
            return
        scope["auth"] = AuthCredentials(verdict.roles)
        scope["user"] = TokenUser(verdict)
        await self.app(scope, receive, send)

    async def _refuse(
        self, exc: BaseException, token: str | None, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if token is not None and isinstance(exc, InvalidTokenError) and not is_b64token(token):
            exc = InvalidRequestError(_NOT_B64TOKEN)
        await self._reject(exc, scope, receive, send)

    async def _reject(
        self, exc: BaseException | None, scope: Scope, receive: Receive, send: Send
    ) -> None:
        rejection = rejection_for(exc, self.validator.realm)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "refused %s %s: %s %s",
                scope["type"],
                _loggable(scope.get("path", "")),
                rejection.status,
                rejection.error or "no token",
            )
        if scope["type"] == "websocket":
            await _close_websocket(rejection, receive, send)
        else:
            await rejection.send_http(send)

    def _closing_send(self, send: Send) -> Send:
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


_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def _loggable(path: object) -> str:
    # The server percent-decodes the path: "%0a" arrives as a line break. Escape everything
    # but printable ASCII, so a caller cannot write log lines (or terminal escapes) of its own.
    text = str(path)
    if text.isascii() and text.isprintable():
        return text
    return _UNPRINTABLE.sub(lambda m: ascii(m.group())[1:-1], text)


def _is_preflight(scope: Scope) -> bool:
    # A CORS preflight (Fetch standard) carries both Origin and Access-Control-Request-Method;
    # an OPTIONS without Origin is no preflight and needs a token like any request.
    names = {name.lower() for name, _ in scope["headers"]}
    return b"origin" in names and b"access-control-request-method" in names


async def _close_websocket(rejection: Rejection, receive: Receive, send: Send) -> None:
    # Wait for the handshake request, then refuse it: close before accept means the server
    # answers the upgrade with an HTTP error instead of opening the socket.
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    code, reason = _websocket_close(rejection)
    await send({"type": "websocket.close", "code": code, "reason": reason})


def _websocket_close(rejection: Rejection) -> tuple[int, str]:
    # 1008 (policy violation) for a refused token; 1013 (try again later) when the keys to
    # judge it are missing, so a client does not take an outage for a bad token. The reason
    # fits the 123 bytes a close frame allows.
    reason = rejection.description.encode()[:120].decode("utf-8", "ignore")
    return (1013 if rejection.status == 503 else 1008), reason


# ---------------------------------------------------------------------------------------------
# AuthenticationBackend


class BearerAuthenticationError(AuthenticationError):
    """Raised by :class:`BearerAuthBackend`; ``rejection`` is the RFC 6750 answer to send."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.description)
        self.rejection = rejection


class BearerAuthBackend(AuthenticationBackend):
    """A Starlette ``AuthenticationBackend`` over a token validator.

    A good token gives ``request.user`` (:class:`TokenUser`) and ``request.auth.scopes`` (its
    roles), so ``@requires("invokeRole")`` guards each route; no token gives Starlette's
    unauthenticated user. Pass ``on_error=BearerAuthBackend.on_error`` to
    ``AuthenticationMiddleware`` to answer bad tokens per RFC 6750 (401/403/400/503) instead
    of Starlette's plain 400. Without ``validator``, ``TokenValidator.from_env()`` is used,
    and :meth:`aclose` closes it (call it in the app's lifespan; Starlette's
    ``AuthenticationMiddleware`` does not).
    """

    def __init__(self, validator: Validator | None = None) -> None:
        self.owns_validator = validator is None
        self.validator: Validator = _validator(validator, "BearerAuthBackend")

    async def aclose(self) -> None:
        """Close the validator built from the environment; a validator passed in stays open
        for its owner to close."""
        if self.owns_validator:
            await self.validator.aclose()

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        """Validate the request's bearer token, if it has one."""
        try:
            token = bearer_token(conn.scope["headers"])
            if token is None:
                return None
            verdict = await self.validator.validate(token)
        except Exception as exc:
            raise BearerAuthenticationError(rejection_for(exc, self.validator.realm)) from None
        return AuthCredentials(verdict.roles), TokenUser(verdict)

    @staticmethod
    def on_error(conn: HTTPConnection, exc: Exception) -> Response:
        """The RFC 6750 response for an ``AuthenticationMiddleware`` error."""
        if isinstance(exc, BearerAuthenticationError):
            return exc.rejection.response()
        return rejection_for(
            InvalidRequestError(str(exc) or "authentication failed"), ""
        ).response()
