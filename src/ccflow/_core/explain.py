"""What a token says, in words: the meaning of Azure AD's claims and times relative to ``now``.

IO-free, as the rest of the core: ``ccflow decode`` and ``ccflow verify`` pass the clock in.
Nothing here checks a signature; :func:`decode_unverified` only splits and base64url-decodes,
so its output must always be shown as *unverified*::

    >>> explain_time(1_700_003_599, now=1_700_000_000, claim="exp")
    '2023-11-14 23:13:19 UTC (in 59 min)'
    >>> explain_time(1_700_000_000, now=1_700_000_180, claim="exp")
    '2023-11-14 22:13:20 UTC (expired 3 min ago)'
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ccflow._core.b64 import b64url_decode
from ccflow.errors import InvalidTokenError

__all__ = [
    "CLAIM_MEANINGS",
    "HEADER_MEANINGS",
    "TIME_CLAIMS",
    "DecodedToken",
    "ExplainedField",
    "decode_unverified",
    "explain_claims",
    "explain_header",
    "explain_time",
    "humanize_seconds",
    "without_bearer",
]

# Longest token we bother to decode; the API side refuses far smaller ones (16 KiB by default).
_MAX_TOKEN_CHARS = 64 * 1024

HEADER_MEANINGS: Mapping[str, str] = {
    "typ": "token type: JWT (or at+jwt for RFC 9068 access tokens)",
    "alg": "signing algorithm; Azure AD signs access tokens with RS256",
    "kid": "key id: which key of the issuer's JWKS signed the token",
    "x5t": "SHA-1 thumbprint (base64url) of the signing certificate; Azure AD sets it to kid",
}

CLAIM_MEANINGS: Mapping[str, str] = {
    "aud": "audience: the API this token is for (its client id in v2, often its App ID URI in v1)",
    "iss": "issuer: the authority and tenant that issued and signed the token",
    "azp": "authorized party: client id of the application that requested the token (v2)",
    "azpacr": "how the client authenticated: 0 public client, 1 secret, 2 certificate (v2)",
    "appid": "application id: client id of the application that requested the token (v1)",
    "appidacr": "how the client authenticated: 0 public client, 1 secret, 2 certificate (v1)",
    "roles": "app roles granted to the caller (application permissions with admin consent)",
    "scp": "delegated scopes: a user signed in; client-credentials tokens carry roles instead",
    "tid": "tenant id: the directory the calling application signed in to",
    "oid": "object id of the caller's service principal in that tenant",
    "sub": "subject: the principal the token is about; for an app, its service principal",
    "ver": "token version, 1.0 or 2.0: the API's accessTokenAcceptedVersion decides",
    "uti": "unique token id (Azure AD internal; quote it when reporting a problem)",
    "rh": "Azure AD internal claim used to revalidate tokens; ignore it",
    "aio": "Azure AD internal claim; ignore it",
    "idp": "identity provider that authenticated the subject (v1; usually the issuer)",
    "iat": "issued at",
    "nbf": "not before: the token is refused before this time",
    "exp": "expires: the token is refused after this time",
}


TIME_CLAIMS: frozenset[str] = frozenset({"iat", "nbf", "exp"})


@dataclass(frozen=True, slots=True)
class DecodedToken:
    """A JWT split and decoded, *not* verified: nothing here can be trusted yet."""

    header: Mapping[str, Any]
    claims: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ExplainedField:
    """One header field or claim, ready to show: its JSON value, meaning and time (if any)."""

    name: str
    value: Any
    meaning: str | None
    when: str | None = None


def _not_json(constant: str) -> Any:
    """Refuse NaN and Infinity, which Python's json reads but JSON has not."""
    raise ValueError(f"{constant} is not a JSON value")


def _b64url_json(segment: str, what: str) -> dict[str, Any]:
    """One JWS segment decoded as a JSON object."""
    # A JWS segment is non-empty and unpadded (RFC 7515 section 2); b64url_decode takes both.
    try:
        if not segment or segment.endswith("="):
            raise ValueError(segment)
        raw = b64url_decode(segment)
    except ValueError:
        raise InvalidTokenError(
            f"the token's {what} is not base64url", reason="malformed"
        ) from None
    try:
        # NaN and Infinity are not JSON (RFC 8259), though Python's json reads them.
        value = json.loads(raw, parse_constant=_not_json)
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: "[[[[..."
        raise InvalidTokenError(f"the token's {what} is not JSON", reason="malformed") from None
    if not isinstance(value, dict):
        raise InvalidTokenError(f"the token's {what} is not a JSON object", reason="malformed")
    return value


def without_bearer(text: str) -> str:
    """``text`` stripped, and without a leading ``Bearer `` (as copied from an
    ``Authorization`` header)::

        >>> without_bearer("  Bearer eyJ.e30.sig ")
        'eyJ.e30.sig'
    """
    text = text.strip()
    if text[:7].lower() == "bearer ":
        text = text[7:].strip()
    return text


def decode_unverified(token: str) -> DecodedToken:
    """Split a compact JWS and decode its header and claims, checking nothing else.

    Accepts a leading ``Bearer `` (as copied from an ``Authorization`` header) and surrounding
    whitespace. Raises :class:`~ccflow.errors.InvalidTokenError` (``reason="malformed"``) when
    the text is not three base64url segments holding JSON objects; the message never quotes
    the token.
    """
    text = without_bearer(token)
    if not text:
        raise InvalidTokenError("no token given", reason="malformed")
    if len(text) > _MAX_TOKEN_CHARS:
        raise InvalidTokenError(
            f"the token is longer than {_MAX_TOKEN_CHARS} characters", reason="malformed"
        )
    parts = text.split(".")
    if len(parts) != 3:
        hint = " (an encrypted JWE has 5; ccflow handles signed tokens)" if len(parts) == 5 else ""
        raise InvalidTokenError(
            f"a JWT has 3 dot-separated parts, this text has {len(parts)}{hint}",
            reason="malformed",
        )
    return DecodedToken(
        header=_b64url_json(parts[0], "header"), claims=_b64url_json(parts[1], "payload")
    )


def humanize_seconds(seconds: float) -> str:
    """A duration, rounded down, as a person says it: ``"42 s"``, ``"59 min"``, ``"5 h 3 min"``.

    Always non-negative; the caller says whether it is past or future.
    """
    s = int(abs(seconds))
    if s < 60:
        return f"{s} s"
    if s < 2 * 3600:
        return f"{s // 60} min"
    if s < 48 * 3600:
        hours, minutes = divmod(s // 60, 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{s // 86400} days"


def _utc(timestamp: float) -> str:
    """Unix seconds as a UTC date and time."""
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def explain_time(timestamp: Any, *, now: float, claim: str = "exp") -> str | None:
    """A NumericDate as a UTC date plus where it stands relative to ``now``, as jwt.ms does.

    ``exp``: ``"... (in 59 min)"`` or ``"... (expired 3 min ago)"``; ``nbf``: ``"(became valid
    2 min ago)"`` or ``"(not valid for another 2 min)"``; ``iat`` and others: ``"(3 min ago)"`` or
    ``"(in 3 min, in the future)"``. ``None`` when the value is not a number (booleans are not
    numbers here) or not a representable date.
    """
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
        return None
    try:
        date = _utc(timestamp)
    except (OverflowError, OSError, ValueError):
        return None
    delta = timestamp - now
    span = humanize_seconds(delta)
    if claim == "exp":
        relative = f"in {span}" if delta > 0 else f"expired {span} ago"
    elif claim == "nbf":
        relative = f"not valid for another {span}" if delta > 0 else f"became valid {span} ago"
    else:
        relative = f"in {span}, in the future" if delta > 0 else f"{span} ago"
    return f"{date} ({relative})"


def explain_header(header: Mapping[str, Any]) -> list[ExplainedField]:
    """Each header field with its meaning (``None`` for fields without a well-known one)."""
    return [
        ExplainedField(name, value, HEADER_MEANINGS.get(name)) for name, value in header.items()
    ]


def explain_claims(claims: Mapping[str, Any], *, now: float) -> list[ExplainedField]:
    """Each claim, in the token's order, with its meaning and, for ``iat``/``nbf``/``exp``,
    the UTC date and how long ago or ahead it is relative to ``now``."""
    return [
        ExplainedField(
            name,
            value,
            CLAIM_MEANINGS.get(name),
            explain_time(value, now=now, claim=name) if name in TIME_CLAIMS else None,
        )
        for name, value in claims.items()
    ]
