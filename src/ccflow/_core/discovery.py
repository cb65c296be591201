"""OpenID Connect discovery documents: parse and check, with no IO.

Only two fields matter to an API: ``issuer`` (what ``iss`` must say) and ``jwks_uri``
(where the signing keys are). Both are checked before anything trusts them::

    meta = parse_discovery(body, expected_issuer="https://idp.example/realms/a")
    meta.issuer, meta.jwks_uri
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ccflow._core.claims import TENANT_PLACEHOLDER
from ccflow._core.json_object import json_object
from ccflow._core.urls import require_secure_url
from ccflow.errors import ConfigurationError

__all__ = ["DiscoveryError", "ProviderMetadata", "discovery_url_for_issuer", "parse_discovery"]

_WELL_KNOWN = "/.well-known/openid-configuration"


class DiscoveryError(ValueError):
    """A discovery document that cannot be used (the message says why, without secrets)."""


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    """The parts of a discovery document an API relies on."""

    issuer: str
    """The issuer, possibly a multi-tenant template containing ``{tenantid}``."""
    jwks_uri: str

    @property
    def multi_tenant(self) -> bool:
        """True when the issuer is Azure AD's ``{tenantid}`` template."""
        return TENANT_PLACEHOLDER in self.issuer


def discovery_url_for_issuer(issuer: str, *, setting: str = "issuer") -> str:
    """``{issuer}/.well-known/openid-configuration`` (OIDC Discovery 1.0 section 4)."""
    require_secure_url(issuer, setting=setting)
    return issuer.rstrip("/") + _WELL_KNOWN


def parse_discovery(
    document: bytes | str | Mapping[str, Any],
    *,
    expected_issuer: str | None = None,
    multi_tenant: bool | None = None,
) -> ProviderMetadata:
    """Parse a discovery document and check it.

    ``expected_issuer``: the document's ``issuer`` must equal it exactly (generic OIDC, where
    the configured issuer is the trust anchor). ``multi_tenant``: when not ``None``, the
    issuer must (``True``) or must not (``False``) be the ``{tenantid}`` template.
    ``jwks_uri`` must be ``https://`` (or ``http://`` to a loopback host).
    Raises :class:`DiscoveryError`.
    """
    document = json_object(document, "the discovery document", DiscoveryError)
    issuer = document.get("issuer")
    jwks_uri = document.get("jwks_uri")
    if not isinstance(issuer, str) or not issuer:
        raise DiscoveryError("the discovery document has no issuer")
    if not isinstance(jwks_uri, str) or not jwks_uri:
        raise DiscoveryError("the discovery document has no jwks_uri")
    if expected_issuer is not None and issuer != expected_issuer:
        raise DiscoveryError(
            f"the discovery document's issuer {issuer!r} is not the configured issuer "
            f"{expected_issuer!r}"
        )
    if multi_tenant is not None and (TENANT_PLACEHOLDER in issuer) != multi_tenant:
        kind = "a {tenantid} template" if multi_tenant else "a single tenant's issuer"
        raise DiscoveryError(f"the discovery document's issuer {issuer!r} is not {kind}")
    try:
        require_secure_url(issuer.replace(TENANT_PLACEHOLDER, "t"), setting="issuer")
        require_secure_url(jwks_uri, setting="jwks_uri")
        # The port is parsed only when asked for: a bad one would otherwise surface as an
        # error of the HTTP client on every later fetch.
        urlsplit(jwks_uri).port  # noqa: B018
    except ConfigurationError as exc:
        raise DiscoveryError(f"the discovery document is unusable: {exc}") from None
    except ValueError:  # urlsplit: a broken IPv6 host or port
        raise DiscoveryError(
            "the discovery document is unusable: a URL in it is malformed"
        ) from None
    return ProviderMetadata(issuer=issuer, jwks_uri=jwks_uri)
