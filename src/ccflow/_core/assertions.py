"""``private_key_jwt`` client assertions: claims, header, signing and when to make a new one.

No IO and no clock: key material, the client id, the token endpoint, ``now`` and the ``jti``
come in as arguments. What :class:`ccflow.ClientCertificate` sends (as msal does)::

    >>> claims = assertion_claims(client_id="cid", token_endpoint="https://x/token",
    ...                           now=1000.5, jti="j-1")
    >>> claims == {"aud": "https://x/token", "iss": "cid", "sub": "cid", "jti": "j-1",
    ...            "nbf": 1000, "iat": 1000, "exp": 1600}
    True
    >>> assertion_header("PS256", x5t="sha1", x5t_s256="sha256")
    {'alg': 'PS256', 'typ': 'JWT', 'x5t#S256': 'sha256'}
    >>> assertion_header("RS256", x5t="sha1", x5t_s256="sha256", x5c=("MIIB",))
    {'alg': 'RS256', 'typ': 'JWT', 'x5t': 'sha1', 'x5c': ['MIIB']}

An assertion is reused until :data:`REUSE_MARGIN` seconds before it expires::

    >>> held = HeldAssertion("<jwt>", expires_on=1600, obtained_at=1000)
    >>> needs_new_assertion(held, now=1539), needs_new_assertion(held, now=1540)
    (False, True)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from ccflow._core.b64 import b64url_decode

__all__ = [
    "ALGORITHMS",
    "ASSERTION_LIFETIME",
    "JWT_BEARER",
    "REUSE_MARGIN",
    "Algorithm",
    "HeldAssertion",
    "assertion_claims",
    "assertion_fields",
    "assertion_header",
    "needs_new_assertion",
    "sign_assertion",
    "unverified_expiry",
    "usable_after_failure",
]

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME = 600
"""Seconds an assertion is valid for (``exp`` - ``iat``), as msal sends them."""
REUSE_MARGIN = 60.0
"""An assertion is replaced this many seconds before its ``exp``, leaving room for the request
and clock skew between us and the authority."""

Algorithm = Literal["PS256", "RS256"]
ALGORITHMS: tuple[Algorithm, ...] = ("PS256", "RS256")


@dataclass(frozen=True, slots=True)
class HeldAssertion:
    """An assertion being reused: its value (never in ``repr``), ``exp`` and when it was made
    or read. ``expires_on`` is ``None`` when it could not be read (opaque assertions)."""

    value: str = field(repr=False)
    expires_on: float | None
    obtained_at: float


def assertion_claims(
    *, client_id: str, token_endpoint: str, now: float, jti: str, lifetime: int = ASSERTION_LIFETIME
) -> dict[str, Any]:
    """The claims Azure AD requires: ``aud`` the token endpoint, ``iss`` = ``sub`` the client
    id, a unique ``jti``, ``nbf``/``iat`` now and ``exp`` ``lifetime`` seconds later."""
    issued = int(now)
    return {
        "aud": token_endpoint,
        "iss": client_id,
        "sub": client_id,
        "jti": jti,
        "nbf": issued,
        "iat": issued,
        "exp": issued + lifetime,
    }


def assertion_header(
    algorithm: Algorithm, *, x5t: str, x5t_s256: str, x5c: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """The JOSE header: PS256 names the certificate by SHA-256 thumbprint (``x5t#S256``),
    RS256 by SHA-1 (``x5t``, what older tenants expect); ``x5c`` carries the chain (standard
    base64 DER, leaf first) for subject-name/issuer authentication."""
    header: dict[str, Any] = {"alg": algorithm, "typ": "JWT"}
    if algorithm == "PS256":
        header["x5t#S256"] = x5t_s256
    else:
        header["x5t"] = x5t
    if x5c:
        header["x5c"] = list(x5c)
    return header


def sign_assertion(key: rsa.RSAPrivateKey, claims: dict[str, Any], header: dict[str, Any]) -> str:
    """The compact JWS of ``claims`` signed with ``key`` by ``header["alg"]``."""
    extra = {k: v for k, v in header.items() if k not in ("alg", "typ")}
    return jwt.encode(claims, key, algorithm=header["alg"], headers=extra)


def assertion_fields(client_id: str, assertion: str) -> tuple[tuple[str, str], ...]:
    """The form fields that authenticate a client with ``assertion`` (RFC 7523)."""
    return (
        ("client_id", client_id),
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", assertion),
    )


def unverified_expiry(assertion: str) -> float | None:
    """``exp`` of a JWT read without verifying anything, or ``None`` when there is none.

    Used only to decide when to fetch a new assertion, never to trust one::

        >>> unverified_expiry("e30.eyJleHAiOjE3MDAwMDAwMDB9.sig")
        1700000000.0
        >>> unverified_expiry("not a jwt") is None
        True
    """
    parts = assertion.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1]
    try:
        claims = json.loads(b64url_decode(payload))
    except (ValueError, RecursionError):  # RecursionError: "[[[[..."
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    try:
        value = float(exp)  # an int too large for a float raises OverflowError
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def needs_new_assertion(
    held: HeldAssertion | None,
    *,
    now: float,
    margin: float = REUSE_MARGIN,
    max_age: float | None = None,
) -> bool:
    """Whether to make (or read) a new assertion instead of reusing ``held``.

    New when there is none, when it expires within ``margin`` seconds, when its expiry is
    unknown and there is no ``max_age`` (so an opaque assertion is never reused blindly), or
    when it is older than ``max_age`` (a token file re-read every few minutes picks up a
    rotated token)::

        >>> opaque = HeldAssertion("x", expires_on=None, obtained_at=0)
        >>> needs_new_assertion(opaque, now=1), needs_new_assertion(opaque, now=1, max_age=300)
        (True, False)
    """
    if held is None or not usable_after_failure(held, now=now, margin=margin):
        return True
    if max_age is None:
        return held.expires_on is None
    return now - held.obtained_at >= max_age


def usable_after_failure(held: HeldAssertion, *, now: float, margin: float = REUSE_MARGIN) -> bool:
    """Whether ``held`` may still be sent when getting a new one failed: when its expiry is
    unknown, or more than ``margin`` seconds away::

        >>> held = HeldAssertion("<jwt>", expires_on=1600, obtained_at=1000)
        >>> usable_after_failure(held, now=1539), usable_after_failure(held, now=1540)
        (True, False)
    """
    return held.expires_on is None or now < held.expires_on - margin
