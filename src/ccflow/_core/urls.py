"""Authority URLs: where Azure AD (and any host shaped like it) keeps its endpoints.

One place builds them so the caller side, the API side and the local authority agree::

    >>> token_endpoint_for("https://login.microsoftonline.com", "contoso.onmicrosoft.com")
    'https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token'

and one rule keeps secrets off the wire in clear: ``http://`` only to a loopback host.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from ccflow.errors import ConfigurationError

__all__ = [
    "DEFAULT_AUTHORITY_HOST",
    "MULTI_TENANT_NAMES",
    "discovery_url_for",
    "is_loopback_host",
    "jwks_uri_for",
    "normalize_authority_host",
    "reject_tenant_in_host",
    "require_secure_url",
    "token_endpoint_for",
]

DEFAULT_AUTHORITY_HOST = "https://login.microsoftonline.com"


def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``::1`` (brackets allowed).

    Not ``*.localhost``: browsers pin those to loopback, but getaddrinfo may ask DNS for them.
    """
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _shown(url: str) -> str:
    """``url`` fit for an error message: a ``user:password@`` part is replaced by ``***@``."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if sep and "@" in authority:
        return f"{scheme}{sep}***@{authority.rpartition('@')[2]}{slash}{path}"
    return url


def require_secure_url(url: str, *, setting: str) -> str:
    """Return ``url`` if it is ``https://`` (or ``http://`` to a loopback host); else raise.

    ``setting`` names the argument or environment variable, so the message says what to fix.
    A URL the HTTP client could never use (a bad port, whitespace or control characters,
    which ``urlsplit`` silently drops) fails here rather than on every request.
    """
    if not isinstance(url, str):
        raise ConfigurationError(
            f"{setting} must be a string (an https:// URL), got {type(url).__name__}",
            setting=setting,
        )
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ConfigurationError(
            f"{setting} contains whitespace or control characters, got {_shown(url)!r}",
            setting=setting,
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (parsed only when asked for)
    except ValueError:
        raise ConfigurationError(
            f"{setting} is not a valid URL, got {_shown(url)!r}", setting=setting
        ) from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigurationError(
            f"{setting} must be an absolute https:// URL, got {_shown(url)!r}", setting=setting
        )
    if parts.username is not None or parts.password is not None:
        raise ConfigurationError(
            f"{setting} must not carry credentials in the URL", setting=setting
        )
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ConfigurationError(
            f"{setting} is plain http:// to {parts.hostname!r}: credentials and tokens would "
            "cross the network in clear. Use https:// (http:// is accepted only for loopback "
            "hosts such as 127.0.0.1 or localhost).",
            setting=setting,
        )
    return url


def normalize_authority_host(host: str, *, setting: str = "authority_host") -> str:
    """``login.microsoftonline.com`` or ``https://login.microsoftonline.com/`` ->
    ``https://login.microsoftonline.com``. A bare host name means https."""
    if not isinstance(host, str):
        raise ConfigurationError(
            f"{setting} must be a string (a host name or https:// URL), got {type(host).__name__}",
            setting=setting,
        )
    host = host.strip()
    if not host:
        raise ConfigurationError(f"{setting} is empty", setting=setting)
    if "://" not in host:
        host = "https://" + host
    host = host.rstrip("/")
    require_secure_url(host, setting=setting)
    parts = urlsplit(host)
    if parts.query or parts.fragment or host.endswith(("?", "#")):
        # Endpoints are built by appending "/{tenant}/...": after a query they would be lost.
        raise ConfigurationError(
            f"{setting} must not have a query or fragment, got {host!r}", setting=setting
        )
    return host


MULTI_TENANT_NAMES = frozenset({"common", "organizations", "consumers"})
"""Tenant names in Azure AD paths that stand for no single tenant (lower case)."""


def reject_tenant_in_host(host: str, tenant_id: str, *, setting: str = "authority_host") -> None:
    """Refuse an authority host that already holds the tenant or an endpoint path.

    msal's ``authority`` is ``https://login.microsoftonline.com/<tenant>``; given as our
    ``authority_host`` it would build ``.../<tenant>/<tenant>/oauth2/...``, a 404 on every
    request. A path that is not a tenant (a proxy prefix) is left alone.
    """
    path = urlsplit(host).path.rstrip("/").lower()
    last = path.rpartition("/")[2]
    if not last:
        return
    if last == tenant_id.strip().lower() or last in MULTI_TENANT_NAMES or "/oauth2" in path:
        raise ConfigurationError(
            f"{setting} must be the authority's host only, e.g. "
            f"{DEFAULT_AUTHORITY_HOST}; {host!r} already ends with a tenant or endpoint path "
            "(msal's authority URL?): pass the tenant as tenant_id",
            setting=setting,
        )


def _tenant(tenant_id: str) -> str:
    """A tenant id fit for a URL path segment."""
    tenant = tenant_id.strip() if isinstance(tenant_id, str) else ""
    if not tenant or any(c in "/?#" or c.isspace() or not c.isprintable() for c in tenant):
        raise ConfigurationError(
            f"tenant_id must be a tenant GUID or domain name, got {tenant_id!r}",
            setting="tenant_id",
        )
    return tenant


def token_endpoint_for(authority_host: str, tenant_id: str, *, version: int = 2) -> str:
    """The token endpoint: v2 ``{host}/{tenant}/oauth2/v2.0/token``, v1 without ``v2.0``."""
    base = f"{authority_host.rstrip('/')}/{_tenant(tenant_id)}/oauth2"
    return f"{base}/v2.0/token" if version == 2 else f"{base}/token"


def discovery_url_for(authority_host: str, tenant_id: str, *, version: int = 2) -> str:
    """The OpenID discovery document: v2 ``{host}/{tenant}/v2.0/.well-known/...``, v1 without
    the ``v2.0`` segment."""
    base = f"{authority_host.rstrip('/')}/{_tenant(tenant_id)}"
    if version == 2:
        return f"{base}/v2.0/.well-known/openid-configuration"
    return f"{base}/.well-known/openid-configuration"


def jwks_uri_for(authority_host: str, tenant_id: str, *, version: int = 2) -> str:
    """The signing keys: ``{host}/{tenant}/discovery/v2.0/keys`` (v1: ``discovery/keys``)."""
    base = f"{authority_host.rstrip('/')}/{_tenant(tenant_id)}"
    return f"{base}/discovery/v2.0/keys" if version == 2 else f"{base}/discovery/keys"
