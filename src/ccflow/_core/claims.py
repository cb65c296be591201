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
``type``            generic OIDC, in ``version``'s place: a ``nonce`` claim (an ID token,
                    not an access token)
``issuer``          ``iss`` not one of the issuers (for multi-tenant, the ``{tenantid}``
                    template filled with the token's own ``tid``); ``tid`` not a string
``audience``        ``aud`` missing, empty, not a string or list of strings, or none of
                    the configured audiences (exact, case-sensitive match)
``client``          no caller id (``azp`` for v2, ``appid`` for v1; generic OIDC: the
                    first of ``azp``, ``client_id``, ``appid``), or not a non-empty string
``roles``           ``roles`` present but not a list of strings
``scopes``          ``scp`` (generic OIDC: else ``scope``) present but neither a
                    space-separated string nor a list of strings
==================  ==============================================================

It raises :class:`~ccflow.errors.InsufficientScopeError` (403) instead when the token is
valid but its caller (``reason="client"``) or tenant (``reason="tenant"``) is not on an
allow-list. Each row, and each allow-list, is one small check; :func:`claim_checks` picks the
list a configuration needs (Azure AD v2, v1 too, generic OIDC, multi-tenant, allow-lists), in
the order above. The allow-lists compare GUIDs case-insensitively (Azure AD writes them in
lower case; the portal and people do not always), every other value exactly: see
:func:`id_key`.

:class:`AccessRule` is what an API asks of a valid token beyond that: app roles (``roles``),
delegated scopes (``scp``), or either; every face (the ASGI middleware and backend, the
FastAPI dependency, per-route rules, WSGI, Django, the gate) checks it with
:meth:`AccessRule.check`. See ``docs/scopes.md``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NoReturn, Protocol

from ccflow.errors import ConfigurationError, InsufficientScopeError, InvalidTokenError

__all__ = [
    "ANY_TENANT",
    "AccessRule",
    "TENANT_PLACEHOLDER",
    "ClaimRules",
    "FrozenJSON",
    "IssuerRule",
    "ValidatedToken",
    "ClaimCheck",
    "check_claims",
    "check_roles",
    "check_scopes",
    "claim_checks",
    "freeze",
    "id_key",
]

TENANT_PLACEHOLDER: Final = "{tenantid}"
ANY_TENANT: Final = "*"
_GUID: Final = re.compile(r"[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}")


def id_key(value: str) -> str:
    """How an allow-listed client or tenant id compares: a GUID in lower case, anything else
    (a domain-less client id of another server, ``"*"``) as it is."""
    return value.lower() if _GUID.fullmatch(value) else value


def _wanted(required: Iterable[str] | str, setting: str) -> tuple[str, ...]:
    """``required`` as a tuple of non-empty strings (a string is one)."""
    wanted = (required,) if isinstance(required, str) else tuple(required)
    if not wanted or not all(isinstance(r, str) and r for r in wanted):
        raise ConfigurationError(f"required {setting} must be non-empty strings", setting=setting)
    return wanted


def _holds(granted: tuple[str, ...], wanted: tuple[str, ...], match: str) -> bool:
    """Whether ``granted`` holds any (``match="any"``) or all (``"all"``) of ``wanted``."""
    if match == "any":
        return any(w in granted for w in wanted)
    if match == "all":
        return all(w in granted for w in wanted)
    raise ConfigurationError("match must be 'any' or 'all'", setting="match")


def _lacks(kind: str, wanted: tuple[str, ...], match: str) -> str:
    """``"one of the roles: a, b"`` or ``"the role(s): a"``: what a refusal says is missing."""
    which = f"one of the {kind}s" if match == "any" and len(wanted) > 1 else f"the {kind}(s)"
    return f"{which}: {', '.join(wanted)}"


def check_roles(
    granted: tuple[str, ...],
    required: Iterable[str] | str,
    *,
    match: Literal["any", "all"] = "any",
) -> None:
    """Raise :class:`~ccflow.errors.InsufficientScopeError` unless ``granted`` holds any
    (``match="any"``) or all (``match="all"``) of ``required``. Roles compare exactly."""
    wanted = _wanted(required, "roles")
    if not _holds(granted, wanted, match):
        raise InsufficientScopeError(
            f"the caller lacks {_lacks('role', wanted, match)}", reason="role", required=wanted
        )


def check_scopes(
    granted: tuple[str, ...],
    required: Iterable[str] | str,
    *,
    match: Literal["any", "all"] = "any",
) -> None:
    """Raise :class:`~ccflow.errors.InsufficientScopeError` unless the delegated scopes
    ``granted`` (the token's ``scp``) hold any or all of ``required``. Scopes compare exactly."""
    wanted = _wanted(required, "scopes")
    if not _holds(granted, wanted, match):
        raise InsufficientScopeError(
            f"the caller lacks {_lacks('scope', wanted, match)}", reason="scope", required=wanted
        )


class Grants(Protocol):
    """What :meth:`AccessRule.check` reads of a verdict (``ValidatedToken`` is one)."""

    @property
    def roles(self) -> tuple[str, ...]:
        """The ``roles`` claim."""

    @property
    def scopes(self) -> tuple[str, ...]:
        """The delegated scopes (``scp``)."""


@dataclass(frozen=True, slots=True)
class AccessRule:
    """What a valid token must hold: one of (or, ``match="all"``, every one of) ``roles``, or
    else one of (every one of) the delegated ``scopes``; nothing named: any valid token.

    ::

        AccessRule(roles=("invokeRole",))                          # app (or user) role
        AccessRule(scopes=("Calc.Read",))                          # a user's delegated scope
        AccessRule(roles=("invokeRole",), scopes=("Calc.Read",))   # either will do

    ``match`` applies to each list on its own. An app-only token has no ``scp``, so it never
    satisfies ``scopes``; a delegated token's ``roles`` (app roles assigned to the user) do
    satisfy ``roles``, as in Microsoft.Identity.Web (see ``docs/scopes.md``). A refusal is an
    :class:`~ccflow.errors.InsufficientScopeError` whose ``required`` lists every role and
    scope that would have done (RFC 6750's ``scope`` attribute).
    """

    roles: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    match: Literal["any", "all"] = "any"

    def __post_init__(self) -> None:
        for name in ("roles", "scopes"):
            values: object = getattr(self, name)
            if isinstance(values, str) or not isinstance(values, tuple):
                raise ConfigurationError(f"{name} must be a tuple of strings", setting=name)
            if values:
                _wanted(values, name)
        if self.match not in ("any", "all"):
            raise ConfigurationError(
                f'match must be "any" or "all", got {self.match!r}', setting="match"
            )

    def check(self, token: Grants) -> None:
        """Return if ``token`` satisfies the rule; raise ``InsufficientScopeError`` if not.

        Scopes are read only when the rule names some, so a verdict without ``scopes`` (a
        validator of one's own) still serves role rules.
        """
        if not self.roles and not self.scopes:
            return
        if self.roles and _holds(token.roles, self.roles, self.match):
            return
        if self.scopes and _holds(token.scopes, self.scopes, self.match):
            return
        raise InsufficientScopeError(
            self.describe(), reason=self.reason, required=self.roles + self.scopes
        )

    @property
    def reason(self) -> str:
        """The refusal's reason: ``"role"``, ``"scope"`` or ``"role_or_scope"``."""
        if self.roles and self.scopes:
            return "role_or_scope"
        return "scope" if self.scopes else "role"

    def describe(self) -> str:
        """What a refusal says is missing."""
        parts = [_lacks(kind, wanted, self.match) for kind, wanted in self._lists()]
        if len(parts) == 2:
            return f"the caller holds neither {parts[0]} nor {parts[1]}"
        return f"the caller lacks {parts[0]}" if parts else "the caller is not allowed"

    def _lists(self) -> list[tuple[str, tuple[str, ...]]]:
        """The named lists, roles first."""
        lists = [("role", self.roles), ("scope", self.scopes)]
        return [(kind, wanted) for kind, wanted in lists if wanted]


@dataclass(frozen=True, slots=True)
class ValidatedToken:
    """An access token that passed every check: signature, time, issuer, audience, caller.

    ::

        token = await validator.validate(raw)
        token.client_id, token.tenant_id, token.roles, token.version, token.expires_on
        token.scopes, token.object_id, token.is_app_only
        token.require_roles(("invokeRole",))          # raises InsufficientScopeError (403)
        token.require_scopes(("Calc.Read",))          # the same, for delegated scopes
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
    scopes: tuple[str, ...] = ()
    """The delegated scopes (``scp``, split on spaces); ``()`` in an app-only token."""

    @property
    def object_id(self) -> str | None:
        """The ``oid`` claim: the user's object id (delegated), the caller's service principal
        (app-only); ``None`` when absent."""
        oid = self.claims.get("oid")
        return oid if isinstance(oid, str) else None

    @property
    def is_app_only(self) -> bool:
        """Whether the token was issued to an application for itself (client credentials):
        no ``scp``, and no ``idtyp`` of ``"user"``."""
        return not self.scopes and self.claims.get("idtyp") != "user"

    def require_scopes(
        self, scopes: Iterable[str] | str, *, match: Literal["any", "all"] = "any"
    ) -> None:
        """Raise :class:`~ccflow.errors.InsufficientScopeError` unless the token holds any
        (default) or all of the delegated ``scopes``."""
        check_scopes(self.scopes, scopes, match=match)

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
    checks: tuple[ClaimCheck, ...] = field(init=False, repr=False, compare=False)
    """The checks this configuration calls for (:func:`claim_checks`)."""

    def __post_init__(self) -> None:
        # The allow-lists are kept as id_key() gives them, so a check is one set lookup.
        for name in ("allowed_clients", "allowed_tenants"):
            values: frozenset[str] | None = getattr(self, name)
            if values is not None:
                object.__setattr__(self, name, frozenset(map(id_key, values)))
        object.__setattr__(self, "checks", claim_checks(self))


ClaimCheck = Callable[[Mapping[str, Any], ClaimRules, float], None]
"""One rule: raises the refusal for ``claims`` under ``rules`` at ``now``, else returns."""


def _invalid(
    message: str, reason: str, claim: str, expected: Iterable[str] = ()
) -> InvalidTokenError:
    """An ``InvalidTokenError`` for one claim (``expected``: the values it would accept)."""
    return InvalidTokenError(message, reason=reason, claim=claim, expected=tuple(expected))


_MISSING: Final[Any] = object()


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    """The claim as a time in seconds, ``None`` when absent; a non-number is refused."""
    value = claims.get(name, _MISSING)
    if value is _MISSING:
        return None
    # type() rather than isinstance(): bool is an int subclass and is not a time.
    if type(value) is int or (type(value) is float and math.isfinite(value)):
        return value
    raise _invalid(f"the token's {name} claim is not a number", "claims", name)


def _optional_str(claims: Mapping[str, Any], name: str, reason: str) -> str | None:
    """The claim as a non-empty string, ``None`` when absent; anything else is refused."""
    value = claims.get(name, _MISSING)
    if value is _MISSING:
        return None
    if type(value) is not str:
        raise _invalid(f"the token's {name} claim is not a string", reason, name)
    if not value:
        raise _invalid(f"the token's {name} claim is empty", reason, name)
    return value


def check_times(claims: Mapping[str, Any], rules: ClaimRules, now: float) -> None:
    """``exp`` present and ahead, ``nbf`` and ``iat`` not ahead, within ``rules.leeway``."""
    exp = _number(claims, "exp")
    if exp is None:
        raise _invalid("the token has no exp claim", "claims", "exp")
    nbf, iat = _number(claims, "nbf"), _number(claims, "iat")
    if exp <= now - rules.leeway:
        raise _invalid("the token has expired", "expired", "exp")
    if nbf is not None and nbf > now + rules.leeway:
        raise _invalid("the token is not yet valid (nbf)", "not_yet_valid", "nbf")
    if iat is not None and iat > now + rules.leeway:
        raise _invalid("the token was issued in the future (iat)", "issued_at", "iat")


def check_not_id_token(claims: Mapping[str, Any], rules: ClaimRules, now: float) -> None:
    """Generic OIDC: a ``nonce`` claim marks an ID token, which is not an access token."""
    if "nonce" in claims:
        raise _invalid(
            "the token carries a nonce claim: an ID token is not an access token", "type", "nonce"
        )


def check_version(claims: Mapping[str, Any], rules: ClaimRules, now: float) -> None:
    """Azure AD: ``ver`` is ``"2.0"``, or ``"1.0"`` when v1 tokens are accepted."""
    ver = claims.get("ver")
    if ver == "1.0":
        if not rules.accept_v1:
            raise _invalid("v1.0 tokens are not accepted by this API", "version", "ver")
    elif ver != "2.0":
        raise _invalid("the token's version (ver) is missing or unknown", "version", "ver")


def _version(claims: Mapping[str, Any]) -> str | None:
    """The ``ver`` claim when it is a string."""
    ver = claims.get("ver")
    return ver if isinstance(ver, str) else None


def check_issuer(claims: Mapping[str, Any], rules: ClaimRules, now: float) -> None:
    """``iss`` is one of the issuers for the token's version (a template: with its ``tid``)."""
    tid = _optional_str(claims, "tid", "issuer")
    iss = claims.get("iss")
    if not isinstance(iss, str):
        raise _invalid("the token's issuer (iss) is missing or not a string", "issuer", "iss")
    version = _version(claims)
    if not any(
        (rule.version is None or rule.version == version) and rule.matches(iss, tid)
        for rule in rules.issuers
    ):
        expected = (
            rule.issuer.replace(TENANT_PLACEHOLDER, tid or TENANT_PLACEHOLDER)
            for rule in rules.issuers
        )
        raise _invalid("the token is from another issuer", "issuer", "iss", expected)


def check_audience(claims: Mapping[str, Any], rules: ClaimRules, now: float) -> None:
    """``aud`` is a non-empty string or list of them, one of which is ours (exact match)."""
    aud = claims.get("aud")
    values = [aud] if type(aud) is str else aud
    if (
        type(values) is not list
        or not values
        or any(type(value) is not str or not value for value in values)
    ):
        raise _invalid("the token's audience (aud) is missing or malformed", "audience", "aud")
    if rules.audiences.isdisjoint(values):
        raise _invalid(
            "the token is for another audience", "audience", "aud", sorted(rules.audiences)
        )


def _caller(claims: Mapping[str, Any], rules: ClaimRules) -> str:
    """The caller's client id: ``azp`` (v2) or ``appid`` (v1) in Azure AD mode, else the
    first of ``azp``, ``client_id``, ``appid`` present; refused when there is none."""
    names = (("appid" if claims.get("ver") == "1.0" else "azp"),) if rules.azure else _CALLERS
    for name in names:
        value = _optional_str(claims, name, "client")
        if value is not None:
            return value
    raise _invalid(f"the token names no caller ({names[0]})", "client", names[0])


_CALLERS: Final = ("azp", "client_id", "appid")


def check_caller(claims: Mapping[str, Any], rules: ClaimRules, now: float) -> None:
    """The token names its caller."""
    _caller(claims, rules)


def check_roles_claim(claims: Mapping[str, Any], rules: ClaimRules, now: float) -> None:
    """``roles``, when present, is a list of strings."""
    roles = claims.get("roles", [])
    if type(roles) not in (list, tuple) or any(type(role) is not str for role in roles):
        raise _invalid("the token's roles claim is not a list of strings", "roles", "roles")


def _scope_claim(claims: Mapping[str, Any], rules: ClaimRules) -> tuple[str, Any]:
    """``(name, value)`` of the scopes claim: ``scp``; generic OIDC also ``scope`` (RFC 9068)."""
    if rules.azure or "scp" in claims:
        return "scp", claims.get("scp", _MISSING)
    return "scope", claims.get("scope", _MISSING)


def _scopes(claims: Mapping[str, Any], rules: ClaimRules) -> tuple[str, ...]:
    """The delegated scopes: a space-separated string (Azure AD, RFC 9068) or a list (Okta)."""
    _, value = _scope_claim(claims, rules)
    if value is _MISSING:
        return ()
    if type(value) is str:
        return tuple(value.split())
    return tuple(value)


def check_scopes_claim(claims: Mapping[str, Any], rules: ClaimRules, now: float) -> None:
    """``scp`` (or ``scope``), when present, is a string or a list of strings."""
    name, value = _scope_claim(claims, rules)
    if value is _MISSING or type(value) is str:
        return
    if type(value) not in (list, tuple) or any(type(item) is not str for item in value):
        raise _invalid(f"the token's {name} claim is not a string of scopes", "scopes", name)


def check_allowed_client(claims: Mapping[str, Any], rules: ClaimRules, now: float) -> None:
    """The caller is on ``allowed_clients`` (403 otherwise)."""
    allowed, caller = rules.allowed_clients, _caller(claims, rules)
    if allowed is not None and id_key(caller) not in allowed:
        raise InsufficientScopeError(
            "the calling application is not allowed",
            reason="client",
            client_id=caller,
            tenant_id=_tenant(claims),
        )


def check_allowed_tenant(claims: Mapping[str, Any], rules: ClaimRules, now: float) -> None:
    """The token's ``tid`` is on ``allowed_tenants`` (403 otherwise)."""
    tid, allowed = claims.get("tid"), rules.allowed_tenants
    if (
        allowed is not None
        and ANY_TENANT not in allowed
        and (tid is None or id_key(tid) not in allowed)
    ):
        raise InsufficientScopeError(
            "the caller's tenant is not allowed",
            reason="tenant",
            client_id=_caller(claims, rules),
            tenant_id=_tenant(claims),
        )


def _tenant(claims: Mapping[str, Any]) -> str | None:
    """The ``tid`` claim when it is a string (a refusal's log names it)."""
    tid = claims.get("tid")
    return tid if isinstance(tid, str) else None


def claim_checks(rules: ClaimRules) -> tuple[ClaimCheck, ...]:
    """The checks ``rules`` call for, in the order a token meets them."""
    checks: list[ClaimCheck] = [check_times]
    checks.append(check_version if rules.azure else check_not_id_token)
    checks += [check_issuer, check_audience, check_caller, check_roles_claim, check_scopes_claim]
    if rules.allowed_clients is not None:
        checks.append(check_allowed_client)
    if rules.allowed_tenants is not None:
        checks.append(check_allowed_tenant)
    return tuple(checks)


class FrozenJSON(dict[str, Any]):
    """A JSON object that refuses changes; still a ``dict``, so ``json.dumps`` takes it."""

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        """Every change: token claims are read-only."""
        raise TypeError("token claims are read-only")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenJSON, (dict(self),))


def freeze(value: Any) -> Any:
    """A JSON value made read-only all the way down: objects become :class:`FrozenJSON`,
    arrays tuples."""
    if isinstance(value, dict):
        return FrozenJSON({key: freeze(item) for key, item in value.items()})
    if isinstance(value, list):
        return tuple(freeze(item) for item in value)
    return value


def check_claims(claims: Mapping[str, Any], rules: ClaimRules, *, now: float) -> ValidatedToken:
    """Apply ``rules`` to signature-verified ``claims`` at time ``now`` (Unix seconds).

    The verdict's ``claims`` are a read-only copy, nested values included, so one request
    cannot change what the next one sees.
    """
    for check in rules.checks:
        check(claims, rules, now)
    return ValidatedToken(
        claims=freeze(dict(claims)),
        client_id=_caller(claims, rules),
        tenant_id=claims.get("tid"),
        roles=tuple(claims.get("roles", ())),
        version=_version(claims),
        expires_on=int(claims["exp"]),
        scopes=_scopes(claims, rules),
    )
