"""Compact JWS: one strict parse, then ``key.verify()``; no IO and no clock.

::

    parsed = parse_compact(token, algorithms=frozenset({"RS256"}))
    verify_signature(parsed, key.public_key)        # raises InvalidTokenError("signature")

Rules, each with an :class:`~ccflow.errors.InvalidTokenError` ``reason``:

- ``malformed``: over the size cap (checked before anything else), not ASCII, not three
  segments, bad base64url (wrong alphabet, bad padding, non-canonical trailing bits), header or
  claims not a JSON object, a ``crit`` header (no extension is understood), ``b64: false``;
- ``algorithm``: ``alg`` missing, not a string, or not in the allow-list (``none`` and
  ``HS*`` can never be in it);
- ``key``: ``kid`` missing, empty or not a string. The ``kid`` only picks a key from the JWKS
  we fetched ourselves; ``jku``, ``x5u``, ``jwk`` and ``x5c`` headers are never fetched or
  trusted;
- ``signature``: the signature does not verify with the selected key. RSA signatures must be
  exactly as long as the key's modulus (RFC 8017 8.1.2 and 8.2.2), so that no token has a
  second spelling; ECDSA signatures are ``r || s`` of the curve's exact size (RFC 7518 3.4).

The checks run in the order of this list: every segment is decoded and both JSON objects read
before ``alg`` and then ``kid`` are judged, so a token with several faults gets the reason
listed first. Error messages never contain the token.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ccflow._core.b64 import b64url_decode
from ccflow._core.json_object import json_object
from ccflow.errors import ConfigurationError, InvalidTokenError

__all__ = [
    "DEFAULT_ALGORITHMS",
    "DEFAULT_MAX_TOKEN_SIZE",
    "SUPPORTED_ALGORITHMS",
    "ParsedToken",
    "PublicKey",
    "check_algorithms",
    "encoded",
    "parse_compact",
    "verify_signature",
]

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

DEFAULT_MAX_TOKEN_SIZE: Final = 16 * 1024
DEFAULT_ALGORITHMS: Final = frozenset({"RS256"})

_HASHES: Final[Mapping[str, type[hashes.HashAlgorithm]]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
# The curve each ECDSA algorithm signs with, and its coordinate size in bytes.
_CURVES: Final[Mapping[str, tuple[type[ec.EllipticCurve], int]]] = {
    "ES256": (ec.SECP256R1, 32),
    "ES384": (ec.SECP384R1, 48),
    "ES512": (ec.SECP521R1, 66),
}
SUPPORTED_ALGORITHMS: Final = frozenset(
    [f"{family}{bits}" for family in ("RS", "PS") for bits in _HASHES] + list(_CURVES)
)


def check_algorithms(algorithms: object, *, setting: str = "algorithms") -> frozenset[str]:
    """Validate an algorithm allow-list from configuration; ``none`` and ``HS*`` are refused.

    A shared-secret algorithm would let anyone holding the public key forge tokens (the
    classic RS256 -> HS256 confusion), so it cannot be configured at all.
    """
    if isinstance(algorithms, str):
        algorithms = [algorithms]
    if isinstance(algorithms, Iterable) and not isinstance(algorithms, Mapping):
        algorithms = list(algorithms)
    if not isinstance(algorithms, list) or not algorithms:
        raise ConfigurationError(
            f"{setting} must be a non-empty list of algorithm names such as ['RS256']",
            setting=setting,
        )
    for alg in algorithms:
        if not isinstance(alg, str):
            raise ConfigurationError(f"{setting} entries must be strings", setting=setting)
        if alg.lower() == "none" or alg.upper().startswith("HS"):
            raise ConfigurationError(
                f"{setting}: {alg!r} is never allowed for access tokens (only asymmetric "
                f"algorithms: {', '.join(sorted(SUPPORTED_ALGORITHMS))})",
                setting=setting,
            )
        if alg not in SUPPORTED_ALGORITHMS:
            raise ConfigurationError(
                f"{setting}: unsupported algorithm {alg!r}; choose from "
                f"{', '.join(sorted(SUPPORTED_ALGORITHMS))}",
                setting=setting,
            )
    return frozenset(algorithms)


@dataclass(frozen=True, slots=True)
class ParsedToken:
    """A compact JWS taken apart but not yet trusted: nothing here is verified."""

    header: Mapping[str, Any]
    claims: Mapping[str, Any] = field(repr=False)
    alg: str
    kid: str
    signing_input: bytes = field(repr=False)
    signature: bytes = field(repr=False)


def _malformed(message: str) -> InvalidTokenError:
    """An ``InvalidTokenError`` with reason ``malformed``."""
    return InvalidTokenError(message, reason="malformed")


def encoded(token: object, max_size: int = DEFAULT_MAX_TOKEN_SIZE) -> bytes:
    """The token's ASCII bytes, once it is a string within the size cap and ASCII."""
    if not isinstance(token, str):
        raise _malformed("the token must be a string")
    if len(token) > max_size:
        raise _malformed(f"the token is larger than the {max_size}-byte limit")
    if not token.isascii():
        raise _malformed("the token contains characters outside base64url")
    return token.encode("ascii")


def _segment(data: bytes, name: str) -> bytes:
    """One base64url segment, decoded strictly."""
    try:
        return b64url_decode(data)
    except ValueError as exc:
        raise _malformed(f"the token's {name} segment {exc}") from None


def parse_compact(
    token: str,
    *,
    algorithms: frozenset[str] = DEFAULT_ALGORITHMS,
    max_size: int = DEFAULT_MAX_TOKEN_SIZE,
) -> ParsedToken:
    """Split, decode and check a compact JWS; the signature is NOT verified.

    ``token`` is the bare token (no ``Bearer`` prefix). Raises
    :class:`~ccflow.errors.InvalidTokenError` with reason ``malformed``, ``algorithm`` or
    ``key``.
    """
    raw = encoded(token, max_size)
    parts = raw.split(b".")
    if len(parts) != 3:
        raise _malformed("the token does not have three dot-separated segments")
    header = json_object(_segment(parts[0], "header"), "the token's header", _malformed)
    claims_json = _segment(parts[1], "claims")
    signature = _segment(parts[2], "signature")
    if "crit" in header or header.get("b64", True) is not True:
        raise _malformed("the token uses a JWS extension (crit or b64) that is not supported")
    claims = json_object(claims_json, "the token's claims", _malformed)
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms:
        raise InvalidTokenError("the token's signing algorithm is not allowed", reason="algorithm")
    kid = header.get("kid")
    if "kid" in header and not isinstance(kid, str):
        raise InvalidTokenError("the token's kid header is not a string", reason="key")
    if not isinstance(kid, str) or not kid:
        raise InvalidTokenError("the token has no kid header", reason="key")
    signing_input = raw[: len(parts[0]) + 1 + len(parts[1])]
    return ParsedToken(MappingProxyType(header), claims, alg, kid, signing_input, signature)


def verify_signature(parsed: ParsedToken, key: PublicKey) -> None:
    """Verify ``parsed`` with ``key`` under ``parsed.alg``; raise ``InvalidTokenError``
    (reason ``signature``, or ``algorithm`` when the key type cannot do that algorithm)."""
    alg, signature, data = parsed.alg, parsed.signature, parsed.signing_input
    try:
        if isinstance(key, rsa.RSAPublicKey) and alg[:2] in ("RS", "PS"):
            hash_alg = _HASHES[alg[2:]]()
            if len(signature) != (key.key_size + 7) // 8:
                raise InvalidSignature
            if alg.startswith("RS"):
                key.verify(signature, data, padding.PKCS1v15(), hash_alg)
            else:
                pss = padding.PSS(mgf=padding.MGF1(hash_alg), salt_length=hash_alg.digest_size)
                key.verify(signature, data, pss, hash_alg)
            return
        if isinstance(key, ec.EllipticCurvePublicKey) and alg in _CURVES:
            curve, size = _CURVES[alg]
            if len(signature) != 2 * size or not isinstance(key.curve, curve):
                raise InvalidSignature
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            ecdsa = ec.ECDSA(_HASHES[alg[2:]]())
            key.verify(encode_dss_signature(r, s), data, ecdsa)
            return
    except InvalidSignature:
        raise InvalidTokenError(
            "the token's signature does not verify", reason="signature"
        ) from None
    raise InvalidTokenError("the token's algorithm does not fit its key", reason="algorithm")
