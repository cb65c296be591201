"""Claim rules for access tokens, with no IO and no clock (``now`` is passed in).

:func:`check_claims` turns the verified claims of a token into a :class:`ValidatedToken` or
raises :class:`~ccflow.errors.InvalidTokenError` (401) with a stable ``reason``:

==================  ==============================================================
reason              check
==================  ==============================================================
``claims``          ``exp`` missing; ``exp``/``nbf``/``iat`` not numbers
``expired``         ``exp <= now - leeway``
``not_yet_valid``   ``nbf > now + leeway``
``issued_at``       ``iat > now + leeway``
``version``         Azure AD: ``ver`` not ``"2.0"`` (or ``"1.0"`` with ``accept_v1``)
``issuer``          ``iss`` not one of the issuers (for multi-tenant, the ``{tenantid}``
                    template filled with the token's own ``tid``); ``tid`` not a string
``audience``        ``aud`` missing, empty, not a string or list of strings, or none of
                    the configured audiences (exact, case-sensitive match)
``client``          no caller id (``azp`` for v2, ``appid`` for v1; generic OIDC: the
                    first of ``azp``, ``client_id``, ``appid``), or not a non-empty string
``roles``           ``roles`` present but not a list of strings
==================  ==============================================================

and :class:`~ccflow.errors.InsufficientScopeError` (403) when the token is valid but its
caller (``reason="client"``) or tenant (``reason="tenant"``) is not on an allow-list. The
allow-lists compare GUIDs case-insensitively (Azure AD writes them in lower case; the portal
and people do not always), every other value exactly: see :func:`id_key`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Final, Literal

from ccflow.errors import ConfigurationError, InsufficientScopeError, InvalidTokenError

__all__ = [
    "ANY_TENANT",
    "TENANT_PLACEHOLDER",
    "ClaimRules",
    "IssuerRule",
    "ValidatedToken",
    "check_claims",
    "check_roles",
    "id_key",
]

TENANT_PLACEHOLDER: Final = "{tenantid}"
ANY_TENANT: Final = "*"
_GUID: Final = re.compile(r"[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}")


def id_key(value: str) -> str:
    """How an allow-listed client or tenant id compares: a GUID in lower case, anything else
    (a domain-less client id of another server, ``"*"``) as it is."""
    return value.lower() if _GUID.fullmatch(value) else value


def _listed(value: str, allowed: frozenset[str]) -> bool:
    """``id_key(value) in allowed``; an id already in that form (the usual lower-case GUID)
    is found as it is, and only another spelling pays for the regular expression."""
    return value in allowed or id_key(value) in allowed


def check_roles(
    granted: tuple[str, ...],
    required: Iterable[str] | str,
    *,
    match: Literal["any", "all"] = "any",
) -> None:
    """Raise :class:`~ccflow.errors.InsufficientScopeError` unless ``granted`` holds any
    (``match="any"``) or all (``match="all"``) of ``required``. Roles compare exactly."""
    wanted = (required,) if isinstance(required, str) else tuple(required)
    if not wanted or not all(isinstance(r, str) and r for r in wanted):
        raise ConfigurationError("required roles must be non-empty strings", setting="roles")
    if match == "any":
        ok = any(r in granted for r in wanted)
    elif match == "all":
        ok = all(r in granted for r in wanted)
    else:
        raise ConfigurationError("match must be 'any' or 'all'", setting="match")
    if not ok:
        joined = ", ".join(wanted)
        which = "one of the roles" if match == "any" and len(wanted) > 1 else "the role(s)"
        raise InsufficientScopeError(
            f"the caller lacks {which}: {joined}", reason="role", required=wanted
        )


@dataclass(frozen=True, slots=True)
class ValidatedToken:
    """An access token that passed every check: signature, time, issuer, audience, caller.

    ::

        token = await validator.validate(raw)
        token.client_id, token.tenant_id, token.roles, token.version, token.expires_on
        token.require_roles(("invokeRole",))          # raises InsufficientScopeError (403)
    """

    claims: Mapping[str, Any] = field(repr=False, compare=False)
    """Every claim of the token, read-only."""
    client_id: str
    """The caller's application (client) id: ``azp`` (v2), ``appid`` (v1) or ``client_id``."""
    tenant_id: str | None
    """The ``tid`` claim, or ``None`` when the token has none (generic OIDC)."""
    roles: tuple[str, ...]
    """The ``roles`` claim (app roles granted to the caller); ``()`` when absent."""
    version: str | None
    """The ``ver`` claim: ``"2.0"``, ``"1.0"``, or ``None`` when absent."""
    expires_on: int
    """The ``exp`` claim, Unix seconds."""

    def require_roles(
        self, roles: Iterable[str] | str, *, match: Literal["any", "all"] = "any"
    ) -> None:
        """Raise :class:`~ccflow.errors.InsufficientScopeError` unless the token holds any
        (default) or all of ``roles``."""
        check_roles(self.roles, roles, match=match)


@dataclass(frozen=True, slots=True)
class IssuerRule:
    """One acceptable issuer: exact, or a multi-tenant template containing ``{tenantid}``.

    ``version`` ties the issuer to a token version (Azure AD: ``"2.0"`` or ``"1.0"``);
    ``None`` accepts any ``ver`` or none (generic OIDC).
    """

    issuer: str
    version: str | None = None

    def matches(self, iss: str, tid: str | None) -> bool:
        """True when ``iss`` is this issuer (the template filled with ``tid``)."""
        if TENANT_PLACEHOLDER in self.issuer:
            return bool(tid) and iss == self.issuer.replace(TENANT_PLACEHOLDER, tid or "")
        return iss == self.issuer


@dataclass(frozen=True, slots=True)
class ClaimRules:
    """Everything :func:`check_claims` needs, fixed at configuration and discovery time."""

    issuers: tuple[IssuerRule, ...]
    audiences: frozenset[str]
    azure: bool = True
    """Azure AD mode: ``ver`` is required and decides ``azp`` vs ``appid``."""
    accept_v1: bool = False
    allowed_clients: frozenset[str] | None = None
    """Caller ids (stored as :func:`id_key` gives them); ``None``: any caller."""
    allowed_tenants: frozenset[str] | None = None
    """Tenant ids (stored as :func:`id_key` gives them); ``None``: any tenant; ``{"*"}`` likewise,
    spelled out for multi-tenant APIs."""
    leeway: float = 60.0
    exact_issuers: frozenset[tuple[str, str]] = field(init=False, repr=False, compare=False)
    """``(ver, iss)`` pairs accepted as they are: every rule without a ``{tenantid}`` template
    and with a version (Azure AD), so the usual token's issuer is one set lookup."""

    def __post_init__(self) -> None:
        # The allow-lists are kept as id_key() gives them, so a check is one set lookup.
        for name in ("allowed_clients", "allowed_tenants"):
            values: frozenset[str] | None = getattr(self, name)
            if values is not None:
                object.__setattr__(self, name, frozenset(map(id_key, values)))
        exact = frozenset(
            (rule.version, rule.issuer)
            for rule in self.issuers
            if rule.version is not None and TENANT_PLACEHOLDER not in rule.issuer
        )
        object.__setattr__(self, "exact_issuers", exact)


def _invalid(message: str, reason: str, claim: str) -> InvalidTokenError:
    return InvalidTokenError(message, reason=reason, claim=claim)


_MISSING: Final[Any] = object()


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name, _MISSING)
    if value is _MISSING:
        return None
    # type() rather than isinstance(): bool is an int subclass and is not a time.
    if type(value) is int or (type(value) is float and math.isfinite(value)):
        return value
    raise _invalid(f"the token's {name} claim is not a number", "claims", name)


def _check_time(claims: Mapping[str, Any], now: float, leeway: float) -> int:
    exp = _number(claims, "exp")
    if exp is None:
        raise _invalid("the token has no exp claim", "claims", "exp")
    _within(exp, _number(claims, "nbf"), _number(claims, "iat"), now, leeway)
    return int(exp)


def _within(exp: float, nbf: float | None, iat: float | None, now: float, leeway: float) -> None:
    if exp <= now - leeway:
        raise _invalid("the token has expired", "expired", "exp")
    if nbf is not None and nbf > now + leeway:
        raise _invalid("the token is not yet valid (nbf)", "not_yet_valid", "nbf")
    if iat is not None and iat > now + leeway:
        raise _invalid("the token was issued in the future (iat)", "issued_at", "iat")


def _check_audience(claims: Mapping[str, Any], audiences: frozenset[str]) -> None:
    aud = claims.get("aud")
    values: tuple[Any, ...] | list[Any]
    if type(aud) is str:
        values = (aud,)
    elif type(aud) is list:
        values = aud
    else:
        raise _invalid("the token's audience (aud) is missing or malformed", "audience", "aud")
    if not values:
        raise _invalid("the token's audience (aud) is missing or malformed", "audience", "aud")
    for value in values:
        if type(value) is not str or not value:
            raise _invalid("the token's audience (aud) is missing or malformed", "audience", "aud")
    if audiences.isdisjoint(values):
        raise _invalid("the token is for another audience", "audience", "aud")


def _optional_str(claims: Mapping[str, Any], name: str, reason: str) -> str | None:
    value = claims.get(name, _MISSING)
    if value is _MISSING:
        return None
    if type(value) is not str:
        raise _invalid(f"the token's {name} claim is not a string", reason, name)
    if not value:
        raise _invalid(f"the token's {name} claim is empty", reason, name)
    return value


def check_claims(
    claims: Mapping[str, Any], rules: ClaimRules, *, now: float, owned: bool = False
) -> ValidatedToken:
    """Apply ``rules`` to signature-verified ``claims`` at time ``now`` (Unix seconds).

    The verdict's ``claims`` are a read-only copy of ``claims``; with ``owned=True`` (a
    ``dict`` nobody else holds, such as a fresh parse's) a read-only view of it instead.

    Each check first tries the shape every Azure AD and OIDC token has (integer times, string
    ``iss``/``aud``/caller, a list of roles) with plain comparisons, and hands anything else to
    the general helpers, which accept the same values and word every refusal: the order of the
    checks, and so the error a token gets, is the same either way.
    """
    get = claims.get
    exp: Any = get("exp", _MISSING)
    nbf: Any = get("nbf", _MISSING)
    iat: Any = get("iat", _MISSING)
    leeway = rules.leeway
    if (
        type(exp) is int
        and (nbf is _MISSING or type(nbf) is int)
        and (iat is _MISSING or type(iat) is int)
    ):
        _within(
            exp, None if nbf is _MISSING else nbf, None if iat is _MISSING else iat, now, leeway
        )
        expires_on: int = exp
    else:
        expires_on = _check_time(claims, now, leeway)

    ver = get("ver")
    version = ver if isinstance(ver, str) else None
    if rules.azure:
        if ver == "1.0":
            if not rules.accept_v1:
                raise _invalid("v1.0 tokens are not accepted by this API", "version", "ver")
        elif ver != "2.0":
            raise _invalid("the token's version (ver) is missing or unknown", "version", "ver")

    tid = get("tid", _MISSING)
    if type(tid) is not str or not tid:
        tid = _optional_str(claims, "tid", "issuer")
    iss = get("iss")
    if not isinstance(iss, str):
        raise _invalid("the token's issuer (iss) is missing or not a string", "issuer", "iss")
    if (version, iss) not in rules.exact_issuers:
        for rule in rules.issuers:
            if (rule.version is None or rule.version == version) and rule.matches(iss, tid):
                break
        else:
            raise _invalid("the token is from another issuer", "issuer", "iss")

    aud = get("aud")
    if type(aud) is not str or not aud or aud not in rules.audiences:
        _check_audience(claims, rules.audiences)

    client_id: str | None
    if rules.azure:
        client_claim = "appid" if version == "1.0" else "azp"
        client_id = get(client_claim)
        if type(client_id) is not str or not client_id:
            client_id = _optional_str(claims, client_claim, "client")
    else:
        client_claim = "azp"
        client_id = None
        for name in ("azp", "client_id", "appid"):
            client_id = _optional_str(claims, name, "client")
            if client_id is not None:
                client_claim = name
                break
    if client_id is None:
        raise _invalid(f"the token names no caller ({client_claim})", "client", client_claim)

    roles_claim = get("roles", ())
    if type(roles_claim) is not list and type(roles_claim) is not tuple:
        raise _invalid("the token's roles claim is not a list of strings", "roles", "roles")
    for role in roles_claim:
        if type(role) is not str:
            raise _invalid("the token's roles claim is not a list of strings", "roles", "roles")

    allowed = rules.allowed_clients
    if allowed is not None and not _listed(client_id, allowed):
        raise InsufficientScopeError("the calling application is not allowed", reason="client")
    tenants = rules.allowed_tenants
    if (
        tenants is not None
        and ANY_TENANT not in tenants
        and (tid is None or not _listed(tid, tenants))
    ):
        raise InsufficientScopeError("the caller's tenant is not allowed", reason="tenant")

    view = MappingProxyType(claims if owned and type(claims) is dict else dict(claims))
    return _validated_token(view, client_id, tid, tuple(roles_claim), version, expires_on)


# ValidatedToken(...) costs a frozen dataclass's __init__ (six object.__setattr__ calls through
# the type's call machinery); filling the slots through their descriptors builds the same
# object in half the time, once per fresh token.
_FIELDS: Final = ("claims", "client_id", "tenant_id", "roles", "version", "expires_on")
if tuple(f.name for f in fields(ValidatedToken)) != _FIELDS:  # pragma: no cover
    raise RuntimeError("_validated_token no longer matches ValidatedToken's fields")
(_SET_CLAIMS, _SET_CLIENT, _SET_TENANT, _SET_ROLES, _SET_VERSION, _SET_EXPIRES) = (
    ValidatedToken.__dict__[name].__set__ for name in _FIELDS
)
_new_object: Final = object.__new__


def _validated_token(
    claims: Mapping[str, Any],
    client_id: str,
    tenant_id: str | None,
    roles: tuple[str, ...],
    version: str | None,
    expires_on: int,
) -> ValidatedToken:
    token: ValidatedToken = _new_object(ValidatedToken)
    _SET_CLAIMS(token, claims)
    _SET_CLIENT(token, client_id)
    _SET_TENANT(token, tenant_id)
    _SET_ROLES(token, roles)
    _SET_VERSION(token, version)
    _SET_EXPIRES(token, expires_on)
    return token
