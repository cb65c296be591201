"""``TokenValidator``'s settings, checked once into a frozen :class:`ValidatorConfig`.

The constructor and ``from_env()`` both come here; ``from_env()`` passes the names of the
variables it read, so a bad value is reported as ``CCFLOW_AUDIENCE: ...``, not as an argument
the user never passed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, NoReturn
from urllib.parse import urlsplit

import httpx

from ccflow._config import ARGUMENTS, VALIDATOR_VARIABLES, SettingNames, authority_host_from
from ccflow._core.claims import ANY_TENANT, TENANT_PLACEHOLDER, ClaimRules, IssuerRule
from ccflow._core.discovery import discovery_url_for_issuer
from ccflow._core.jwks import RefreshPolicy
from ccflow._core.jws import DEFAULT_MAX_TOKEN_SIZE, check_algorithms
from ccflow._core.numbers import is_seconds
from ccflow._core.urls import (
    MULTI_TENANT_NAMES,
    discovery_url_for,
    normalize_authority_host,
    reject_tenant_in_host,
    require_secure_url,
)
from ccflow.errors import ConfigurationError
from ccflow.jwks import DiscoverySource, KeySourcePlan

__all__ = [
    "DEFAULT_ALGORITHMS",
    "DEFAULT_CACHE_SIZE",
    "DEFAULT_JWKS_COOLDOWN",
    "DEFAULT_JWKS_MAX_STALE",
    "DEFAULT_JWKS_TTL",
    "DEFAULT_LEEWAY",
    "ValidatorConfig",
    "ValidatorSettings",
    "environment_settings",
    "is_plain",
]

# The defaults, stated once: TokenValidator's signature and ValidatorSettings share them.
DEFAULT_LEEWAY: Final = 60.0
DEFAULT_ALGORITHMS: Final = ("RS256",)
DEFAULT_CACHE_SIZE: Final = 4096
DEFAULT_JWKS_TTL: Final = 3600.0
DEFAULT_JWKS_COOLDOWN: Final = 30.0
DEFAULT_JWKS_MAX_STALE: Final = 86400.0

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})


def is_plain(value: str) -> bool:
    """A value an audience, client or tenant setting may hold: non-empty, with no whitespace
    and no control character."""
    return bool(value) and not any(c.isspace() or not c.isprintable() for c in value)


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidatorSettings:
    """``TokenValidator``'s settings as given, unchecked: what :meth:`ValidatorConfig.of` checks.

    The defaults are the constructor's (a test holds them equal).
    """

    issuer: str | None = None
    tenant_id: str | None = None
    authority_host: str | None = None
    audience: str | Iterable[str] | None = None
    allowed_clients: Iterable[str] | None = None
    accept_v1: bool = False
    allowed_tenants: Iterable[str] | None = None
    leeway: float = DEFAULT_LEEWAY
    algorithms: Iterable[str] = DEFAULT_ALGORITHMS
    jwks_uri: str | None = None
    max_token_size: int = DEFAULT_MAX_TOKEN_SIZE
    cache_size: int = DEFAULT_CACHE_SIZE
    jwks_ttl: float = DEFAULT_JWKS_TTL
    jwks_cooldown: float = DEFAULT_JWKS_COOLDOWN
    jwks_max_stale: float = DEFAULT_JWKS_MAX_STALE
    require_typ: str | None = None


@dataclass(frozen=True, slots=True)
class ValidatorConfig:
    """Everything a ``TokenValidator`` was configured with, checked."""

    audiences: tuple[str, ...]
    rules: ClaimRules
    """The claim rules; their issuers come from discovery and are filled in then."""
    key_sources: KeySourcePlan
    key_policy: RefreshPolicy
    algorithms: frozenset[str]
    max_token_size: int
    cache_size: int
    require_typ: str | None

    @property
    def realm(self) -> str:
        """The realm for ``WWW-Authenticate``: the first audience."""
        return self.audiences[0]

    @classmethod
    def of(
        cls,
        settings: ValidatorSettings,
        names: SettingNames = ARGUMENTS,
    ) -> ValidatorConfig:
        """Check every setting, naming a bad one by ``names``."""
        audiences = _strings(settings.audience, "audience", names) or _required("audience", names)
        clients = _strings(settings.allowed_clients, "allowed_clients", names)
        tenants = _strings(settings.allowed_tenants, "allowed_tenants", names)
        if not isinstance(settings.accept_v1, bool):
            raise names.error("accept_v1", "must be True or False")
        algs = check_algorithms(settings.algorithms, setting=names("algorithms"))
        seconds = _seconds(settings.leeway, "leeway", names)
        _positive(settings.max_token_size, "max_token_size", names, zero=False)
        _positive(settings.cache_size, "cache_size", names, zero=True)
        policy = _key_policy(settings, names)
        if settings.jwks_uri is not None:
            _valid_url(settings.jwks_uri, names("jwks_uri"))
        typ = _typ(settings.require_typ, names)
        plan = _key_sources(settings, tenants, names)
        rules = ClaimRules(
            issuers=(),
            audiences=frozenset(audiences),
            azure=settings.tenant_id is not None,
            accept_v1=settings.accept_v1,
            allowed_clients=frozenset(clients) if clients is not None else None,
            allowed_tenants=frozenset(tenants) if tenants is not None else None,
            leeway=seconds,
        )
        return cls(
            audiences, rules, plan, policy, algs, settings.max_token_size, settings.cache_size, typ
        )


def _required(setting: str, names: SettingNames) -> NoReturn:
    """Refuse a missing setting that has no default."""
    raise names.error(setting, "is required")


def _key_policy(settings: ValidatorSettings, names: SettingNames) -> RefreshPolicy:
    """When signing keys are fetched again (see :class:`~ccflow._core.jwks.RefreshPolicy`)."""
    return RefreshPolicy(
        ttl=_seconds(settings.jwks_ttl, "jwks_ttl", names),
        cooldown=_seconds(settings.jwks_cooldown, "jwks_cooldown", names),
        max_stale=_seconds(settings.jwks_max_stale, "jwks_max_stale", names),
    )


def _positive(value: object, setting: str, names: SettingNames, *, zero: bool) -> None:
    """A whole number above zero (or at least zero)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if zero else 1):
        words = "a non-negative integer" if zero else "a positive integer"
        raise names.error(setting, f"must be {words}")


def _check_multi_tenant(tenant_id: str, tenants: object, names: SettingNames) -> None:
    """A multi-tenant API (``organizations``, ``common``, ...) must list the tenants it takes."""
    if tenant_id.strip().lower() in MULTI_TENANT_NAMES and tenants is None:
        raise names.error(
            "allowed_tenants",
            f"is required for a multi-tenant API (tenant_id={tenant_id!r}); list the "
            f"tenant ids to accept, or {ANY_TENANT!r} to accept any tenant",
        )


def _key_sources(
    settings: ValidatorSettings,
    tenants: object,
    names: SettingNames,
) -> KeySourcePlan:
    """Where keys and issuers come from: a generic issuer's, or an Azure AD tenant's."""
    if settings.issuer is not None and settings.tenant_id is not None:
        raise names.error(
            "issuer", f"give either {names('issuer')} or {names('tenant_id')}, not both"
        )
    if settings.issuer is not None:
        return _generic_sources(settings, names)
    if settings.tenant_id is None:
        raise names.error(
            "tenant_id", f"is required (or {names('issuer')} for a generic OIDC issuer)"
        )
    plan = _azure_sources(settings, names)
    _check_multi_tenant(settings.tenant_id, tenants, names)
    return plan


def _generic_sources(settings: ValidatorSettings, names: SettingNames) -> KeySourcePlan:
    """Where a generic OIDC issuer's keys come from: its discovery document, or ``jwks_uri``."""
    issuer, jwks_uri = settings.issuer, settings.jwks_uri
    if not isinstance(issuer, str) or not issuer.strip():
        raise names.error("issuer", "must be the issuer URL")
    _valid_url(issuer, names("issuer"))
    if "?" in issuer or "#" in issuer:
        # OIDC Discovery 1.0: an issuer has no query or fragment.
        raise names.error("issuer", "must not contain a query or fragment")
    if settings.authority_host is not None:
        raise names.error(
            "authority_host",
            f"applies to Azure AD ({names('tenant_id')}=...) only; a generic issuer's "
            "discovery document is at {issuer}/.well-known/openid-configuration",
        )
    if settings.accept_v1:
        # Token versions are Azure AD's: the option would silently do nothing.
        raise names.error(
            "accept_v1",
            f"applies to Azure AD ({names('tenant_id')}=...) only; a generic issuer's "
            "tokens are accepted whatever their version",
        )
    if TENANT_PLACEHOLDER in issuer:
        raise names.error(
            "issuer",
            f"is a multi-tenant template ({TENANT_PLACEHOLDER}), which would accept "
            f"tokens from any tenant; use {names('tenant_id')}='organizations' (or "
            f"'common') with {names('allowed_tenants')} instead",
        )
    url = discovery_url_for_issuer(issuer, setting=names("issuer"))
    if jwks_uri is not None:
        return KeySourcePlan(jwks_uri=jwks_uri, static_issuers=(IssuerRule(issuer),))
    return KeySourcePlan(discoveries=(DiscoverySource(url, expected_issuer=issuer),))


def _azure_sources(settings: ValidatorSettings, names: SettingNames) -> KeySourcePlan:
    """Where an Azure AD tenant's issuers and keys come from: its v2 (and v1) discovery."""
    tenant_id = settings.tenant_id
    if not isinstance(tenant_id, str) or not tenant_id.strip():
        raise names.error("tenant_id", "must be a tenant GUID or domain name")
    tenant = tenant_id.strip()
    if settings.authority_host is None:
        host, setting = authority_host_from(None)  # AZURE_AUTHORITY_HOST, else the public cloud
    else:
        host, setting = settings.authority_host, "authority_host"
    host = _valid_url(host, names(setting), authority_host=True)
    try:
        v2 = discovery_url_for(host, tenant)
        v1 = discovery_url_for(host, tenant, version=1)
    except ConfigurationError:
        raise names.error("tenant_id", "must be a tenant GUID or domain name") from None
    reject_tenant_in_host(host, tenant, setting=names(setting))
    multi = tenant.lower() in MULTI_TENANT_NAMES
    sources = [DiscoverySource(v2, version="2.0", multi_tenant=multi)]
    if settings.accept_v1:
        sources.append(DiscoverySource(v1, version="1.0", multi_tenant=multi))
    return KeySourcePlan(discoveries=tuple(sources), jwks_uri=settings.jwks_uri)


def _strings(value: object, setting: str, names: SettingNames) -> tuple[str, ...] | None:
    """A setting of one or more plain strings, de-duplicated in order; ``None`` when unset."""
    if value is None:
        return None
    if isinstance(value, str):
        items: list[object] = [value]
    elif isinstance(value, Iterable):
        items = list(value)
    else:
        raise names.error(setting, "must be a string or a list of strings")
    if any(not isinstance(item, str) or not item.strip() for item in items):
        raise names.error(setting, "must contain only non-empty strings")
    result = tuple(dict.fromkeys(str(item).strip() for item in items))
    for item in result:
        if not is_plain(item):
            # "api://a, api://b" as one string would never match a token, silently.
            raise names.error(
                setting,
                f"{item!r} contains whitespace or a control character; "
                "give several values as a list (or comma-separated in the environment)",
            )
    if not result:
        raise names.error(setting, "must not be empty")
    return result


def _typ(value: object, names: SettingNames) -> str | None:
    """The ``typ`` header every token must carry (``"at+jwt"``), or ``None``."""
    if value is None:
        return None
    if not isinstance(value, str) or not is_plain(value.strip()):
        raise names.error("require_typ", "must be a media type such as 'at+jwt'")
    return media_type(value.strip())


def media_type(typ: str) -> str:
    """A ``typ`` value as compared: lower case, without ``application/`` (RFC 7515 4.1.9)."""
    typ = typ.lower()
    return typ[len("application/") :] if typ.startswith("application/") else typ


def _valid_url(url: object, setting: str, *, authority_host: bool = False) -> str:
    """A URL the HTTP client can use, checked now rather than failing on every request."""
    if not isinstance(url, str):
        raise ConfigurationError(
            f"{setting} must be a URL string, got {type(url).__name__}", setting=setting
        )
    try:
        if authority_host:
            url = normalize_authority_host(url, setting=setting)
        else:
            require_secure_url(url, setting=setting)
        urlsplit(url).port  # noqa: B018  (a broken port or IPv6 host raises only when asked)
        httpx.URL(url).host  # noqa: B018  (IDNA is checked only when asked)
    except (ValueError, httpx.InvalidURL):  # idna.IDNAError is a ValueError
        raise ConfigurationError(
            f"{setting} is not a valid URL, got {url!r}", setting=setting
        ) from None
    return url


def _seconds(value: object, setting: str, names: SettingNames) -> float:
    """A non-negative, finite number of seconds."""
    if not is_seconds(value) or value < 0:
        raise names.error(setting, "must be a non-negative number of seconds")
    return float(value)


def environment_settings(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The constructor arguments the environment sets, and the variable each came from."""
    names = dict(VALIDATOR_VARIABLES)

    def get(name: str) -> str | None:
        value = environ.get(name)
        return value.strip() if value is not None and value.strip() else None

    settings: dict[str, Any] = {}
    issuer, tenant = get("CCFLOW_ISSUER"), get("CCFLOW_TENANT_ID")
    if issuer is None and tenant is None:
        tenant = get("AZURE_TENANT_ID")
        if tenant is not None:
            names["tenant_id"] = "AZURE_TENANT_ID"
    if issuer is not None:
        settings["issuer"] = issuer
    if tenant is not None:
        settings["tenant_id"] = tenant
    for setting in ("audience", "allowed_clients", "allowed_tenants"):
        value = environ.get(VALIDATOR_VARIABLES[setting])
        if value is not None and value.strip():
            settings[setting] = [part.strip() for part in value.split(",") if part.strip()]
    accept = get("CCFLOW_ACCEPT_V1")
    if accept is not None:
        if accept.lower() not in _TRUE | _FALSE:
            raise ConfigurationError(
                f"CCFLOW_ACCEPT_V1: expected true or false, got {accept!r}",
                setting="CCFLOW_ACCEPT_V1",
            )
        settings["accept_v1"] = accept.lower() in _TRUE
    return settings, names
