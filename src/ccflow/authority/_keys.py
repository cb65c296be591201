"""Signing keys: RSA 2048 keys with self-signed certificates, published as a JWKS.

Generating an RSA key costs tens of milliseconds, so keys come from a per-process pool:
the n-th key of every :class:`~ccflow.authority.Authority` in a process is the same key. Tests
stay fast; the price is that two authorities in one process share their signing keys (their
issuers still differ whenever their host or tenant does).
"""

from __future__ import annotations

import base64
import functools
import threading
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ccflow._certificates import x5t_of
from ccflow._core.b64 import b64url_encode
from ccflow.authority._tls import self_signed

__all__ = ["KeyRing", "SigningKey", "foreign_key", "pool_key"]


def _uint(value: int) -> str:
    """A JWK integer: big-endian, minimal length, base64url."""
    return b64url_encode(value.to_bytes((value.bit_length() + 7) // 8, "big"))


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One RSA signing key with its self-signed certificate; ``kid`` equals ``x5t``, as in
    Azure AD."""

    kid: str
    x5t: str
    private_key: rsa.RSAPrivateKey = field(repr=False, compare=False)
    certificate_der: bytes = field(repr=False)

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        """The public half."""
        return self.private_key.public_key()

    def jwk(self, *, issuer: str | None = None) -> dict[str, Any]:
        """The public JWK, with ``x5c`` and (as Azure AD's v2 JWKS does) ``issuer``."""
        numbers = self.public_key.public_numbers()
        jwk: dict[str, Any] = {
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.x5t,
            "n": _uint(numbers.n),
            "e": _uint(numbers.e),
            "x5c": [base64.b64encode(self.certificate_der).decode("ascii")],
        }
        if issuer is not None:
            jwk["issuer"] = issuer
        return jwk


def _make_key(common_name: str) -> SigningKey:
    """A new RSA 2048 key with a self-signed certificate naming ``common_name``."""
    key, cert = self_signed(common_name)
    der = cert.public_bytes(serialization.Encoding.DER)
    x5t = x5t_of(der)
    return SigningKey(kid=x5t, x5t=x5t, private_key=key, certificate_der=der)


@functools.cache
def pool_key(index: int) -> SigningKey:
    """The ``index``-th signing key of this process (generated once, then cached)."""
    return _make_key(f"ccflow local authority signing key {index}")


@functools.cache
def foreign_key() -> SigningKey:
    """A key no authority ever publishes: for tokens signed with the wrong key."""
    return _make_key("ccflow foreign key (never published)")


class KeyRing:
    """The authority's keys: every key it ever had, those it publishes, the one it signs with.

    Thread-safe: the real server reads it from many threads while a test rotates keys.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = 0
        self._keys: dict[str, SigningKey] = {}
        self._published: list[str] = []
        self._signing_kid = ""
        self.rotate()

    @property
    def signing_kid(self) -> str:
        """The ``kid`` new tokens are signed with."""
        return self._signing_kid

    @property
    def published(self) -> tuple[str, ...]:
        """The ``kid`` of every published key, oldest first."""
        with self._lock:
            return tuple(self._published)

    def __getitem__(self, kid: str) -> SigningKey:
        """The key with this ``kid``, published or retired (``KeyError`` if none)."""
        return self._keys[kid]

    def rotate(self) -> str:
        """Add the next pool key, publish it and sign with it; return its ``kid``."""
        with self._lock:
            key = pool_key(self._next)
            self._next += 1
            self._keys[key.kid] = key
            self._published.append(key.kid)
            self._signing_kid = key.kid
            return key.kid

    def retire(self, kid: str) -> None:
        """Stop publishing ``kid``; the newest remaining key signs if ``kid`` did."""
        with self._lock:
            if kid not in self._published:
                raise KeyError(f"kid {kid!r} is not published; published: {self._published}")
            if len(self._published) == 1:
                raise ValueError("cannot retire the only published key; call rotate_keys() first")
            self._published.remove(kid)
            if kid == self._signing_kid:
                self._signing_kid = self._published[-1]

    def jwks(self, *, issuer: str | None = None) -> dict[str, Any]:
        """The published keys as a JWKS document (each key naming ``issuer`` when given)."""
        return {"keys": [self._keys[kid].jwk(issuer=issuer) for kid in self.published]}
