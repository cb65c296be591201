"""Builders the tests need at import time (parametrize tables, module-level apps): the one
start time, RSA/EC keys, JWKs, hand-made compact JWS, a stand-in validator, token clients on
the in-process authority, the bad-request table, a uvicorn runner and a redis-server process.

Hand-made tokens are used only where the local authority cannot make the token (the IO-free
core tests, and deliberately broken tokens); HTTP-level tests mint with
``ccflow.authority.Authority``. Fixtures live in the ``conftest.py`` files, not here.
"""

# The case table reads best one row per line.
# ruff: noqa: E501

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID
from hypothesis import strategies as st

import redis
from ccflow import AsyncTokenClient, TokenClient, TokenValidator
from ccflow.authority import Authority, AuthorityServer, Registrations
from ccflow.errors import InsufficientScopeError, InvalidTokenError
from ccflow.testing import OTHER_TENANT_ID, CertificateMaterial, TokenFactory

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


def jwt_with(exp: float | None, tag: str = "a") -> str:
    """An unsigned JWT-shaped string: only its exp matters to the credential."""
    claims: dict[str, Any] = {"tag": tag}
    if exp is not None:
        claims["exp"] = exp
    return f"eyJhbGciOiJub25lIn0.{b64(json.dumps(claims).encode())}.c2ln"


def deeply_nested_payload_token() -> str:
    """A token whose payload nests 5000 lists deep: too deep for the json module."""
    header = b64(b'{"alg": "RS256"}')
    payload = b64(('{"a": ' + "[" * 5000 + "]" * 5000 + "}").encode())
    return f"{header}.{payload}.sig"


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


# -------------------------------------------------------------------------------------------
# The bad-request suite (tests/api/test_negative_http.py and every other face reuse it)

NOW = int(START)
LEEWAY = 60
ATTACKER = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def seg(obj: Any) -> str:
    """base64url of compact JSON (sorted as given)."""
    return b64json(obj)


@dataclass
class Minter:
    """The local authority and its token factory, with helpers to build tokens by hand."""

    authority: Authority
    tokens: TokenFactory

    def header(self) -> dict[str, Any]:
        kid = self.authority.signing_kid
        return {"typ": "JWT", "alg": "RS256", "kid": kid}

    def claims(self, **changes: Any) -> dict[str, Any]:
        claims = self.authority.token_claims(now=NOW)
        claims.update(changes)
        return claims

    def mint(self, **options: Any) -> str:
        return self.authority.mint(now=options.pop("now", NOW), **options)

    def rs(self, header: dict[str, Any], payload: bytes, key: Any = None, alg: Any = None) -> str:
        """Sign by hand (RS256 unless ``alg`` names another hash), any header, any payload."""
        if key is None:
            key = self.authority.key(self.authority.signing_kid).private_key
        signing_input = f"{seg(header)}.{b64(payload)}".encode()
        pad = padding.PKCS1v15()
        if alg == "PS256":
            pad = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        digest = hashes.SHA512() if alg == "RS512" else hashes.SHA256()
        return f"{signing_input.decode()}.{b64(key.sign(signing_input, pad, digest))}"


# --- bad requests: the table every face that protects an API answers alike --------------
# (id, builder returning the Authorization header value or None, status, error, fragment)

Builder = Callable[[Minter], "str | list[str] | None"]


def bearer(make: Callable[[Minter], str]) -> Builder:
    return lambda bed: f"Bearer {make(bed)}"


def _public_pem(bed: Minter) -> bytes:
    public = bed.authority.key(bed.authority.signing_kid).private_key.public_key()
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def hs256_with_public_key(bed: Minter) -> str:
    import hashlib
    import hmac

    signing_input = f"{seg({**bed.header(), 'alg': 'HS256'})}.{seg(bed.claims())}"
    mac = hmac.new(_public_pem(bed), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def attacker_jwk() -> dict[str, Any]:
    numbers = ATTACKER.public_key().public_numbers()
    return {
        "kty": "RSA",
        "kid": "attacker",
        "n": b64(numbers.n.to_bytes(256, "big")),
        "e": b64(numbers.e.to_bytes(3, "big")),
    }


ISSUER_NEAR_MISSES: list[tuple[str, Callable[[Minter], str]]] = [
    ("iss-trailing-slash", lambda bed: bed.authority.issuer + "/"),
    ("iss-uppercase", lambda bed: bed.authority.issuer.upper()),
    ("iss-http", lambda bed: bed.authority.issuer.replace("https://", "http://")),
    ("iss-other-host", lambda bed: bed.authority.issuer.replace("ccflow.test", "ccflow.evil")),
    ("iss-v1-on-v2-token", lambda bed: bed.authority.issuer_v1),
    (
        "iss-other-tenant",
        lambda bed: bed.authority.issuer.replace(bed.authority.tenant_id, OTHER_TENANT_ID),
    ),
]

BAD_REQUESTS: list[tuple[str, Builder, int, str | None, str]] = [
    # no credential, or not a bearer one
    ("no-header", lambda bed: None, 401, None, ""),
    ("basic-scheme", lambda bed: "Basic dXNlcjpwYXNz", 401, None, ""),
    # the header itself
    ("two-headers", lambda bed: [f"Bearer {bed.mint()}"] * 2, 400, "invalid_request", "more than one"),
    ("bearer-without-token", lambda bed: "Bearer", 400, "invalid_request", "without a token"),
    ("empty-header", lambda bed: "", 400, "invalid_request", "empty"),
    ("token-with-space", lambda bed: "Bearer abc def", 400, "invalid_request", "b64token"),
    ("token-with-quote", lambda bed: 'Bearer ab"c.d.e', 400, "invalid_request", "b64token"),
    ("token-with-bang", lambda bed: "Bearer !!!.a.b", 400, "invalid_request", "b64token"),
    # malformed compact serialization
    ("one-segment", bearer(lambda bed: "abcdef"), 401, "invalid_token", ""),
    ("two-segments", bearer(lambda bed: "abc.def"), 401, "invalid_token", ""),
    ("four-segments", bearer(lambda bed: bed.mint() + ".abc"), 401, "invalid_token", ""),
    ("empty-segments", bearer(lambda bed: ".."), 401, "invalid_token", ""),
    ("plus-slash-base64", bearer(lambda bed: "ab+/.cd+/.ef+/"), 401, "invalid_token", ""),
    ("header-not-json", bearer(lambda bed: f"{b64(b'{not json')}.{seg({})}.c2ln"), 401, "invalid_token", ""),
    ("header-json-list", bearer(lambda bed: f"{seg([1, 2])}.{seg({})}.c2ln"), 401, "invalid_token", ""),
    ("payload-not-json", bearer(lambda bed: bed.rs(bed.header(), b"{nope")), 401, "invalid_token", ""),
    ("payload-json-list", bearer(lambda bed: bed.rs(bed.header(), b"[1,2]")), 401, "invalid_token", ""),
    ("signature-not-base64", bearer(lambda bed: bed.mint().rpartition(".")[0] + ".%%%"), 400, "invalid_request", "b64token"),
    ("oversized", bearer(lambda bed: bed.mint(claims={"pad": "x" * 17000})), 401, "invalid_token", ""),
    # algorithms
    ("alg-none", bearer(lambda bed: f"{seg({**bed.header(), 'alg': 'none'})}.{seg(bed.claims())}."), 401, "invalid_token", "algorithm"),
    ("alg-none-signed", bearer(lambda bed: bed.rs({**bed.header(), "alg": "none"}, json.dumps(bed.claims()).encode())), 401, "invalid_token", "algorithm"),
    ("hs256-with-public-key", bearer(hs256_with_public_key), 401, "invalid_token", "algorithm"),
    ("rs512-not-allowed", bearer(lambda bed: bed.rs({**bed.header(), "alg": "RS512"}, json.dumps(bed.claims()).encode(), alg="RS512")), 401, "invalid_token", "algorithm"),
    ("ps256-not-allowed", bearer(lambda bed: bed.rs({**bed.header(), "alg": "PS256"}, json.dumps(bed.claims()).encode(), alg="PS256")), 401, "invalid_token", "algorithm"),
    ("alg-missing", bearer(lambda bed: bed.rs({"typ": "JWT", "kid": bed.authority.signing_kid}, json.dumps(bed.claims()).encode())), 401, "invalid_token", ""),
    # keys
    ("kid-missing", bearer(lambda bed: bed.rs({"typ": "JWT", "alg": "RS256"}, json.dumps(bed.claims()).encode())), 401, "invalid_token", "kid"),
    ("kid-unknown", bearer(lambda bed: bed.tokens.unknown_kid()), 401, "invalid_token", "kid"),
    ("kid-not-a-string", bearer(lambda bed: bed.rs({**bed.header(), "kid": 7}, json.dumps(bed.claims()).encode())), 401, "invalid_token", "kid"),
    ("wrong-key-known-kid", bearer(lambda bed: bed.rs(bed.header(), json.dumps(bed.claims()).encode(), key=ATTACKER)), 401, "invalid_token", "signature"),
    ("jku-header-attacker-key", bearer(lambda bed: bed.rs({**bed.header(), "kid": "attacker", "jku": "https://evil.test/keys"}, json.dumps(bed.claims()).encode(), key=ATTACKER)), 401, "invalid_token", "kid"),
    ("jwk-header-attacker-key", bearer(lambda bed: bed.rs({**bed.header(), "jwk": attacker_jwk()}, json.dumps(bed.claims()).encode(), key=ATTACKER)), 401, "invalid_token", "signature"),
    ("x5c-header-attacker", bearer(lambda bed: bed.rs({**bed.header(), "x5c": ["MIIBIjAN"], "x5u": "https://evil.test/c"}, json.dumps(bed.claims()).encode(), key=ATTACKER)), 401, "invalid_token", "signature"),
    ("claims-tampered", bearer(lambda bed: bed.tokens.tampered()), 401, "invalid_token", "signature"),
    # time (leeway 60 s)
    ("expired", bearer(lambda bed: bed.mint(claims={"exp": NOW - LEEWAY - 1})), 401, "invalid_token", "expired"),
    ("expired-at-leeway-edge", bearer(lambda bed: bed.mint(claims={"exp": NOW - LEEWAY})), 401, "invalid_token", "expired"),
    ("nbf-future", bearer(lambda bed: bed.mint(claims={"nbf": NOW + LEEWAY + 1})), 401, "invalid_token", "nbf"),
    ("iat-future", bearer(lambda bed: bed.mint(claims={"iat": NOW + LEEWAY + 1})), 401, "invalid_token", "iat"),
    ("exp-string", bearer(lambda bed: bed.mint(claims={"exp": str(NOW + 600)})), 401, "invalid_token", "exp"),
    ("exp-bool", bearer(lambda bed: bed.mint(claims={"exp": True})), 401, "invalid_token", "exp"),
    ("exp-missing", bearer(lambda bed: bed.mint(omit=["exp"])), 401, "invalid_token", "exp"),
    ("nbf-string", bearer(lambda bed: bed.mint(claims={"nbf": "soon"})), 401, "invalid_token", "nbf"),
    # issuer and version
    *[(name, bearer(lambda bed, f=f: bed.mint(claims={"iss": f(bed)})), 401, "invalid_token", "issuer") for name, f in ISSUER_NEAR_MISSES],
    ("iss-missing", bearer(lambda bed: bed.mint(omit=["iss"])), 401, "invalid_token", "iss"),
    ("iss-number", bearer(lambda bed: bed.rs(bed.header(), json.dumps(bed.claims(iss=42)).encode())), 401, "invalid_token", "iss"),
    ("other-tenant-token", bearer(lambda bed: bed.tokens.wrong_tenant()), 401, "invalid_token", "issuer"),
    ("v1-token-not-accepted", bearer(lambda bed: bed.mint(version=1)), 401, "invalid_token", "v1.0"),
    ("ver-missing", bearer(lambda bed: bed.mint(omit=["ver"])), 401, "invalid_token", "ver"),
    # audience
    ("aud-other-app", bearer(lambda bed: bed.tokens.wrong_audience()), 401, "invalid_token", "audience"),
    ("aud-empty", bearer(lambda bed: bed.mint(claims={"aud": ""})), 401, "invalid_token", "aud"),
    ("aud-number", bearer(lambda bed: bed.mint(claims={"aud": 12})), 401, "invalid_token", "aud"),
    ("aud-empty-list", bearer(lambda bed: bed.mint(claims={"aud": []})), 401, "invalid_token", "aud"),
    ("aud-uri-near-miss", bearer(lambda bed: bed.mint(claims={"aud": bed.authority.api("calc-api").identifier_uri + "/"})), 401, "invalid_token", "audience"),
    ("aud-missing", bearer(lambda bed: bed.mint(omit=["aud"])), 401, "invalid_token", "aud"),
    # callers
    ("azp-not-allowed", bearer(lambda bed: bed.mint(claims={"azp": "11111111-2222-4333-8444-555555555555"})), 403, "insufficient_scope", "not allowed"),
    ("azp-absent", bearer(lambda bed: bed.mint(omit=["azp"])), 401, "invalid_token", "azp"),
    ("azp-number", bearer(lambda bed: bed.mint(claims={"azp": 5})), 401, "invalid_token", "azp"),
    # roles: authorization only after validation
    ("roles-absent", bearer(lambda bed: bed.mint(client="reader-client")), 403, "insufficient_scope", "invokeRole"),
    ("roles-empty", bearer(lambda bed: bed.mint(roles=())), 403, "insufficient_scope", "invokeRole"),
    ("roles-wrong-case", bearer(lambda bed: bed.mint(roles=["invokerole"])), 403, "insufficient_scope", "invokeRole"),
    ("roles-other-role", bearer(lambda bed: bed.mint(roles=["readRole"])), 403, "insufficient_scope", "invokeRole"),
    ("roles-a-string", bearer(lambda bed: bed.mint(claims={"roles": "invokeRole"})), 401, "invalid_token", "roles"),
    ("delegated-scp-only", bearer(lambda bed: bed.mint(roles=(), claims={"scp": "invokeRole"})), 403, "insufficient_scope", "invokeRole"),
    ("forged-without-role", bearer(lambda bed: bed.rs(bed.header(), json.dumps(bed.claims(roles=[])).encode(), key=ATTACKER)), 401, "invalid_token", "signature"),
    ("expired-without-role", bearer(lambda bed: bed.mint(client="reader-client", claims={"exp": NOW - 3600})), 401, "invalid_token", "expired"),
]  # fmt: skip

ON_BAD_REQUESTS = pytest.mark.parametrize(
    ("builder", "status", "error", "fragment"),
    [c[1:] for c in BAD_REQUESTS],
    ids=[c[0] for c in BAD_REQUESTS],
)
"""Runs a test once per row of ``BAD_REQUESTS``, with its builder, status, error and fragment."""


def authorization(value: str | list[str] | None) -> list[tuple[str, str]]:
    """The Authorization headers a ``Builder``'s value stands for: none, one, or several."""
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    return [("Authorization", v) for v in values]


# --- the refusals every face answers alike (issue 16: no token, bad token, wrong role, wrong
# scope, refused caller), and the two callers it lets through. Each face under test guards a
# route with the role invokeRole or else the scope Calc.Read, on a validator that allows only
# calc-client and reader-client (calc_validator).

REFUSED_CLIENT = "00000000-0000-4000-8000-00000000bad0"
"""A client id no validator of the suite allows."""

FACE_CASES: list[tuple[str, int, str | None]] = [
    ("no_token", 401, 'Bearer realm="'),
    ("bad_token", 401, 'error="invalid_token"'),
    ("wrong_role", 403, 'scope="invokeRole Calc.Read"'),
    ("wrong_scope", 403, 'scope="invokeRole Calc.Read"'),
    ("refused_caller", 403, 'error_description="the calling application is not allowed"'),
    ("good_app", 200, None),
    ("good_user", 200, None),
]
"""(case, status, a fragment of WWW-Authenticate; ``None``: no challenge)."""


def face_token(case: str, tokens: TokenFactory) -> str | None:
    """The token a :data:`FACE_CASES` case sends (``None``: no Authorization header)."""
    return {
        "no_token": lambda: None,
        "bad_token": tokens.tampered,
        "wrong_role": tokens.no_roles,
        "wrong_scope": lambda: tokens.user_token(scopes=["Other.Read"]),
        "refused_caller": lambda: tokens.valid(claims={"azp": REFUSED_CLIENT}),
        "good_app": tokens.valid,
        "good_user": lambda: tokens.user_token(scopes=["Calc.Read"]),
    }[case]()


def face_challenge_ok(case: str, challenge: str | None, fragment: str | None) -> bool:
    """Whether a face's ``WWW-Authenticate`` is what :data:`FACE_CASES` wants for ``case``."""
    if fragment is None:
        return challenge is None
    if challenge is None or not challenge.startswith('Bearer realm="'):
        return False
    return fragment in challenge and (case != "no_token" or "error=" not in challenge)


def challenge_ok(realm: str, header: str | None, error: str | None, fragment: str) -> bool:
    """Whether ``header`` is the challenge :data:`BAD_REQUESTS` wants: the realm alone for no
    token, else the error and a description holding ``fragment``."""
    start = f'Bearer realm="{realm}"'
    if error is None:
        return header == start
    prefix = f'{start}, error="{error}", error_description="'
    return header is not None and header.startswith(prefix) and fragment in header[len(prefix) :]


def certificate_authority(
    cert: CertificateMaterial,
    clock: Callable[[], float] = lambda: START,
    *,
    one_time_assertions: bool = False,
) -> Authority:
    """The default authority with calc-client registered by ``cert`` instead of a secret."""
    regs = Registrations.default().with_certificate("calc-client", cert.certificate_pem)
    return Authority(regs, clock=clock, one_time_assertions=one_time_assertions)


def run_in_threads(target: Callable[[], None], count: int, timeout: float) -> None:
    """Run ``target`` in ``count`` threads at once; fail unless all end within ``timeout``."""
    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads)


def statuses_at_once(tokens: Sequence[str], call: Callable[[str], int]) -> list[int]:
    """The statuses of ``call`` with each token, every call in its own thread, all at once."""
    start = threading.Barrier(len(tokens))
    statuses: list[int] = []

    def run(token: str) -> None:
        start.wait(timeout=10)
        statuses.append(call(token))

    threads = [threading.Thread(target=run, args=(t,)) for t in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return statuses


def validator_settings(authority: Authority, *clients: str, sync: bool = False) -> dict[str, Any]:
    """TokenValidator keywords for calc-api on ``authority``, allowing ``clients`` (calc-client
    by default), with an async HTTP client on the authority, or a sync one."""
    api = authority.api("calc-api")
    client = "sync_http_client" if sync else "http_client"
    return {
        "tenant_id": authority.tenant_id,
        "authority_host": authority.host,
        "audience": [api.client_id, api.identifier_uri],
        "allowed_clients": [authority.client(c).client_id for c in clients or ("calc-client",)],
        client: (httpx.Client if sync else httpx.AsyncClient)(transport=authority.transport()),
    }


def calc_validator(authority: Authority, *, sync: bool = False, **options: Any) -> Any:
    """The calc-api validator of the faces' tests on ``authority`` (allowing calc-client and
    reader-client, on the suite's clock), with an async HTTP client, or a sync one."""
    settings = validator_settings(authority, "calc-client", "reader-client", sync=sync)
    settings.update({"clock": lambda: float(NOW), "leeway": LEEWAY})
    settings.update(options)
    return TokenValidator(**settings)


@contextlib.contextmanager
def served(app: Any, *, lifespan: str = "on") -> Iterator[str]:
    """``app`` served by uvicorn on 127.0.0.1 for the block; yields its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", lifespan=lifespan, loop="asyncio")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive(), "the calc API's server thread died"
            assert time.monotonic() < deadline, "the calc API did not start within 10 s"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def client_settings(
    authority: Authority, name: str = "calc-client", cache: Any = None
) -> dict[str, Any]:
    """The keywords a token client of ``name`` on the in-process ``authority`` needs."""
    app = authority.client(name)
    return {
        "client_id": app.client_id,
        "client_secret": app.secret,
        "tenant_id": authority.tenant_id,
        "authority_host": authority.host,
        "cache": cache,
    }


def client_environ(
    authority: Authority, name: str = "calc-client", host: str | None = None
) -> dict[str, str]:
    """The AZURE_* variables ``from_env()`` reads for client app ``name`` on ``authority``
    (``host``: a served authority's URL in place of its in-process host)."""
    app = authority.client(name)
    return {
        "AZURE_CLIENT_ID": app.client_id,
        "AZURE_CLIENT_SECRET": app.secret,
        "AZURE_TENANT_ID": authority.tenant_id,
        "AZURE_AUTHORITY_HOST": host or authority.host,
    }


def token_client(
    authority: Authority, cache: Any = None, name: str = "calc-client", **options: Any
) -> TokenClient:
    """A TokenClient of client app ``name`` on the in-process ``authority``, with ``cache``."""
    http = httpx.Client(transport=authority.transport())
    return TokenClient(http_client=http, **client_settings(authority, name, cache), **options)


def async_token_client(
    authority: Authority, cache: Any = None, name: str = "calc-client", **options: Any
) -> AsyncTokenClient:
    """The AsyncTokenClient twin of ``token_client``."""
    http = httpx.AsyncClient(transport=authority.transport())
    return AsyncTokenClient(http_client=http, **client_settings(authority, name, cache), **options)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process on 127.0.0.1."""

    def __init__(self, executable: str, directory: Path) -> None:
        self.executable = executable
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it (empty: nothing is persisted) and wait until it answers PING."""
        self.process = subprocess.Popen(
            [
                self.executable,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.directory),
                "--save", "",
                "--appendonly", "no",
                "--protected-mode", "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url, socket_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)
        client.close()

    def kill(self) -> None:
        """Kill it at once (SIGKILL), as a crash would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def restart(self) -> None:
        """Kill it and start it again, empty, on the same port."""
        self.kill()
        self.start()

    def client(self) -> redis.Redis:
        """A redis-py client for looking at what the cache stored."""
        return redis.Redis.from_url(self.url, socket_timeout=2)


def token_args(server: AuthorityServer, *extra: str, client: str = "calc-client") -> list[str]:
    """``ccflow token`` arguments for ``client`` of ``server``, calc-api scope, then ``extra``."""
    authority = server.authority
    return [
        "token",
        "--client-id",
        authority.client(client).client_id,
        "--tenant-id",
        authority.tenant_id,
        "--authority-host",
        authority.host,
        "--scope",
        authority.api("calc-api").default_scope,
        *extra,
    ]
