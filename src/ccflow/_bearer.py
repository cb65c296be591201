"""Bearer tokens over HTTP, whatever the framework (RFC 6750).

Every face that protects an API (``ccflow.starlette``'s middleware and backend, the FastAPI
dependency, WSGI, Django, the gate) takes the same steps, written here once::

    token = bearer_token(headers)             # None: no bearer credential; raises for a bad header
    verdict = await validator.validate(token) # every request; the validator caches inside
    check_rule(rule, verdict)                 # AccessRule: roles or scopes, after the claims

(:func:`authenticate` is those three lines; :func:`authenticate_blocking` the same through
``validate_sync``, for WSGI threads), and answers a refusal with :func:`refuse`: a
:class:`Rejection` it sends over HTTP or, before accepting, on a WebSocket, after one INFO
line on the ``ccflow.api`` logger and the face's ``on_refusal`` hook, given a
:class:`Refusal`. :class:`Principal` is the caller a face hands to application code. The
table of answers is in :mod:`ccflow.starlette`'s docstring; why the steps are in this order
is in ``docs/api.md``; the rules in ``docs/scopes.md``.

A face, whatever its framework::

    rule = required_rule("MyFace", roles, scopes, match)     # at construction
    exempt = Paths(checked_paths(exempt, "exempt", "MyFace"))
    ...
    if path in exempt: serve
    try:
        verdict = await authenticate(headers, validator, rule)   # or authenticate_blocking
    except Exception as exc:
        answer refuse(exc, realm, method=..., path=..., hook=on_refusal)
    if verdict is None: answer refuse(None, ...)                  # no token: 401
    serve, handing the app Principal.of(verdict)
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

from ccflow._core.claims import AccessRule
from ccflow.errors import (
    ConfigurationError,
    InsufficientScopeError,
    InvalidRequestError,
    InvalidTokenError,
    KeysUnavailableError,
)
from ccflow.validation import TokenValidator

if TYPE_CHECKING:
    from starlette.responses import Response
    from starlette.types import Receive, Scope, Send

__all__ = [
    "ANY_VALID_TOKEN",
    "AccessRule",
    "Match",
    "Principal",
    "Refusal",
    "RefusalHook",
    "Rejection",
    "RuleOwner",
    "SyncValidator",
    "Validator",
    "ValidatorHolder",
    "Verdict",
    "authenticate",
    "authenticate_blocking",
    "bearer_token",
    "check_rule",
    "Paths",
    "checked_hook",
    "checked_paths",
    "checked_rule",
    "checked_validator",
    "is_b64token",
    "listed",
    "refuse",
    "rejection_for",
    "report_refusal",
    "required_rule",
    "rule_repr",
    "validator_from_env",
]

logger = logging.getLogger("ccflow.starlette")
api_logger = logging.getLogger("ccflow.api")

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

    @property
    def scopes(self) -> tuple[str, ...]:
        """The delegated scopes (``scp``); read only by rules that name scopes."""

    def require_roles(self, roles: Sequence[str], *, match: Match = "any") -> object:
        """Raise ``InsufficientScopeError`` unless the roles are held (any or all of them)."""


class Validator(Protocol):
    """What the faces need of a validator (``ccflow.TokenValidator`` is one)."""

    @property
    def realm(self) -> str:
        """The realm announced in ``WWW-Authenticate``."""

    async def validate(self, token: str) -> Verdict:
        """Validate a raw token (without ``Bearer``); raise a ccflow error when it is refused.

        Called for every request: a subclass or wrapper that adds a check of its own (a
        revocation list) sees every token, repeated or not.
        """

    async def aclose(self) -> None:
        """Release the validator's HTTP client."""


class SyncValidator(Protocol):
    """What the WSGI faces need of a validator (``ccflow.TokenValidator`` is one)."""

    @property
    def realm(self) -> str:
        """The realm announced in ``WWW-Authenticate``."""

    def validate_sync(self, token: str) -> Verdict:
        """Validate a raw token (without ``Bearer``); raise a ccflow error when it is refused."""


# ---------------------------------------------------------------------------------------------
# The validator a face uses


def validator_from_env() -> Validator:
    """``TokenValidator.from_env()``: raises ``ConfigurationError`` naming a bad variable."""
    validator: Validator = TokenValidator.from_env()
    return validator


def checked_validator(validator: Validator, owner: str) -> Validator:
    """``validator``, checked now: a wrong object would otherwise fail on every request."""
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


def checked_rule(
    owner: str, roles: tuple[object, ...], scopes: object = (), match: object = "any"
) -> AccessRule:
    """The :class:`AccessRule` of a face's ``roles``, ``scopes`` (a string is one) and ``match``,
    each checked, with errors naming the face."""
    for role in roles:
        if not isinstance(role, str) or not role:
            raise ConfigurationError(
                f"{owner} roles must be non-empty strings, got {role!r}", setting="roles"
            )
    if match not in ("any", "all"):
        raise ConfigurationError(
            f'{owner} match must be "any" or "all", got {match!r}', setting="match"
        )
    if isinstance(scopes, str):
        scopes = (scopes,)
    if not isinstance(scopes, Iterable):
        raise ConfigurationError(f"{owner} scopes must be a list of strings", setting="scopes")
    given = tuple(scopes)
    for scope in given:
        if not isinstance(scope, str) or not scope or any(c.isspace() for c in scope):
            raise ConfigurationError(
                f"{owner} scopes must be non-empty strings without spaces, got {scope!r}",
                setting="scopes",
            )
    return AccessRule(roles=roles, scopes=given, match=match)  # type: ignore[arg-type]


class RuleOwner:
    """A face that checks one :class:`AccessRule`: its ``roles`` and ``match`` read from it."""

    __slots__ = ()
    rule: AccessRule

    @property
    def roles(self) -> tuple[str, ...]:
        """The roles of the rule."""
        return self.rule.roles

    @property
    def match(self) -> Match:
        """``"any"`` or ``"all"``."""
        return self.rule.match


def rule_repr(face: object, rule: AccessRule) -> str:
    """How ``RequireRole`` and its kin show themselves: ``RequireRole('a', match='any')``."""
    named = ", ".join(map(repr, rule.roles or rule.scopes))
    extra = f", or_scopes={list(rule.scopes)!r}" if rule.roles and rule.scopes else ""
    return f"{type(face).__name__}({named}, match={rule.match!r}{extra})"


def checked_hook(hook: object, owner: str) -> RefusalHook | None:
    """``on_refusal``, checked: ``None`` or a callable taking a :class:`Refusal`."""
    if hook is not None and not callable(hook):
        raise ConfigurationError(
            f"{owner} on_refusal must be a callable taking a Refusal, got {type(hook).__name__}",
            setting="on_refusal",
        )
    return hook  # type: ignore[return-value,unused-ignore]  # checked above


def listed(values: object, owner: str, setting: str) -> tuple[object, ...]:
    """A list argument of a face as a tuple (a string is one value); its items are checked
    by whoever uses them."""
    if isinstance(values, str):
        return (values,)
    if not isinstance(values, Iterable):
        raise ConfigurationError(f"{owner} {setting} must be a list", setting=setting)
    return tuple(values)


def required_rule(
    owner: str, roles: tuple[object, ...], scopes: object, match: object
) -> AccessRule:
    """The rule of a face that guards every request it sees (``RequireRole`` and its kin):
    roles or scopes, one at least, each checked as :func:`checked_rule` checks them."""
    scopes = (scopes,) if isinstance(scopes, str) else scopes
    given = tuple(scopes) if isinstance(scopes, Iterable) else scopes
    if not roles and not given:
        raise ConfigurationError(f"{owner} needs at least one role", setting="roles")
    if any(callable(role) for role in roles):
        # add_middleware(RequireRole, "invokeRole") hands the app over as a role.
        raise ConfigurationError(
            f"{owner}(...) builds the middleware: write "
            f"app.add_middleware({owner}('invokeRole', ...)), not "
            f"app.add_middleware({owner}, 'invokeRole', ...)",
            setting="roles",
        )
    return checked_rule(owner, roles, given, match)


# ---------------------------------------------------------------------------------------------
# Paths served without a token (exempt) or left to per-route rules


def checked_paths(paths: object, setting: str, owner: str) -> tuple[str, ...]:
    """``exempt`` or ``per_route`` as a tuple of paths (a string is one path), each checked:
    exact paths, or a prefix written ``"/health/*"``."""
    if isinstance(paths, str):
        given: tuple[object, ...] = (paths,)
    elif isinstance(paths, Iterable):
        given = tuple(paths)
    else:
        raise ConfigurationError(
            f"{owner} {setting} must be a list of paths, got {paths!r}", setting=setting
        )
    for path in given:
        if not isinstance(path, str) or not path.startswith("/"):
            raise ConfigurationError(
                f"{owner} {setting} paths must start with '/', got {path!r}", setting=setting
            )
        if path == "/*" and setting == "exempt":
            # Every path would be served without a token: almost surely a mistake, and one
            # that fails open.
            raise ConfigurationError(
                f"{owner} exempt '/*' would exempt every path; exempt the paths that "
                f"need no token (such as '/healthz' or '/public/*'), or leave {owner} off",
                setting="exempt",
            )
    return given  # type: ignore[return-value]  # each one checked above


class Paths:
    """A set of paths as :func:`checked_paths` checked them: exact, or ``prefix/*`` (which
    covers what starts with ``prefix/``). ``path in paths`` is the whole test."""

    __slots__ = ("exact", "prefixes")

    def __init__(self, paths: Iterable[str]) -> None:
        paths = tuple(paths)
        self.exact = frozenset(p for p in paths if not p.endswith("/*"))
        self.prefixes = tuple(p[:-1] for p in paths if p.endswith("/*"))

    def __contains__(self, path: str) -> bool:
        return path in self.exact or bool(self.prefixes and path.startswith(self.prefixes))

    def __bool__(self) -> bool:
        return bool(self.exact or self.prefixes)


class ValidatorHolder:
    """A face's validator: the one it was given, or ``TokenValidator.from_env()`` built on
    first use.

    Reading the environment at first use, not at construction, lets a module that declares
    ``BearerClaims("invokeRole")`` be imported without any ``CCFLOW_*`` variable set.
    :meth:`aclose` closes only a validator built here; one passed in is its owner's to close.
    """

    def __init__(self, validator: Validator | None, owner: str) -> None:
        self._given = None if validator is None else checked_validator(validator, owner)
        self._built: Validator | None = None

    @property
    def validator(self) -> Validator:
        """The validator; the first use builds it from the environment if none was given."""
        if self._given is not None:
            return self._given
        if self._built is None:
            self._built = validator_from_env()
        return self._built

    @property
    def owns_validator(self) -> bool:
        """Whether the validator comes from the environment (and :meth:`aclose` closes it)."""
        return self._given is None

    async def aclose(self) -> None:
        """Close the validator built from the environment; a validator passed in stays open
        for its owner to close."""
        if self._built is not None:
            await self._built.aclose()


# ---------------------------------------------------------------------------------------------
# The Authorization header (RFC 6750 section 2.1)

_AUTHORIZATION = b"authorization"
# b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*", re.ASCII)
# RFC 7230 token: what an auth-scheme name may look like.
_SCHEME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_NOT_B64TOKEN = "malformed bearer token: not RFC 6750 b64token syntax"


def bearer_token(
    headers: Iterable[tuple[bytes, bytes]], *, check_syntax: bool = True
) -> str | None:
    """The bearer token of an ASGI header list, or ``None`` when there is no bearer credential.

    The scheme name is case-insensitive, and blanks around the token are tolerated. Another
    scheme (``Basic ...``) counts as no bearer credential. Raises
    :class:`~ccflow.errors.InvalidRequestError` for more than one Authorization header, an
    empty one, ``Bearer`` without a token, or a token that is not ASCII or (with
    ``check_syntax``, the default) not RFC 6750 ``b64token`` syntax (see :func:`is_b64token`).
    """
    value: bytes | None = None
    for name, raw in headers:
        # ASGI servers send lower-case names; tolerate hand-built scopes that do not.
        if name.lower() == _AUTHORIZATION:
            if value is not None:
                raise InvalidRequestError("more than one Authorization header")
            value = raw
    if value is None:
        return None
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
    try:
        token = rest.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidRequestError(_NOT_B64TOKEN) from None
    if check_syntax and not is_b64token(token):
        raise InvalidRequestError(_NOT_B64TOKEN)
    return token


def is_b64token(token: str) -> bool:
    """Whether ``token`` has RFC 6750's ``b64token`` syntax (what a bearer token may contain)."""
    return _B64TOKEN.fullmatch(token) is not None


ANY_VALID_TOKEN: Final = AccessRule()
"""The rule of a face that names no roles or scopes: any token the validator accepts."""


async def authenticate(
    headers: Iterable[tuple[bytes, bytes]], validator: Validator, rule: AccessRule = ANY_VALID_TOKEN
) -> Verdict | None:
    """The verdict on a request's bearer token, with ``rule`` checked; ``None`` for no token.

    Raises what :func:`bearer_token`, ``validator.validate()`` and :meth:`AccessRule.check`
    raise; :func:`refuse` turns any of it into the answer. The rule is checked only after the
    signature and claims pass, so a forged token that also lacks the role is a 401, not a 403.
    """
    token = bearer_token(headers)
    if token is None:
        return None
    verdict = await validator.validate(token)
    check_rule(rule, verdict)
    return verdict


def authenticate_blocking(
    headers: Iterable[tuple[bytes, bytes]],
    validator: SyncValidator,
    rule: AccessRule = ANY_VALID_TOKEN,
) -> Verdict | None:
    """:func:`authenticate` for WSGI threads: the same steps, through ``validate_sync``."""
    token = bearer_token(headers)
    if token is None:
        return None
    verdict = validator.validate_sync(token)
    check_rule(rule, verdict)
    return verdict


def check_rule(rule: AccessRule, verdict: Verdict) -> None:
    """``rule.check(verdict)``; a refusal names the verdict's caller (what the log shows)."""
    try:
        rule.check(verdict)
    except InsufficientScopeError as exc:
        exc.client_id, exc.tenant_id = verdict.client_id, verdict.tenant_id
        raise


# ---------------------------------------------------------------------------------------------
# RFC 6750 answers

_QUOTED_UNSAFE = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")


def _quoted(text: str) -> str:
    """``text`` made safe inside an RFC 6750 quoted string ('"' and '\\' replaced, not escaped)."""
    # Many clients do not unescape quoted-pairs.
    return _QUOTED_UNSAFE.sub("?", text.replace('"', "'").replace("\\", "/"))


@dataclass(frozen=True, slots=True)
class Rejection:
    """A refused request: status, RFC 6750 challenge and JSON body, ready to send.

    ``error`` is ``None`` (no token), ``"invalid_request"``, ``"invalid_token"``,
    ``"insufficient_scope"`` or ``"temporarily_unavailable"`` (503); ``www_authenticate`` is
    ``None`` for a 503. Calling it as an ASGI app sends it on an HTTP or WebSocket scope.
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

    @property
    def websocket_close(self) -> tuple[int, str]:
        """The close code and reason that refuse a WebSocket handshake.

        1008 (policy violation) for a refused token; 1013 (try again later) when the keys to
        judge it are missing, so a client does not take an outage for a bad token. The reason
        fits the 123 bytes a close frame allows.
        """
        reason = self.description.encode()[:120].decode("utf-8", "ignore")
        return (1013 if self.status == 503 else 1008), reason

    def response(self) -> Response:
        """The same answer as a Starlette ``Response``."""
        from starlette.responses import Response  # the rest of this module needs no framework

        return Response(
            self.body, status_code=self.status, headers=self.headers, media_type="application/json"
        )

    async def send_http(self, send: Send) -> None:
        """Send the answer on a raw ASGI ``send``."""
        body = self.body
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        raw.append((b"content-type", b"application/json"))
        raw.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": self.status, "headers": raw})
        await send({"type": "http.response.body", "body": body})

    async def send_websocket(self, receive: Receive, send: Send) -> None:
        """Refuse a WebSocket handshake: wait for it, then close before accepting."""
        # Close before accept: the server answers the upgrade with an HTTP error instead of
        # opening the socket.
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        code, reason = self.websocket_close
        await send({"type": "websocket.close", "code": code, "reason": reason})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the answer as the scope's protocol wants it (HTTP or WebSocket)."""
        if scope["type"] == "websocket":
            await self.send_websocket(receive, send)
        else:
            await self.send_http(send)


def _challenge(realm: str, error: str | None = None, description: str = "", scope: str = "") -> str:
    """The ``WWW-Authenticate`` value: ``Bearer realm="..."`` and the error's parameters."""
    parts = [f'Bearer realm="{_quoted(realm)}"']
    if error is not None:
        parts.append(f'error="{error}"')
        if description:
            parts.append(f'error_description="{_quoted(description)}"')
        if scope:
            parts.append(f'scope="{_quoted(scope)}"')
    return ", ".join(parts)


def _refusal(status: int, error: str, description: str, realm: str, scope: str = "") -> Rejection:
    """A :class:`Rejection` whose challenge carries ``error`` and its description."""
    return Rejection(status, error, description, _challenge(realm, error, description, scope))


def rejection_for(exc: BaseException | None, realm: str) -> Rejection:
    """The RFC 6750 answer for a refusal: ``None`` means no bearer token was presented.

    ``InvalidRequestError`` -> 400, ``InvalidTokenError`` -> 401, ``InsufficientScopeError``
    -> 403, ``KeysUnavailableError`` -> 503; anything else (a bug, never the caller's fault
    alone) -> 401 ``invalid_token`` with a generic description, so no input makes a 500.
    """
    if exc is None:
        return Rejection(401, None, "a bearer access token is required", _challenge(realm))
    if isinstance(exc, InvalidRequestError):
        return _refusal(400, "invalid_request", exc.message, realm)
    if isinstance(exc, InvalidTokenError):
        return _refusal(401, "invalid_token", exc.message, realm)
    if isinstance(exc, InsufficientScopeError):
        return _refusal(403, "insufficient_scope", exc.message, realm, " ".join(exc.required))
    if isinstance(exc, KeysUnavailableError):
        return Rejection(503, "temporarily_unavailable", exc.message, None, exc.retry_after)
    logger.error("token validation failed unexpectedly (%s)", type(exc).__name__)
    return _refusal(401, "invalid_token", "the token could not be validated", realm)


# ---------------------------------------------------------------------------------------------
# Refusals: one log line and the on_refusal hook


@dataclass(frozen=True, slots=True)
class Refusal:
    """One refused request, as the ``on_refusal`` hook and the log line see it.

    ``reason`` is stable, for metrics: ``"no_token"``, ``"invalid_request"``, an
    ``InvalidTokenError`` reason (``"expired"``, ``"signature"``, ``"audience"``, ...), an
    ``InsufficientScopeError`` reason (``"role"``, ``"scope"``, ``"role_or_scope"``,
    ``"client"``, ``"tenant"``), ``"keys_unavailable"`` or ``"error"``. ``client_id`` and
    ``tenant_id`` are set only when the token was authentic (its signature verified: the 403s),
    never from a token that failed a check. ``required`` lists the roles and scopes that would
    have done. The token itself is never here.
    """

    status: int
    error: str | None
    reason: str
    client_id: str | None = None
    tenant_id: str | None = None
    method: str = ""
    path: str = ""
    required: tuple[str, ...] = ()


RefusalHook = Callable[[Refusal], object]
"""``on_refusal``: called with each :class:`Refusal`; what it returns is ignored."""


def _reason(exc: BaseException | None) -> str:
    """The stable reason of a refusal's cause."""
    if exc is None:
        return "no_token"
    if isinstance(exc, InvalidRequestError):
        return "invalid_request"
    if isinstance(exc, (InvalidTokenError, InsufficientScopeError)):
        return exc.reason
    if isinstance(exc, KeysUnavailableError):
        return "keys_unavailable"
    return "error"


def _text(value: object) -> str | None:
    """A claim fit for a log field: a string, at most 100 printable characters, else ``None``."""
    if not isinstance(value, str) or not value:
        return None
    return _loggable(value[:100])


def refusal_of(
    rejection: Rejection,
    exc: BaseException | None,
    *,
    method: str = "",
    path: str = "",
    verdict: Verdict | Principal | None = None,
) -> Refusal:
    """The :class:`Refusal` record of ``rejection`` (caused by ``exc``; ``None``: no token).

    A 403 names its caller: from ``verdict`` when the face has it, else as the check that
    refused the verified token named it in the error (never from an unverified token).
    """
    client_id = tenant_id = None
    if isinstance(exc, InsufficientScopeError):
        caller = verdict if verdict is not None else exc
        client_id, tenant_id = _text(caller.client_id), _text(caller.tenant_id)
    required = exc.required if isinstance(exc, InsufficientScopeError) else ()
    return Refusal(
        rejection.status,
        rejection.error,
        _reason(exc),
        client_id,
        tenant_id,
        _loggable(method),
        _loggable(path),
        required,
    )


def report_refusal(refusal: Refusal, hook: RefusalHook | None = None) -> None:
    """Log ``refusal`` at INFO on ``ccflow.api`` (fields in ``extra``), then call ``hook``.

    A hook that raises is logged (one WARNING line naming the exception type) and otherwise
    ignored: a metrics bug never turns a 401 or 403 into a 500.
    """
    if api_logger.isEnabledFor(logging.INFO):
        api_logger.info(
            "refused %s %s: %s %s (%s)%s",
            refusal.method or "-",
            refusal.path or "-",
            refusal.status,
            refusal.error or "no token",
            refusal.reason,
            f" client={refusal.client_id} tenant={refusal.tenant_id}"
            if refusal.client_id or refusal.tenant_id
            else "",
            extra={
                "ccflow_status": refusal.status,
                "ccflow_error": refusal.error,
                "ccflow_reason": refusal.reason,
                "ccflow_client_id": refusal.client_id,
                "ccflow_tenant_id": refusal.tenant_id,
                "ccflow_method": refusal.method,
                "ccflow_path": refusal.path,
            },
        )
    if hook is None:
        return
    try:
        hook(refusal)
    except Exception as exc:  # the answer is sent regardless
        api_logger.warning("the on_refusal hook failed (%s); refusal sent", type(exc).__name__)


def refuse(
    exc: BaseException | None,
    realm: str,
    *,
    method: str = "",
    path: str = "",
    hook: RefusalHook | None = None,
    verdict: Verdict | Principal | None = None,
) -> Rejection:
    """The answer to a refused request (``exc``; ``None``: no token), logged and given to
    ``hook`` (:func:`report_refusal`): what every face sends, however it sends it."""
    rejection = rejection_for(exc, realm)
    refusal = refusal_of(rejection, exc, method=method, path=path, verdict=verdict)
    report_refusal(refusal, hook)
    return rejection


_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def _loggable(text: str) -> str:
    """``text`` with everything but printable ASCII escaped, fit for one log line."""
    # The server percent-decodes the path: "%0a" arrives as a line break. Escaped, a caller
    # cannot write log lines (or terminal escapes) of its own.
    if text.isascii() and text.isprintable():
        return text
    return _UNPRINTABLE.sub(lambda m: ascii(m.group())[1:-1], text)


# ---------------------------------------------------------------------------------------------
# The caller, for application code


@dataclass(frozen=True, slots=True, eq=False)
class Principal(Mapping[str, Any]):
    """The caller of a request that passed: who it is and what it holds.

    ``client_id`` (``azp``/``appid``), ``tenant_id`` (``tid``), ``roles``, ``scopes`` (``scp``),
    ``object_id`` (``oid``: the user, or the caller's service principal), ``is_app_only``, and
    ``claims``, every claim read-only. It is also a read-only mapping of the claims, so code
    written for the claims (``principal["roles"]``, ``principal.get("azp")``) keeps working.
    """

    client_id: str | None
    tenant_id: str | None
    roles: tuple[str, ...]
    scopes: tuple[str, ...]
    object_id: str | None
    claims: Mapping[str, Any] = field(repr=False)

    @classmethod
    def of(cls, verdict: Verdict) -> Principal:
        """The principal of a validator's verdict."""
        claims = verdict.claims
        oid = claims.get("oid")
        return cls(
            client_id=verdict.client_id,
            tenant_id=verdict.tenant_id,
            roles=tuple(verdict.roles),
            scopes=tuple(getattr(verdict, "scopes", ())),
            object_id=oid if isinstance(oid, str) else None,
            claims=claims,
        )

    @property
    def is_app_only(self) -> bool:
        """Whether an application called for itself (no ``scp``, ``idtyp`` not ``"user"``)."""
        return not self.scopes and self.claims.get("idtyp") != "user"

    @property
    def name(self) -> str | None:
        """The user's display name (``name``) in a delegated token, else ``None``."""
        name = self.claims.get("name")
        return name if isinstance(name, str) else None

    def __getitem__(self, key: str) -> Any:
        return self.claims[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.claims)

    def __len__(self) -> int:
        return len(self.claims)
