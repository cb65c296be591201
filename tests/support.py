"""Builders the tests need at import time (parametrize tables, module-level apps): the one
start time, RSA/EC keys, JWKs, hand-made compact JWS, and a stand-in validator.

Hand-made tokens are used only where the local authority cannot make the token (the IO-free
core tests, and deliberately broken tokens); HTTP-level tests mint with
``ccflow.authority.Authority``. Fixtures live in the ``conftest.py`` files, not here.
"""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID
from hypothesis import strategies as st

from ccflow.errors import InsufficientScopeError, InvalidTokenError

START = 1_767_225_600.0
"""The one start time of every fake clock: 2026-01-01T00:00:00Z."""

REALM = "api://calc-api"

API_VARIABLES = (
    "CCFLOW_ISSUER",
    "CCFLOW_TENANT_ID",
    "AZURE_TENANT_ID",
    "AZURE_AUTHORITY_HOST",
    "CCFLOW_AUDIENCE",
    "CCFLOW_ALLOWED_CLIENTS",
    "CCFLOW_ALLOWED_TENANTS",
    "CCFLOW_ACCEPT_V1",
)
"""The variables ``TokenValidator.from_env()`` and ``RequireRole(...)`` read
(docs/configuration.md)."""


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


def _name(cn: str) -> x509.Name:
    """An X.509 name with only a common name."""
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_certificate(
    key: Any,
    *,
    issuer_key: Any = None,
    issuer: str = "ccflow test",
    subject: str = "ccflow test",
    not_after: datetime.datetime | None = None,
) -> x509.Certificate:
    """A certificate for ``key``, self-signed unless ``issuer_key`` is given."""
    start = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(not_after or datetime.datetime(2099, 1, 1, tzinfo=datetime.UTC))
        .sign(issuer_key or key, hashes.SHA256())
    )


def pem(*items: Any) -> bytes:
    """Certificates and private keys (unencrypted PKCS #8) as one PEM text."""
    out = b""
    for item in items:
        if isinstance(item, x509.Certificate):
            out += item.public_bytes(serialization.Encoding.PEM)
        else:
            out += item.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
    return out


@dataclass(frozen=True)
class FakeVerdict:
    """A ValidatedToken look-alike."""

    client_id: str | None = "client-1"
    tenant_id: str | None = "tenant-1"
    roles: tuple[str, ...] = ("invokeRole",)
    claims: Mapping[str, Any] = field(default_factory=dict)
    scopes: tuple[str, ...] = ()

    def require_roles(self, roles: Sequence[str], *, match: str = "any") -> None:
        held = set(self.roles)
        ok = any(r in held for r in roles) if match == "any" else all(r in held for r in roles)
        if not ok:
            raise InsufficientScopeError(
                f"the token lacks the required role ({', '.join(roles)})",
                reason="role",
                required=roles,
            )


@dataclass
class FakeValidator:
    """A stand-in with TokenValidator's interface: maps token strings to a verdict or to the
    error ``validate`` raises (module-level FastAPI apps need one at import time)."""

    answers: dict[str, FakeVerdict | Exception] = field(default_factory=dict)
    realm: str = REALM
    closed: bool = False
    seen: list[str] = field(default_factory=list)

    async def validate(self, token: str) -> FakeVerdict:
        self.seen.append(token)
        answer = self.answers.get(token)
        if answer is None:
            raise InvalidTokenError("signature verification failed", reason="signature")
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def aclose(self) -> None:
        self.closed = True


REVOKED = "the token was revoked"
"""The refusal of the revoking validators (``revoking_validator`` in tests/api/conftest.py)."""

REVOKING = ["subclass", "wrapper", "attribute"]
"""How a revocation check is added to a TokenValidator: each way must be honoured."""


# Any JSON value (NaN and Infinity included, which Python's json reads), small, for fuzzing.
_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
json_values = st.recursive(
    _json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
