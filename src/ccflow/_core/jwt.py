"""Compact JWS: parse a signed JWT and verify its signature, with no IO and no clock.

The parse path is our own because it sits on every request with a fresh token: strict
base64url (``binascii`` in C, the same canonical-form rules as PyJWT 2.15), ``json.loads``
and ``cryptography``'s ``verify`` on key objects loaded once from the JWKS::

    parsed = parse_compact(token, algorithms=frozenset({"RS256"}))
    verify_signature(parsed, key.public_key)        # raises InvalidTokenError("signature")

Rules, each with an :class:`~ccflow.errors.InvalidTokenError` ``reason``:

- ``malformed``: over the size cap (checked before anything else), not three segments, bad
  base64url (wrong alphabet, bad padding, non-canonical trailing bits), header or claims not
  a JSON object, a ``crit`` header (no extension is understood), ``b64: false``;
- ``algorithm``: ``alg`` missing, not a string, or not in the allow-list (``none`` and
  ``HS*`` can never be in it);
- ``key``: ``kid`` missing or not a string. The ``kid`` only picks a key from the JWKS we
  fetched ourselves; ``jku``, ``x5u``, ``jwk`` and ``x5c`` headers are ignored, never fetched
  or trusted;
- ``signature``: the signature does not verify with the selected key.

Error messages never contain the token or any part of it.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import json.scanner
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final, NamedTuple, TypeGuard

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ccflow.errors import ConfigurationError, InvalidTokenError

__all__ = [
    "DEFAULT_ALGORITHMS",
    "DEFAULT_MAX_TOKEN_SIZE",
    "SUPPORTED_ALGORITHMS",
    "ParsedToken",
    "PublicKey",
    "check_algorithms",
    "parse_ascii",
    "parse_compact",
    "verify_signature",
]

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

DEFAULT_MAX_TOKEN_SIZE: Final = 16 * 1024
DEFAULT_ALGORITHMS: Final = frozenset({"RS256"})

_RSA_HASHES: Final[Mapping[str, hashes.HashAlgorithm]] = {
    "RS256": hashes.SHA256(),
    "RS384": hashes.SHA384(),
    "RS512": hashes.SHA512(),
    "PS256": hashes.SHA256(),
    "PS384": hashes.SHA384(),
    "PS512": hashes.SHA512(),
}
# (hash, coordinate size in bytes) for ECDSA; the JWS signature is raw r || s.
_EC_PARAMS: Final[Mapping[str, tuple[hashes.HashAlgorithm, int]]] = {
    "ES256": (hashes.SHA256(), 32),
    "ES384": (hashes.SHA384(), 48),
    "ES512": (hashes.SHA512(), 66),
}
SUPPORTED_ALGORITHMS: Final = frozenset(_RSA_HASHES) | frozenset(_EC_PARAMS)
# RFC 8017 9.2 note 1: the DER DigestInfo prefix of each hash, and the hash itself.
_DIGEST_INFOS: Final[Mapping[str, tuple[bytes, Callable[[bytes], Any]]]] = {
    "RS256": (bytes.fromhex("3031300d060960864801650304020105000420"), hashlib.sha256),
    "RS384": (bytes.fromhex("3041300d060960864801650304020205000430"), hashlib.sha384),
    "RS512": (bytes.fromhex("3051300d060960864801650304020305000440"), hashlib.sha512),
}

_PKCS1V15: Final = padding.PKCS1v15()

_B64_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_B64_VALUE: Final = {c: i for i, c in enumerate(_B64_ALPHABET)}
# base64url -> base64 for a2b_base64, with "+" and "/" (not base64url) mapped to "!", which
# strict mode refuses like any other byte outside the alphabet.
_TO_STANDARD: Final = bytes.maketrans(b"-_+/", b"+/!!")


def check_algorithms(algorithms: object, *, setting: str = "algorithms") -> frozenset[str]:
    """Validate an algorithm allow-list from configuration; ``none`` and ``HS*`` are refused.

    A shared-secret algorithm would let anyone holding the public key forge tokens (the
    classic RS256 -> HS256 confusion), so it cannot be configured at all.
    """
    if isinstance(algorithms, str):
        algorithms = [algorithms]
    if not isinstance(algorithms, (list, tuple, set, frozenset)) or not algorithms:
        raise ConfigurationError(
            f"{setting} must be a non-empty list of algorithm names such as ['RS256']",
            setting=setting,
        )
    result: set[str] = set()
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
        result.add(alg)
    return frozenset(result)


class ParsedToken(NamedTuple):
    """A compact JWS taken apart but not yet trusted: nothing here is verified."""

    header: Mapping[str, Any]
    claims: Mapping[str, Any]
    alg: str
    kid: str
    signing_input: bytes
    signature: bytes


def _malformed(message: str) -> InvalidTokenError:
    return InvalidTokenError(message, reason="malformed")


_PAD: Final = (b"", b"", b"==", b"=")
# The bits of a segment's last character that must be zero, by the segment's length mod 4.
_TRAILING: Final = (0, 0, 0x0F, 0x03)
_a2b: Final = binascii.a2b_base64
_DECODER: Final = json.JSONDecoder()
# The decoder's C scanner (typeshed types make_scanner's argument as itself).
_SCAN: Final[Callable[[str, int], tuple[Any, int]]] = json.scanner.make_scanner(_DECODER)  # type: ignore[arg-type]


def _b64decode(segment: bytes, name: str) -> bytes:
    """Strict base64url, the same acceptance as PyJWT 2.15: optional canonical ``=`` padding,
    alphabet only, no impossible length, zero trailing bits."""
    if segment.endswith(b"="):
        stripped = segment.rstrip(b"=")
        pad = len(segment) - len(stripped)
        if pad > 2 or len(segment) % 4:
            raise _malformed(f"the token's {name} segment has invalid base64url padding")
        segment = stripped
    rem = len(segment) % 4
    if rem == 1:
        raise _malformed(f"the token's {name} segment is not valid base64url")
    try:
        # One pass maps base64url onto base64 and "+"/"/" onto a byte outside it; strict mode
        # then refuses anything outside the alphabet, "=" inside and a bad length.
        data = binascii.a2b_base64(segment.translate(_TO_STANDARD) + _PAD[rem], strict_mode=True)
    except binascii.Error:
        raise _malformed(f"the token's {name} segment is not valid base64url") from None
    if rem and _B64_VALUE[segment[-1]] & _TRAILING[rem]:
        raise _malformed(f"the token's {name} segment is not canonical base64url")
    return data


def _json_object(data: bytes, name: str) -> dict[str, Any]:
    try:
        if data[:1] == b"{" and data[1:2] != b"\x00":
            # What json.loads(bytes) does for UTF-8, without its encoding sniffing; the C
            # scanner alone when the object ends the text (JSONDecoder.decode's own path).
            text = data.decode("utf-8", "surrogatepass")
            try:
                value, end = _SCAN(text, 0)
            except StopIteration:
                end = -1
            if end != len(text):
                value = _DECODER.decode(text)
        else:
            value = json.loads(data)
    except (ValueError, RecursionError):
        raise _malformed(f"the token's {name} is not valid JSON") from None
    if not isinstance(value, dict):
        raise _malformed(f"the token's {name} is not a JSON object")
    return value


# A token's header is the same for every token its authority signs with one key: decoded and
# checked once, it is reused. Only headers that pass every check get in; the cache is small
# and emptied when full, so varied headers cost what they cost without it.
_HEADER_CACHE_SIZE: Final = 64
_HEADER_CACHE_MAX_LENGTH: Final = 1024
_SCALARS: Final = frozenset({str, int, float, bool, type(None)})
_headers: dict[bytes, tuple[Mapping[str, Any], str, str]] = {}


def _plain_header(segment: bytes) -> tuple[Mapping[str, Any], str, str] | None:
    """``(header, alg, kid)`` for a header segment that decodes and passes every check but the
    algorithm allow-list (remembered for the next token), else ``None``."""
    try:
        header = _json_object(_b64decode(segment, "header"), "header")
    except InvalidTokenError:
        return None
    alg, kid = header.get("alg"), header.get("kid")
    if (
        "crit" in header
        or header.get("b64", True) is not True
        or not isinstance(alg, str)
        or not isinstance(kid, str)
        or not kid
    ):
        return None
    plain = (MappingProxyType(header), alg, kid)
    # Shared by every later token with this header, so only a header of plain values (no
    # list or object that one caller could change under the next) is remembered.
    if len(segment) <= _HEADER_CACHE_MAX_LENGTH and all(
        type(value) in _SCALARS for value in header.values()
    ):
        if len(_headers) >= _HEADER_CACHE_SIZE:
            _headers.clear()
        _headers[segment] = plain
    return plain


def parse_compact(
    token: str,
    *,
    algorithms: frozenset[str] = DEFAULT_ALGORITHMS,
    max_size: int = DEFAULT_MAX_TOKEN_SIZE,
) -> ParsedToken:
    """Split, decode and check the header of a compact JWS; the signature is NOT verified.

    ``token`` is the bare token (no ``Bearer`` prefix). Raises
    :class:`~ccflow.errors.InvalidTokenError` with reason ``malformed``, ``algorithm`` or
    ``key``.
    """
    if not isinstance(token, str):
        raise _malformed("the token must be a string")
    if len(token) > max_size:
        raise _malformed(f"the token is larger than the {max_size}-byte limit")
    if not token.isascii():
        raise _malformed("the token contains characters outside base64url")
    return parse_ascii(token.encode("ascii"), algorithms)


def parse_ascii(raw: bytes, algorithms: frozenset[str] = DEFAULT_ALGORITHMS) -> ParsedToken:
    """:func:`parse_compact` for a token already checked to be ASCII and within the size cap,
    as bytes (an Authorization header's own, with no decode and encode in between)."""
    parts = raw.split(b".")
    if len(parts) != 3:
        raise _malformed("the token does not have three dot-separated segments")
    plain = _headers.get(parts[0]) or _plain_header(parts[0])
    if plain is not None:
        # The same checks in the same order as below, the header's already passed. The usual
        # segments (unpadded, alphabet only, canonical) are decoded right here; any other is
        # decoded again by _b64decode, which words its refusal.
        body, tail = parts[1], parts[2]
        rem_body, rem_tail = len(body) & 3, len(tail) & 3
        try:
            if rem_body == 1 or rem_tail == 1 or body.endswith(b"=") or tail.endswith(b"="):
                raise binascii.Error
            claims_bytes = _a2b(body.translate(_TO_STANDARD) + _PAD[rem_body], strict_mode=True)
            signature = _a2b(tail.translate(_TO_STANDARD) + _PAD[rem_tail], strict_mode=True)
            if (rem_body and _B64_VALUE[body[-1]] & _TRAILING[rem_body]) or (
                rem_tail and _B64_VALUE[tail[-1]] & _TRAILING[rem_tail]
            ):
                raise binascii.Error
        except binascii.Error:
            claims_bytes = _b64decode(body, "claims")
            signature = _b64decode(tail, "signature")
        claims = _json_object(claims_bytes, "claims")
        if plain[1] not in algorithms:
            raise InvalidTokenError(
                "the token's signing algorithm is not allowed", reason="algorithm"
            )
        return ParsedToken(
            plain[0],
            claims,
            plain[1],
            plain[2],
            raw[: len(parts[0]) + 1 + len(parts[1])],
            signature,
        )
    # _plain_header refused the header: find the first refusal in the order the checks have
    # always run (every segment decoded before the header is judged, so the error a malformed
    # token gets does not depend on which check happens to run first).
    header = _json_object(_b64decode(parts[0], "header"), "header")
    claims_bytes = _b64decode(parts[1], "claims")
    _b64decode(parts[2], "signature")
    if "crit" in header or header.get("b64", True) is not True:
        raise _malformed("the token uses a JWS extension (crit or b64) that is not supported")
    kid = header.get("kid")
    if "kid" in header and not isinstance(kid, str):
        raise InvalidTokenError("the token's kid header is not a string", reason="key")
    _json_object(claims_bytes, "claims")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms:
        raise InvalidTokenError("the token's signing algorithm is not allowed", reason="algorithm")
    # What is left of _plain_header's checks: kid missing or empty.
    raise InvalidTokenError("the token has no kid header", reason="key")


def verify_signature(parsed: ParsedToken, key: PublicKey) -> None:
    """Verify ``parsed`` with ``key`` under ``parsed.alg``; raise ``InvalidTokenError``
    (reason ``signature``, or ``algorithm`` when the key type cannot do that algorithm)."""
    alg = parsed.alg
    try:
        if _is_rsa(key) and alg in _RSA_HASHES:
            hash_alg = _RSA_HASHES[alg]
            if alg[0] == "R":
                # RFC 8017 8.2.2, encode-and-compare: OpenSSL applies the public key and checks
                # the PKCS #1 v1.5 type-1 padding; what it leaves must be exactly the DigestInfo
                # of our own hash of the signing input. Same verdict as key.verify(), without
                # its per-call message-digest set-up (a few microseconds per fresh token).
                # RFC 8017 8.2.2 step 1: the signature is exactly k bytes long. Recovery alone
                # would read a shorter one as if zero-padded, accepting a second spelling of
                # every valid signature whose first byte is zero (key.verify() refuses it).
                if len(parsed.signature) != (key.key_size + 7) // 8:
                    raise InvalidSignature
                prefix, digest = _DIGEST_INFOS[alg]
                recovered = key.recover_data_from_signature(parsed.signature, _PKCS1V15, None)
                if not hmac.compare_digest(
                    recovered, prefix + digest(parsed.signing_input).digest()
                ):
                    raise InvalidSignature
            else:
                pss = padding.PSS(mgf=padding.MGF1(hash_alg), salt_length=hash_alg.digest_size)
                key.verify(parsed.signature, parsed.signing_input, pss, hash_alg)
            return
        if isinstance(key, ec.EllipticCurvePublicKey) and alg in _EC_PARAMS:
            hash_alg, size = _EC_PARAMS[alg]
            if len(parsed.signature) != 2 * size or key.curve.key_size != _CURVE_BITS[alg]:
                raise InvalidSignature
            r = int.from_bytes(parsed.signature[:size], "big")
            s = int.from_bytes(parsed.signature[size:], "big")
            key.verify(encode_dss_signature(r, s), parsed.signing_input, ec.ECDSA(hash_alg))
            return
    except InvalidSignature:
        raise InvalidTokenError(
            "the token's signature does not verify", reason="signature"
        ) from None
    raise InvalidTokenError("the token's algorithm does not fit its key", reason="algorithm")


_CURVE_BITS: Final = {"ES256": 256, "ES384": 384, "ES512": 521}
# Concrete classes found to be RSA public keys: isinstance() against the ABC walks its
# registry on every call, a visible cost per fresh token.
_rsa_types: set[type] = set()


def _is_rsa(key: object) -> TypeGuard[rsa.RSAPublicKey]:
    kind = type(key)
    if kind in _rsa_types:
        return True
    if isinstance(key, rsa.RSAPublicKey):
        _rsa_types.add(kind)
        return True
    return False
