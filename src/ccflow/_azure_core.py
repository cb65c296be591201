"""azure-core's credential options, checked without IO: ``claims``, ``tenant_id``,
``enable_cae`` (as ``get_token`` keywords or a ``get_token_info`` options mapping).

What each means for a ccflow client:

==============  ===============================================================================
option          effect
==============  ===============================================================================
``claims``      a claims challenge (CAE) being answered: the cached token is not served, a new
                one is fetched with the challenge sent along (``claims``, as msal sends it) and
                replaces the cached one
``tenant_id``   the client's own tenant: no effect. Another tenant: refused unless listed in
                ``additionally_allowed_tenants`` (``"*"`` for any, as azure-identity's); then the
                token comes from that tenant's endpoint and is cached apart. A managed
                identity ignores it, as azure-identity's does
``enable_cae``  accepted (a bool); ccflow does not announce the CP1 capability, so Azure AD
                issues ordinary tokens and a challenge is answered through ``claims``
==============  ===============================================================================

::

    >>> endpoint = "https://login.test/t1/oauth2/v2.0/token"
    >>> token_options(tenant_id="t2", token_endpoint=endpoint, allowed=("*",)).token_endpoint
    'https://login.test/t2/oauth2/v2.0/token'
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ccflow.errors import ConfigurationError

__all__ = [
    "ANY_TENANT",
    "TokenInfo",
    "TokenOptions",
    "allowed_tenants",
    "options_from_mapping",
    "token_options",
]

ANY_TENANT = "*"
_TOKEN_PATHS = ("/oauth2/v2.0/token", "/oauth2/token")


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """azure-core's ``AccessTokenInfo`` shape: what ``get_token_info`` returns.

    ``refresh_on`` is when ccflow will refresh the token (Unix seconds), so azure-core's
    policies ask again just then.
    """

    token: str = field(repr=False)
    expires_on: int
    token_type: str = "Bearer"
    refresh_on: int | None = None


@dataclass(frozen=True, slots=True)
class TokenOptions:
    """One request's checked options: the challenge to answer, another tenant's endpoint."""

    claims: str | None = None
    tenant_id: str | None = None
    """Set only for a tenant other than the client's own."""
    token_endpoint: str | None = None
    """That tenant's token endpoint."""

    @property
    def fresh(self) -> bool:
        """Whether the cached token must not be served (a claims challenge)."""
        return self.claims is not None


DEFAULT_OPTIONS = TokenOptions()


def allowed_tenants(value: Iterable[str] | None) -> tuple[str, ...]:
    """``additionally_allowed_tenants`` checked: tenant ids (lower-cased) or ``"*"``."""
    if value is None:
        return ()
    if isinstance(value, str):
        raise ConfigurationError(
            f"additionally_allowed_tenants must be a list of tenant ids, got the string "
            f"{value!r}; e.g. additionally_allowed_tenants=[{value!r}]",
            setting="additionally_allowed_tenants",
        )
    tenants = tuple(value)
    for tenant in tenants:
        if not isinstance(tenant, str) or not tenant.strip() or "/" in tenant:
            raise ConfigurationError(
                f"additionally_allowed_tenants holds {tenant!r}; each entry is a tenant id "
                "(a GUID or a domain) or '*' for any tenant",
                setting="additionally_allowed_tenants",
            )
    return tuple(t.strip().lower() for t in tenants)


def token_options(
    *,
    claims: Any = None,
    tenant_id: Any = None,
    enable_cae: Any = False,
    token_endpoint: str,
    allowed: tuple[str, ...] = (),
    tenants: bool = True,
) -> TokenOptions:
    """The options of one ``get_token`` checked for a client whose token endpoint is
    ``token_endpoint``; ``tenants=False`` for a credential bound to its tenant (managed
    identity), which ignores ``tenant_id`` (once checked)."""
    if not isinstance(enable_cae, bool):
        raise ConfigurationError(
            f"enable_cae must be True or False, got {enable_cae!r}", setting="enable_cae"
        )
    checked_claims = _claims(claims)
    if tenant_id is None or tenant_id == "":
        return TokenOptions(claims=checked_claims) if checked_claims else DEFAULT_OPTIONS
    if not isinstance(tenant_id, str) or not tenant_id.strip() or "/" in tenant_id:
        raise ConfigurationError(
            f"tenant_id must be a tenant id (a GUID or a domain), got {tenant_id!r}",
            setting="tenant_id",
        )
    tenant = tenant_id.strip()
    own = _tenant_of(token_endpoint)
    if not tenants or (own is not None and own.lower() == tenant.lower()):
        # A managed identity ignores it, as azure-identity's does: Storage's and Key Vault's
        # challenge policies pass the resource's tenant with every request.
        return TokenOptions(claims=checked_claims)
    if own is None:
        raise ConfigurationError(
            f"get_token(tenant_id={tenant!r}): this client cannot get tokens from another "
            "tenant (its token endpoint is not Azure AD's)",
            setting="tenant_id",
        )
    if ANY_TENANT not in allowed and tenant.lower() not in allowed:
        raise ConfigurationError(
            f"get_token(tenant_id={tenant!r}) asks for a token from a tenant other than the "
            f"client's own ({own}); allow it with additionally_allowed_tenants=[{tenant!r}] "
            "(or ['*'] for any tenant)",
            setting="tenant_id",
        )
    return TokenOptions(checked_claims, tenant.lower(), _with_tenant(token_endpoint, tenant))


def options_from_mapping(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``get_token_info``'s ``options`` (azure-core's ``TokenRequestOptions``) as keywords."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ConfigurationError(
            f"options must be a mapping (azure-core's TokenRequestOptions), got "
            f"{type(options).__name__}",
            setting="options",
        )
    return {k: options[k] for k in ("claims", "tenant_id", "enable_cae") if k in options}


def _claims(claims: Any) -> str | None:
    """A claims challenge: a JSON object as text (azure-core decodes it from the header)."""
    if claims is None or claims == "":
        return None
    if not isinstance(claims, str):
        raise ConfigurationError(
            f"claims must be the claims challenge as a JSON string, got {type(claims).__name__}",
            setting="claims",
        )
    try:
        parsed = json.loads(claims)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise ConfigurationError(
            "claims must be the claims challenge, a JSON object (decoded from the "
            "WWW-Authenticate header's claims parameter)",
            setting="claims",
        )
    return claims


def _tenant_of(token_endpoint: str) -> str | None:
    """The tenant segment of an Azure-AD-shaped token endpoint; ``None`` for other servers."""
    path = urlsplit(token_endpoint).path
    for suffix in _TOKEN_PATHS:
        if path.endswith(suffix):
            head = path.removesuffix(suffix)
            tenant = head.rsplit("/", 1)[-1]
            return tenant or None
    return None


def _with_tenant(token_endpoint: str, tenant: str) -> str:
    """``token_endpoint`` with its tenant segment replaced by ``tenant``."""
    parts = urlsplit(token_endpoint)
    for suffix in _TOKEN_PATHS:
        if parts.path.endswith(suffix):
            head = parts.path.removesuffix(suffix).rsplit("/", 1)[0]
            return urlunsplit(parts._replace(path=f"{head}/{tenant}{suffix}"))
    raise AssertionError("called only for an endpoint _tenant_of recognised")
