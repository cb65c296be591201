"""WSGI (Flask, Django, any WSGI app): protect an API with bearer access tokens.

``RequireRoleWSGI`` wraps a WSGI app as :class:`~ccflow.RequireRole` wraps an ASGI one, with
the same arguments and the same RFC 6750 answers::

    from flask import Flask
    from ccflow.wsgi import RequireRoleWSGI

    app = Flask(__name__)
    app.wsgi_app = RequireRoleWSGI(app.wsgi_app, "invokeRole")   # from the CCFLOW_* environment

A request it lets through carries the verdict in the environ: ``environ["ccflow.token"]`` (a
:class:`~ccflow.ValidatedToken`: ``client_id``, ``tenant_id``, ``roles``, ``claims``); in Flask,
``request.environ["ccflow.token"]``. Django has its own middleware and view decorator in
:mod:`ccflow.django`.

Tokens are checked with :meth:`~ccflow.TokenValidator.validate_sync`: the same steps, keys
and cache as the async faces, blocking the worker thread only while keys are fetched (one
fetch however many threads wait). Refusals (status, ``WWW-Authenticate`` error):

=================================================  ======  =============================
condition                                          status  ``WWW-Authenticate`` error
=================================================  ======  =============================
no bearer token (or another auth scheme)           401     none (``Bearer realm="..."``)
malformed header, several Authorization headers    400     ``invalid_request``
token fails a check (signature, exp, aud, ...)     401     ``invalid_token`` + which check
caller, tenant or role not allowed                 403     ``insufficient_scope``
no signing keys (cold start; authority down)       503     none; ``Retry-After`` instead
=================================================  ======  =============================
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Protocol

from ccflow._bearer import Match, Rejection, Verdict, bearer_token, checked_roles, rejection_for
from ccflow.errors import ConfigurationError
from ccflow.validation import TokenValidator

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = [
    "ENVIRON_KEY",
    "RequireRoleWSGI",
    "SyncValidator",
    "authenticate_sync",
    "authorization_headers",
    "send_rejection",
]

logger = logging.getLogger("ccflow.wsgi")

ENVIRON_KEY = "ccflow.token"
"""Where :class:`RequireRoleWSGI` puts the verdict on a request it lets through."""


class SyncValidator(Protocol):
    """What the WSGI faces need of a validator (``ccflow.TokenValidator`` is one)."""

    @property
    def realm(self) -> str:
        """The realm announced in ``WWW-Authenticate``."""

    def validate_sync(self, token: str) -> Verdict:
        """Validate a raw token (without ``Bearer``); raise a ccflow error when it is refused."""


# A later "Scheme param" after a comma: what a server that joins repeated headers with ", "
# makes of two Authorization headers (no b64token or base64 credential holds a comma).
_JOINED = re.compile(r",\s*[!#$%&'*+\-.^_`|~0-9A-Za-z]+ ")


def authorization_headers(environ: Mapping[str, Any]) -> list[tuple[bytes, bytes]]:
    """The request's Authorization header(s) from a WSGI environ, as :func:`bearer_token` reads
    them; a value the server joined from several headers counts as several."""
    value = environ.get("HTTP_AUTHORIZATION")
    if value is None:
        return []
    raw = value.encode("latin-1", "replace")
    if "," in value and _JOINED.search(value):
        return [(b"authorization", part) for part in raw.split(b",")]
    return [(b"authorization", raw)]


def authenticate_sync(
    environ: Mapping[str, Any],
    validator: SyncValidator,
    roles: Sequence[str] = (),
    *,
    match: Match = "any",
) -> Verdict | None:
    """The verdict on a WSGI request's bearer token, roles checked; ``None`` for no token.

    The blocking twin of ``ccflow._bearer.authenticate``: roles only after the signature and
    claims pass, so a forged token that also lacks the role is a 401, not a 403.
    """
    token = bearer_token(authorization_headers(environ))
    if token is None:
        return None
    verdict = validator.validate_sync(token)
    if roles:
        verdict.require_roles(roles, match=match)
    return verdict


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


def exempt_paths(owner: str, exempt: object) -> tuple[frozenset[str], tuple[str, ...]]:
    """``exempt`` as exact paths and prefixes (``"/health/*"``), each checked as
    ``RequireRole`` checks them."""
    paths: tuple[object, ...]
    if isinstance(exempt, str):
        paths = (exempt,)
    elif isinstance(exempt, Iterable):
        paths = tuple(exempt)
    else:
        raise ConfigurationError(
            f"{owner} exempt must be a list of paths, got {exempt!r}", setting="exempt"
        )
    for path in paths:
        if not isinstance(path, str) or not path.startswith("/"):
            raise ConfigurationError(
                f"{owner} exempt paths must start with '/', got {path!r}", setting="exempt"
            )
        if path == "/*":  # every path without a token: a mistake that fails open
            raise ConfigurationError(
                f"{owner} exempt '/*' would exempt every path; exempt the paths that need no "
                f"token (such as '/healthz' or '/public/*'), or leave {owner} off",
                setting="exempt",
            )
    strings = [p for p in paths if isinstance(p, str)]
    exact = frozenset(p for p in strings if not p.endswith("/*"))
    return exact, tuple(p[:-1] for p in strings if p.endswith("/*"))


class RequireRoleWSGI:
    """Require a valid bearer token holding app roles, for every request a WSGI app serves.

    - ``app``: the WSGI app to protect (for Flask, ``app.wsgi_app``);
    - ``roles``: one or more app roles; ``match="any"`` (default) or ``"all"``;
    - ``validator``: a ``ccflow.TokenValidator`` (or anything with ``validate_sync()`` and
      ``realm``); without one, ``TokenValidator.from_env()`` is built here, so a bad
      ``CCFLOW_*`` variable fails the app's creation with a ``ConfigurationError`` naming it;
    - ``exempt``: paths served without a token (exact, or a prefix written ``"/health/*"``),
      matched against ``PATH_INFO`` (the path as the app routes it, without ``SCRIPT_NAME``);
    - ``allow_preflight``: let CORS preflights through without a token (off by default).

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
    ) -> None:
        if not callable(app):
            raise ConfigurationError(
                "RequireRoleWSGI wraps a WSGI app: RequireRoleWSGI(app.wsgi_app, 'invokeRole')",
                setting="app",
            )
        if not roles:
            raise ConfigurationError("RequireRoleWSGI needs at least one role", setting="roles")
        self.app = app
        self.roles = checked_roles("RequireRoleWSGI", roles, match)
        self.match: Match = match
        self.exact, self.prefixes = exempt_paths("RequireRoleWSGI", exempt)
        self.allow_preflight = bool(allow_preflight)
        self.owns_validator = validator is None
        self.validator: SyncValidator = (
            TokenValidator.from_env()
            if validator is None
            else checked_sync_validator(validator, "RequireRoleWSGI")
        )

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Check the request's token, then call the wrapped app or send the refusal."""
        path: str = environ.get("PATH_INFO", "") or "/"
        if (
            path in self.exact
            or (self.prefixes and path.startswith(self.prefixes))
            or (self.allow_preflight and _is_preflight(environ))
        ):
            return self.app(environ, start_response)
        try:
            verdict = authenticate_sync(environ, self.validator, self.roles, match=self.match)
        except Exception as exc:  # every refusal, and validator bugs: never a 500
            return self._refuse(exc, environ, start_response)
        if verdict is None:
            return self._refuse(None, environ, start_response)
        environ[ENVIRON_KEY] = verdict
        return self.app(environ, start_response)

    def _refuse(
        self, exc: BaseException | None, environ: WSGIEnvironment, start_response: StartResponse
    ) -> list[bytes]:
        """Send the RFC 6750 answer for ``exc`` (``None``: no token), logged at DEBUG."""
        rejection = rejection_for(exc, self.validator.realm)
        logger.debug(
            "refused %s %r: %s %s",
            environ.get("REQUEST_METHOD"),
            environ.get("PATH_INFO", ""),
            rejection.status,
            rejection.error or "no token",
        )
        return send_rejection(rejection, start_response)

    def close(self) -> None:
        """Close the HTTP client of a validator built from the environment."""
        close: Callable[[], None] | None = getattr(self.validator, "close", None)
        if self.owns_validator and close is not None:
            close()

    def __repr__(self) -> str:
        return f"RequireRoleWSGI({', '.join(map(repr, self.roles))}, match={self.match!r})"


def _is_preflight(environ: Mapping[str, Any]) -> bool:
    """Whether the request is a CORS preflight: ``OPTIONS`` with Origin and the method asked."""
    return (
        environ.get("REQUEST_METHOD") == "OPTIONS"
        and "HTTP_ORIGIN" in environ
        and "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in environ
    )
