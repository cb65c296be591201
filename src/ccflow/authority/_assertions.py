"""``private_key_jwt`` client assertions, checked as Azure AD checks them.

The assertion names a registered certificate by thumbprint (``x5t#S256`` or ``x5t``); its
signature must verify with that certificate's key; ``aud`` must be this token endpoint;
``iss`` and ``sub`` the client id; ``exp`` not passed and not too far ahead; ``jti`` not
replayed. An ``x5c`` header is optional; when present, its first certificate must be the
registered certificate the thumbprint names (else AADSTS700027), so a chain that disagrees with
the thumbprint never passes.

What counts as a replay: Azure AD lets a client present the very same assertion again until it
expires (msal and ccflow both reuse an assertion for about nine minutes, e.g. for a second
scope), so by default only a *different* assertion carrying an already-seen ``jti`` is refused.
``ReplayCache(one_time=True)`` (``Authority(one_time_assertions=True)``) also refuses the same
assertion sent twice, as RFC 7523 section 3 allows a server to.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import threading
from typing import Any

import jwt

from ccflow._core.b64 import b64url_encode
from ccflow.authority._aad import AadError
from ccflow.authority._registrations import ClientApp, RegisteredCertificate

__all__ = ["JWT_BEARER", "MAX_ASSERTION_LIFETIME", "ReplayCache", "verify_assertion"]

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_LIFETIME = 3600
"""An assertion may expire at most this many seconds from now (msal and ccflow use 600)."""
_SKEW = 300
_ALGORITHMS = ("RS256", "PS256")


class ReplayCache:
    """The assertion ids (``jti``) seen per client, kept until their assertion expires.

    Only a digest of each assertion is kept, never the assertion itself.
    """

    def __init__(self, *, one_time: bool = False) -> None:
        self.one_time = one_time
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], tuple[float, bytes]] = {}

    def first_use(
        self, client_id: str, jti: str, *, exp: float, now: float, assertion: str
    ) -> bool:
        """Record ``jti``; False when an unexpired assertion already used it, unless it is the
        same assertion presented again and reuse is allowed (``one_time=False``)."""
        digest = hashlib.sha256(assertion.encode()).digest()
        with self._lock:
            if len(self._seen) > 1024:
                self._seen = {k: v for k, v in self._seen.items() if v[0] + _SKEW > now}
            key = (client_id, jti)
            seen = self._seen.get(key)
            if seen is not None and seen[0] + _SKEW > now:
                return not self.one_time and hmac.compare_digest(seen[1], digest)
            self._seen[key] = (exp, digest)
            return True


def _invalid(code: int, message: str) -> AadError:
    return AadError(401, "invalid_client", code, message)


def _number(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _check_x5c(x5c: object, cert: RegisteredCertificate, client_id: str) -> None:
    """``x5c`` (RFC 7515 4.1.6: standard base64 DER, leaf first) must start with ``cert``."""
    if not isinstance(x5c, list) or not x5c or not all(isinstance(c, str) for c in x5c):
        raise _invalid(
            50027,
            "JWT token is invalid or malformed: the 'x5c' header must be a non-empty list of "
            "base64-encoded certificates.",
        )
    try:
        # msal sends PEM bodies, line breaks included.
        leaf = base64.b64decode("".join(x5c[0].split()), validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(
            50027,
            "JWT token is invalid or malformed: the first 'x5c' certificate is not valid base64.",
        ) from None
    if not hmac.compare_digest(b64url_encode(hashlib.sha256(leaf).digest()), cert.x5t_s256):
        raise _invalid(
            700027,
            f"The certificate in the client assertion's 'x5c' header is not the certificate "
            f"its thumbprint names. [Reason - The first 'x5c' certificate (SHA-256 thumbprint "
            f"'{b64url_encode(hashlib.sha256(leaf).digest())}') differs from the registered "
            f"certificate with thumbprint '{cert.thumbprint}' on app Id '{client_id}'; send "
            f"the registered certificate first in 'x5c', or no 'x5c' at all.]",
        )


def verify_assertion(
    assertion: str,
    *,
    client: ClientApp,
    token_endpoint: str,
    now: float,
    replays: ReplayCache,
) -> None:
    """Raise :class:`AadError` unless ``assertion`` authenticates ``client``."""
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError:
        raise _invalid(50027, "JWT token is invalid or malformed.") from None
    alg = header.get("alg")
    if alg not in _ALGORITHMS:
        raise _invalid(
            5002738, f"Invalid JWT token. '{alg}' is not a supported signature algorithm."
        )
    x5t_s256, x5t = header.get("x5t#S256"), header.get("x5t")
    cert = client.certificate(
        x5t=x5t if isinstance(x5t, str) else None,
        x5t_s256=x5t_s256 if isinstance(x5t_s256, str) else None,
    )
    if cert is None:
        raise _invalid(
            700027,
            f"The certificate with identifier used to sign the client assertion is not "
            f"registered on application. [Reason - The key was not found., Thumbprint of key "
            f"used by client: '{x5t_s256 or x5t}', Please visit the Azure Portal, Graph Explorer "
            f"or directly use MS Graph to see configured keys for app Id "
            f"'{client.client_id}'.]",
        )
    if "x5c" in header:
        _check_x5c(header["x5c"], cert, client.client_id)
    try:
        claims: dict[str, Any] = jwt.decode(
            assertion,
            cert.public_key,
            algorithms=[alg],
            options={
                "verify_signature": True,
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": False,
                "verify_iss": False,
            },
        )
    except jwt.InvalidSignatureError:
        raise _invalid(700027, "Client assertion contains an invalid signature.") from None
    except jwt.PyJWTError:
        raise _invalid(50027, "JWT token is invalid or malformed.") from None
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    # The host and the tenant segment are case-insensitive, as Azure AD matches tenants.
    if token_endpoint.lower() not in {a.lower() for a in audiences if isinstance(a, str)}:
        raise _invalid(
            700023,
            f"Client assertion audience claim does not match Realm issuer. "
            f"The 'aud' claim must be '{token_endpoint}'.",
        )
    # Client ids are GUIDs, matched in any case (as the token endpoint finds the client).
    iss, sub = claims.get("iss"), claims.get("sub")
    if not (
        isinstance(iss, str)
        and isinstance(sub, str)
        and iss.lower() == sub.lower() == client.client_id.lower()
    ):
        raise _invalid(
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter: "
            "'iss' and 'sub' must both be the client id.",
        )
    exp = _number(claims, "exp")
    if exp is None:
        raise _invalid(50027, "JWT token is invalid or malformed: 'exp' is missing.")
    nbf = _number(claims, "nbf")
    if exp <= now or (nbf is not None and nbf > now + _SKEW):
        raise _invalid(
            700024,
            f"Client assertion is not within its valid time range. Current time: "
            f"{int(now)}, expiry time of assertion {int(exp)}.",
        )
    if exp > now + MAX_ASSERTION_LIFETIME + _SKEW:
        raise _invalid(
            700024,
            f"Client assertion is not within its valid time range: it expires more than "
            f"{MAX_ASSERTION_LIFETIME} seconds from now ({int(exp)}, current time {int(now)}).",
        )
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise _invalid(50027, "JWT token is invalid or malformed: 'jti' is missing.")
    if not replays.first_use(client.client_id, jti, exp=exp, now=now, assertion=assertion):
        raise _invalid(
            700229,
            "The client assertion has already been used: its 'jti' was seen before in "
            "another assertion (or, with one-time assertions, in this one). Send a new "
            "assertion with a fresh 'jti'.",
        )
