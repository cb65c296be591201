"""Test helpers for the validation tests: RSA/EC keys, JWKs and hand-made compact JWS.

Used only where the local authority cannot make the token (the IO-free core tests, and
deliberately broken tokens); HTTP-level tests mint with ``ccflow.authority.Authority``.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from functools import cache
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature


def b64(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(value: Any) -> str:
    """base64url of compact JSON."""
    return b64(json.dumps(value, separators=(",", ":")).encode())


@cache
def rsa_key(name: str = "a", bits: int = 2048) -> rsa.RSAPrivateKey:
    """A private RSA key, one per name for the whole session (generation is slow)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@cache
def ec_key(name: str = "a", curve: str = "P-256") -> ec.EllipticCurvePrivateKey:
    """A private EC key, one per name and curve."""
    curves = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}
    return ec.generate_private_key(curves[curve])


def rsa_jwk(key: rsa.RSAPrivateKey, kid: str, **extra: Any) -> dict[str, Any]:
    """The public JWK of ``key``."""
    numbers = key.public_key().public_numbers()
    n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
    e = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
    return {"kty": "RSA", "kid": kid, "use": "sig", "n": b64(n), "e": b64(e), **extra}


def ec_jwk(key: ec.EllipticCurvePrivateKey, kid: str, crv: str = "P-256") -> dict[str, Any]:
    """The public JWK of an EC key."""
    numbers = key.public_key().public_numbers()
    size = (key.curve.key_size + 7) // 8
    return {
        "kty": "EC",
        "kid": kid,
        "crv": crv,
        "x": b64(numbers.x.to_bytes(size, "big")),
        "y": b64(numbers.y.to_bytes(size, "big")),
    }


_HASHES = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}


def sign(signing_input: bytes, key: Any, alg: str) -> bytes:
    """A JWS signature of ``signing_input`` under ``alg``."""
    h = _HASHES[alg[2:]]
    if alg.startswith("RS"):
        return bytes(key.sign(signing_input, padding.PKCS1v15(), h))
    if alg.startswith("PS"):
        return bytes(
            key.sign(signing_input, padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), h)
        )
    if alg.startswith("ES"):
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(h)))
        size = (key.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    raise ValueError(alg)


def make_token(
    claims: dict[str, Any],
    *,
    key: Any = None,
    alg: str = "RS256",
    kid: str | None = "k1",
    header: dict[str, Any] | None = None,
) -> str:
    """A compact JWS of ``claims``; ``header`` replaces the default header entirely."""
    if header is None:
        header = {"alg": alg, "typ": "JWT"}
        if kid is not None:
            header["kid"] = kid
    signing_input = f"{b64json(header)}.{b64json(claims)}"
    signature = sign(signing_input.encode(), key or rsa_key(), alg)
    return f"{signing_input}.{b64(signature)}"


class Clock:
    """An injected clock: call it for the time, set or advance ``now``; never sleeps."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


class YieldingTransport(httpx.AsyncBaseTransport):
    """Hands each request to ``handler`` after yielding to the event loop a few times, so
    concurrent requests really interleave (the authority's own transport never yields)."""

    def __init__(self, handler: Callable[[httpx.Request], httpx.Response]) -> None:
        self.handler = handler

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        for _ in range(5):
            await asyncio.sleep(0)
        await request.aread()
        return self.handler(request)
