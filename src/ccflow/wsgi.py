"""WSGI (Flask, Django, any WSGI app): protect an API with bearer access tokens.

``RequireRoleWSGI`` wraps a WSGI app as :class:`~ccflow.RequireRole` wraps an ASGI one, with
the same arguments and the same RFC 6750 answers::

    from flask import Flask
    from ccflow.wsgi import RequireRoleWSGI, RequireScopeWSGI

    app = Flask(__name__)
    app.wsgi_app = RequireRoleWSGI(app.wsgi_app, "invokeRole")   # from the CCFLOW_* environment
    # delegated (user) tokens: RequireScopeWSGI(app.wsgi_app, "Calc.Read"); either one:
    # RequireRoleWSGI(app.wsgi_app, "invokeRole", or_scopes=["Calc.Read"])

A request it lets through carries the caller in the environ: ``environ["ccflow.principal"]``
(a :class:`~ccflow._bearer.Principal`, what ``ccflow.fastapi.BearerClaims`` returns: client
id, tenant id, roles, scopes, claims) and ``environ["ccflow.token"]`` (the validator's verdict,
a :class:`~ccflow.ValidatedToken`); in Flask, ``request.environ[...]``. Django has its own
middleware and view decorators in :mod:`ccflow.django`.

Tokens are checked with :meth:`~ccflow.TokenValidator.validate_sync`: the same steps, keys
and cache as the async faces, blocking the worker thread only while keys are fetched (one
fetch however many threads wait). The answers are :mod:`ccflow.starlette`'s table; every
refusal is logged at INFO on ``ccflow.api`` and given to ``on_refusal``, as there.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from ccflow._bearer import (
    ANY_VALID_TOKEN,
    AccessRule,
    Match,
    Paths,
    Principal,
    RefusalHook,
    Rejection,
    RuleOwner,
    SyncValidator,
    Verdict,
    authenticate_blocking,
    checked_hook,
    checked_paths,
    listed,
    refuse,
    required_rule,
    rule_repr,
)
from ccflow.errors import ConfigurationError
from ccflow.validation import TokenValidator

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = [
    "ENVIRON_KEY",
    "PRINCIPAL_KEY",
    "RequireRoleWSGI",
    "RequireRoleWSGIOptions",
    "RequireScopeWSGI",
    "SyncValidator",
    "authenticate_sync",
    "authorization_headers",
    "send_rejection",
]

ENVIRON_KEY = "ccflow.token"
"""Where :class:`RequireRoleWSGI` puts the verdict on a request it lets through."""

PRINCIPAL_KEY = "ccflow.principal"
"""Where :class:`RequireRoleWSGI` puts the caller (a ``Principal``) on a request it lets through."""


# A later "Scheme param" after a comma: what a server that joins repeated headers with ", "
# makes of two Authorization headers (no b64token or base64 credential holds a comma).
_JOINED = re.compile(r",\s*[!#$%&'*+\-.^_`|~0-9A-Za-z]+ ")


def authorization_headers(environ: Mapping[str, Any]) -> list[tuple[bytes, bytes]]:
    """The request's Authorization header(s) from a WSGI environ, as :func:`bearer_token` reads
    them; a value the server joined from several headers counts as several."""
    value = environ.get("HTTP_AUTHORIZATION")
    if value is None:
        return []
    if isinstance(value, bytes):  # a server that breaks PEP 3333: read it all the same
        value = value.decode("latin-1")
    value = str(value)
    raw = value.encode("latin-1", "replace")
    if "," in value and _JOINED.search(value):
        return [(b"authorization", part) for part in raw.split(b",")]
    return [(b"authorization", raw)]


def authenticate_sync(
    environ: Mapping[str, Any],
    validator: SyncValidator,
    roles: Iterable[str] = (),
    *,
    match: Match = "any",
    rule: AccessRule | None = None,
) -> Verdict | None:
    """The verdict on a WSGI request's bearer token, ``rule`` checked; ``None`` for no token.

    The blocking twin of ``ccflow._bearer.authenticate`` (``roles``/``match`` are shorthand
    for ``rule=AccessRule(roles, match=match)``): the rule only after the signature and
    claims pass, so a forged token that also lacks the role is a 401, not a 403.
    """
    if rule is None:
        rule = AccessRule(tuple(roles), match=match) if roles else ANY_VALID_TOKEN
    return authenticate_blocking(authorization_headers(environ), validator, rule)


def send_rejection(rejection: Rejection, start_response: StartResponse) -> list[bytes]:
    """Send ``rejection`` through WSGI's ``start_response``; the body to return."""
    body = rejection.body
    headers = [*rejection.headers.items()]
    headers += [("content-type", "application/json"), ("content-length", str(len(body)))]
    status = HTTPStatus(rejection.status)
    start_response(f"{status.value} {status.phrase}", headers)
    return [body]


def checked_sync_validator(validator: object, owner: str) -> SyncValidator:
    """``validator``, checked now: a wrong object would otherwise fail on every request."""
    if isinstance(validator, type) or not callable(getattr(validator, "validate_sync", None)):
        raise ConfigurationError(
            f"{owner} validator must be a ccflow.TokenValidator instance (or have its "
            f"validate_sync() and realm), got {_named(validator)}",
            setting="validator",
        )
    if not isinstance(getattr(validator, "realm", None), str):
        raise ConfigurationError(
            f"{owner} validator must have a realm (a string)", setting="validator"
        )
    return validator  # type: ignore[return-value]  # checked above


def _named(value: object) -> str:
    """A class by its name, anything else by its type's."""
    return value.__name__ if isinstance(value, type) else type(value).__name__


class RequireRoleWSGI(RuleOwner):
    """Require a valid bearer token holding app roles, for every request a WSGI app serves.

    The arguments of :class:`~ccflow.RequireRole`, with the app first:

    - ``app``: the WSGI app to protect (for Flask, ``app.wsgi_app``);
    - ``roles``: one or more app roles; ``match="any"`` (default) or ``"all"``;
    - ``or_scopes``: delegated scopes (``scp``) that do as well as the roles;
    - ``validator``: a ``ccflow.TokenValidator`` (or anything with ``validate_sync()`` and
      ``realm``); without one, ``TokenValidator.from_env()`` is built here, so a bad
      ``CCFLOW_*`` variable fails the app's creation with a ``ConfigurationError`` naming it;
    - ``exempt``: paths served without a token (exact, or a prefix written ``"/health/*"``),
      matched against ``PATH_INFO`` (the path as the app routes it, without ``SCRIPT_NAME``);
    - ``allow_preflight``: let CORS preflights through without a token (off by default);
    - ``on_refusal``: called with a :class:`~ccflow.starlette.Refusal` for each refused
      request (metrics); a hook that raises is logged and the refusal sent all the same.

    Call :meth:`close` at shutdown to close the HTTP client of a validator built here.
    """

    def __init__(
        self,
        app: WSGIApplication,
        *roles: str,
        validator: SyncValidator | None = None,
        match: Match = "any",
        exempt: Iterable[str] = (),
        allow_preflight: bool = False,
        or_scopes: Iterable[str] = (),
        on_refusal: RefusalHook | None = None,
    ) -> None:
        owner = type(self).__name__
        if not callable(app):
            raise ConfigurationError(
                f"{owner} wraps a WSGI app: {owner}(app.wsgi_app, 'invokeRole')", setting="app"
            )
        self.app = app
        self.rule = required_rule(owner, roles, or_scopes, match)
        self.exempt = Paths(checked_paths(exempt, "exempt", owner))
        self.allow_preflight = bool(allow_preflight)
        self.on_refusal = checked_hook(on_refusal, owner)
        self.owns_validator = validator is None
        self.validator: SyncValidator = (
            TokenValidator.from_env()
            if validator is None
            else checked_sync_validator(validator, owner)
        )

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Check the request's token, then call the wrapped app or send the refusal."""
        path: str = environ.get("PATH_INFO", "") or "/"
        if path in self.exempt or (self.allow_preflight and _is_preflight(environ)):
            return self.app(environ, start_response)
        headers = authorization_headers(environ)
        try:
            verdict = authenticate_blocking(headers, self.validator, self.rule)
        except Exception as exc:  # every refusal, and validator bugs: never a 500
            return self._refuse(exc, environ, start_response)
        if verdict is None:
            return self._refuse(None, environ, start_response)
        environ[ENVIRON_KEY] = verdict
        environ[PRINCIPAL_KEY] = Principal.of(verdict)
        return self.app(environ, start_response)

    def _refuse(
        self,
        exc: BaseException | None,
        environ: WSGIEnvironment,
        start_response: StartResponse,
    ) -> list[bytes]:
        """Send the RFC 6750 answer for ``exc`` (``None``: no token), logged and reported."""
        rejection = refuse(
            exc,
            self.validator.realm,
            method=environ.get("REQUEST_METHOD", ""),
            path=environ.get("PATH_INFO", ""),
            hook=self.on_refusal,
        )
        return send_rejection(rejection, start_response)

    def close(self) -> None:
        """Close the HTTP client of a validator built from the environment."""
        close: Callable[[], None] | None = getattr(self.validator, "close", None)
        if self.owns_validator and close is not None:
            close()

    def __repr__(self) -> str:
        return rule_repr(self, self.rule)


class RequireRoleWSGIOptions(TypedDict, total=False):
    """The keyword options :class:`RequireScopeWSGI` takes and hands to
    :class:`RequireRoleWSGI`, each with :class:`RequireRoleWSGI`'s meaning and default:

    - ``validator``: a ``ccflow.TokenValidator`` (default: ``TokenValidator.from_env()``,
      built with the middleware);
    - ``match``: ``"any"`` (the default) or ``"all"`` of the scopes, and of ``or_roles``;
    - ``exempt``: paths served without a token;
    - ``allow_preflight``: let CORS preflights through without a token (default off);
    - ``on_refusal``: called with a :class:`~ccflow.starlette.Refusal` for each refused
      request.
    """

    validator: SyncValidator | None
    match: Match
    exempt: Iterable[str]
    allow_preflight: bool
    on_refusal: RefusalHook | None


class RequireScopeWSGI(RequireRoleWSGI):
    """Require a valid delegated (user) token holding scopes (``scp``), for every request.

    ``RequireScopeWSGI(app.wsgi_app, "Calc.Read")``: the arguments of
    :class:`RequireRoleWSGI`, with scopes in place of roles (``or_roles`` for app roles that do
    as well; the other options: :class:`RequireRoleWSGIOptions`), as
    :class:`~ccflow.starlette.RequireScope` has them.
    """

    def __init__(
        self,
        app: WSGIApplication,
        *scopes: str,
        or_roles: Iterable[str] = (),
        **options: Unpack[RequireRoleWSGIOptions],
    ) -> None:
        if not scopes:
            raise ConfigurationError("RequireScopeWSGI needs at least one scope", setting="scopes")
        roles = listed(or_roles, "RequireScopeWSGI", "or_roles")
        super().__init__(app, *roles, or_scopes=scopes, **options)  # type: ignore[arg-type]  # the rule checks them


def _is_preflight(environ: Mapping[str, Any]) -> bool:
    """Whether the request is a CORS preflight: ``OPTIONS`` with Origin and the method asked."""
    return (
        environ.get("REQUEST_METHOD") == "OPTIONS"
        and "HTTP_ORIGIN" in environ
        and "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in environ
    )
