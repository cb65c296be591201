"""Access tokens as Azure AD issues them: the claims (v2 or v1 shape) and the RS256 signature."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

import jwt

from ccflow.authority._keys import SigningKey
from ccflow.authority._registrations import ApiApp, ClientApp

__all__ = ["access_token_claims", "delegated_claims", "sign"]


def _opaque(length: int) -> str:
    """Random base64url text of ``length`` characters, for Azure AD's opaque claims."""
    return secrets.token_urlsafe(length)[:length]


def access_token_claims(
    client: ClientApp,
    api: ApiApp,
    *,
    tenant: str,
    issuer: str,
    roles: tuple[str, ...],
    version: int,
    lifetime: int,
    now: float,
    credential_type: str,
) -> dict[str, Any]:
    """The claims of a token for ``client`` (of ``tenant``) calling ``api``, in Azure AD's
    order; ``credential_type`` is ``azpacr``/``appidacr`` ("1" secret, "2" certificate)."""
    iat = int(now)
    oid = client.object_id or client.client_id
    claims: dict[str, Any] = {
        "aud": api.client_id if version == 2 else api.identifier_uri,
        "iss": issuer,
        "iat": iat,
        "nbf": iat,
        "exp": iat + lifetime,
        "aio": _opaque(48),
    }
    if version == 2:
        claims.update(azp=client.client_id, azpacr=credential_type)
    else:
        claims.update(appid=client.client_id, appidacr=credential_type, idp=issuer)
    claims.update(oid=oid)
    if roles:
        claims["roles"] = list(roles)
    claims.update(
        rh=f"0.A{_opaque(40)}.",
        sub=oid,
        tid=tenant,
        uti=_opaque(22),
        ver="2.0" if version == 2 else "1.0",
    )
    return claims


def delegated_claims(
    app_claims: Mapping[str, Any],
    *,
    scopes: tuple[str, ...],
    user_oid: str,
    name: str,
    username: str,
    roles: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The claims of a delegated (user) token, from those of the same client's app token.

    As Azure AD v2 issues it after a user's sign-in: ``scp`` (space-separated), the user's
    ``oid``, ``name``, ``preferred_username``, ``idtyp`` ``"user"``, a pairwise ``sub``, and
    ``roles`` only for app roles assigned to the user.
    """
    claims = {k: v for k, v in app_claims.items() if k not in ("roles", "oid", "sub")}
    claims.update(
        idtyp="user",
        name=name,
        oid=user_oid,
        preferred_username=username,
        scp=" ".join(scopes),
        sub=_opaque(43),
    )
    if roles:
        claims["roles"] = list(roles)
    return claims


def sign(
    claims: Mapping[str, Any], key: SigningKey, *, headers: Mapping[str, Any] | None = None
) -> str:
    """``claims`` signed RS256 with ``key``, under Azure AD's header (``typ``, ``alg``, ``kid``,
    ``x5t``) updated by ``headers``."""
    header = {"typ": "JWT", "alg": "RS256", "x5t": key.x5t, "kid": key.kid, **(headers or {})}
    return jwt.encode(dict(claims), key.private_key, algorithm="RS256", headers=header)
