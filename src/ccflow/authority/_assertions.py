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

from ccflow._certificates import x5t_s256_of
from ccflow.authority import _aad
from ccflow.authority._registrations import ClientApp, RegisteredCertificate

__all__ = ["JWT_BEARER", "MAX_ASSERTION_LIFETIME", "ReplayCache", "verify_assertion"]

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
"""The ``client_assertion_type`` of a certificate or federated credential's request."""
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


def _number(claims: dict[str, Any], name: str) -> float | None:
    """The claim ``name`` as a finite number, or ``None``."""
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _check_x5c(x5c: object, cert: RegisteredCertificate, client_id: str) -> None:
    """``x5c`` (RFC 7515 4.1.6: standard base64 DER, leaf first) must start with ``cert``."""
    if not isinstance(x5c, list) or not x5c or not all(isinstance(c, str) for c in x5c):
        raise _aad.X5C_NOT_A_LIST()
    try:
        # msal sends PEM bodies, line breaks included.
        leaf = base64.b64decode("".join(x5c[0].split()), validate=True)
    except (binascii.Error, ValueError):
        raise _aad.X5C_NOT_BASE64() from None
    sent = x5t_s256_of(leaf)
    if not hmac.compare_digest(sent, cert.x5t_s256):
        raise _aad.X5C_NOT_THE_CERTIFICATE(
            sent=sent, thumbprint=cert.thumbprint, client_id=client_id
        )


def _certificate(header: dict[str, Any], client: ClientApp) -> RegisteredCertificate:
    """The registered certificate the header's thumbprint (and ``x5c``, if sent) names."""
    x5t_s256, x5t = header.get("x5t#S256"), header.get("x5t")
    cert = client.certificate(
        x5t=x5t if isinstance(x5t, str) else None,
        x5t_s256=x5t_s256 if isinstance(x5t_s256, str) else None,
    )
    if cert is None:
        raise _aad.CERTIFICATE_NOT_REGISTERED(
            thumbprint=x5t_s256 or x5t, client_id=client.client_id
        )
    if "x5c" in header:
        _check_x5c(header["x5c"], cert, client.client_id)
    return cert


def _signed_claims(assertion: str, client: ClientApp) -> dict[str, Any]:
    """The claims of ``assertion`` once its signature verifies with the certificate it names."""
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError:
        raise _aad.ASSERTION_MALFORMED() from None
    alg = header.get("alg")
    if alg not in _ALGORITHMS:
        raise _aad.UNSUPPORTED_ALGORITHM(alg=alg)
    cert = _certificate(header, client)
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
        raise _aad.BAD_SIGNATURE() from None
    except jwt.PyJWTError:
        raise _aad.ASSERTION_MALFORMED() from None
    return claims


def _check_parties(claims: dict[str, Any], client: ClientApp, token_endpoint: str) -> None:
    """``aud`` must be ``token_endpoint``; ``iss`` and ``sub`` the client id."""
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    # The host and the tenant segment are case-insensitive, as Azure AD matches tenants.
    if token_endpoint.lower() not in {a.lower() for a in audiences if isinstance(a, str)}:
        raise _aad.WRONG_AUDIENCE(token_endpoint=token_endpoint)
    # Client ids are GUIDs, matched in any case (as the token endpoint finds the client).
    iss, sub = claims.get("iss"), claims.get("sub")
    if not (
        isinstance(iss, str)
        and isinstance(sub, str)
        and iss.lower() == sub.lower() == client.client_id.lower()
    ):
        raise _aad.WRONG_ISSUER()


def _expiry(claims: dict[str, Any], now: float) -> float:
    """``exp``, once ``exp`` and ``nbf`` put ``now`` inside the assertion's time range."""
    exp = _number(claims, "exp")
    if exp is None:
        raise _aad.EXP_MISSING()
    nbf = _number(claims, "nbf")
    if exp <= now or (nbf is not None and nbf > now + _SKEW):
        raise _aad.OUT_OF_TIME(now=int(now), exp=int(exp))
    if exp > now + MAX_ASSERTION_LIFETIME + _SKEW:
        raise _aad.TOO_FAR_AHEAD(limit=MAX_ASSERTION_LIFETIME, exp=int(exp), now=int(now))
    return exp


def verify_assertion(
    assertion: str,
    *,
    client: ClientApp,
    token_endpoint: str,
    now: float,
    replays: ReplayCache,
) -> None:
    """Raise :class:`AadError` unless ``assertion`` authenticates ``client``."""
    claims = _signed_claims(assertion, client)
    _check_parties(claims, client, token_endpoint)
    exp = _expiry(claims, now)
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise _aad.JTI_MISSING()
    if not replays.first_use(client.client_id, jti, exp=exp, now=now, assertion=assertion):
        raise _aad.REPLAYED()
