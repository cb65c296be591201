"""base64url without padding (RFC 7515 section 2), the one encoder and strict decoder.

The decoder accepts exactly what PyJWT 2.15 accepts: optional canonical ``=`` padding, the
URL-safe alphabet only, no impossible length and zero trailing bits, so every byte string has
one spelling.
"""

from __future__ import annotations

import base64
import binascii
from typing import Final

__all__ = ["b64url_decode", "b64url_encode"]

# base64url -> base64 for a2b_base64; "+" and "/" (not base64url) become "!", which strict
# mode refuses like any other byte outside the alphabet.
_TO_STANDARD: Final = bytes.maketrans(b"-_+/", b"+/!!")
_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# The bits of a segment's last character that must be zero, by the segment's length mod 4.
_TRAILING_BITS: Final = (0, 0, 0x0F, 0x03)


def b64url_encode(data: bytes) -> str:
    """``data`` as unpadded base64url text."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str | bytes) -> bytes:
    """Decode strict base64url; raise :class:`ValueError` naming what is wrong."""
    data = text.encode("ascii", "replace") if isinstance(text, str) else text
    if data.endswith(b"="):
        stripped = data.rstrip(b"=")
        if len(data) - len(stripped) > 2 or len(data) % 4:
            raise ValueError("has invalid base64url padding")
        data = stripped
    remainder = len(data) % 4
    if remainder == 1:
        raise ValueError("is not valid base64url")
    try:
        decoded = binascii.a2b_base64(
            data.translate(_TO_STANDARD) + b"=" * (-remainder % 4), strict_mode=True
        )
    except binascii.Error:
        raise ValueError("is not valid base64url") from None
    if remainder and _ALPHABET.index(data[-1]) & _TRAILING_BITS[remainder]:
        raise ValueError("is not canonical base64url")
    return decoded
