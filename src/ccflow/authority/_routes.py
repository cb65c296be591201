"""Where the authority's endpoints are: the URLs of a tenant, and which endpoint a path names.

Azure AD's layout, with ``{t}`` a tenant id (or ``organizations``/``common``)::

    endpoint    v2                                        v1
    discovery   /{t}/v2.0/.well-known/openid-configuration /{t}/.well-known/openid-configuration
    jwks        /{t}/discovery/v2.0/keys                  /{t}/discovery/keys
    token       /{t}/oauth2/v2.0/token                    /{t}/oauth2/token

and the managed identity endpoints of Azure hosts (:mod:`ccflow.authority._managed_identity`):
``imds`` at ``/metadata/identity/oauth2/token``, ``app_service`` at ``/msi/token``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ccflow._core.urls import (
    MULTI_TENANT_NAMES,
    discovery_url_for,
    jwks_uri_for,
    token_endpoint_for,
)

__all__ = ["ISSUER_TEMPLATE", "Endpoints", "Route", "endpoints_for", "route"]

ISSUER_TEMPLATE = "{tenantid}"
"""The tenant segment of the issuer in ``organizations``/``common`` discovery documents."""

_PATHS = {
    "v2.0/.well-known/openid-configuration": ("discovery", 2),
    ".well-known/openid-configuration": ("discovery", 1),
    "discovery/v2.0/keys": ("jwks", 2),
    "discovery/keys": ("jwks", 1),
    "oauth2/v2.0/token": ("token", 2),
    "oauth2/token": ("token", 1),
}
_IDENTITY_PATHS = {"metadata/identity/oauth2/token": "imds", "msi/token": "app_service"}


@dataclass(frozen=True, slots=True)
class Endpoints:
    """The addresses of one tenant's endpoints, v2 or v1, as :meth:`Authority.endpoints` gives
    them::

        urls = authority.endpoints(tenant=authority.tenant_id, version=1)
        urls.token_endpoint   # https://login.ccflow.test/<tenant>/oauth2/token
    """

    tenant: str
    """The tenant as asked for (a tenant id, or ``organizations``/``common``)."""
    version: int
    """1 or 2: Azure AD's v1 or v2 endpoints."""
    issuer: str
    """``iss`` of tokens from this tenant (v2 ``{host}/{t}/v2.0``, v1 ``{host}/{t}/``); for
    ``organizations``/``common``, the ``{tenantid}`` template."""
    token_endpoint: str
    discovery_url: str
    jwks_uri: str


def endpoints_for(host: str, tenant: str, *, version: int = 2) -> Endpoints:
    """The endpoints of ``tenant`` on ``host`` (an authority host, without a trailing ``/``)."""
    if version not in (1, 2):
        raise ValueError(f"version must be 1 or 2, got {version!r}")
    issuer_tenant = ISSUER_TEMPLATE if tenant.lower() in MULTI_TENANT_NAMES else tenant
    # Azure AD's v1 issuer is https://sts.windows.net/{tid}/; the local authority keeps its own
    # host, so that its v1 tokens cannot pass for Azure AD's.
    issuer = f"{host}/{issuer_tenant}/v2.0" if version == 2 else f"{host}/{issuer_tenant}/"
    return Endpoints(
        tenant=tenant,
        version=version,
        issuer=issuer,
        token_endpoint=token_endpoint_for(host, tenant, version=version),
        discovery_url=discovery_url_for(host, tenant, version=version),
        jwks_uri=jwks_uri_for(host, tenant, version=version),
    )


@dataclass(frozen=True, slots=True)
class Route:
    """Which endpoint a request path names: ``endpoint`` is ``"other"`` for none."""

    endpoint: str
    tenant: str = ""
    version: int = 2


def route(path: str, *, prefix: str = "") -> Route:
    """The route of ``path``, after the host's own path ``prefix`` (a proxy's, ``/prefix``)."""
    if prefix:
        path = path[len(prefix) :] if path.startswith(prefix + "/") else ""
    if path.strip("/") in _IDENTITY_PATHS:
        return Route(_IDENTITY_PATHS[path.strip("/")])
    parts = path.strip("/").split("/")
    if len(parts) < 2:
        return Route("other")
    tenant, rest = parts[0], "/".join(parts[1:])
    endpoint, version = _PATHS.get(rest, ("other", 2))
    return Route(endpoint, tenant, version)
