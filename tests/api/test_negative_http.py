"""Bad tokens and bad conditions over HTTP: the calc API on the local authority.

Each row is one way a request can be wrong; each asserts the status and the exact
``WWW-Authenticate`` challenge (error code, and which check the description names). The
validator and the authority share a fixed clock, so the leeway edges are exact.
"""

# The case table reads best one row per line.
# ruff: noqa: E501

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from examples.calc_api.app import create_app
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from tests.support import START

from ccflow import TokenValidator
from ccflow.authority import Authority, Fault
from ccflow.testing import OTHER_TENANT_ID, TokenFactory

NOW = int(START)
LEEWAY = 60
ATTACKER = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def seg(obj: Any) -> str:
    return b64(json.dumps(obj, separators=(",", ":")).encode())


@dataclass
class Bed:
    """The authority, its token factory, the validator and the calc API on them."""

    authority: Authority
    tokens: TokenFactory
    validator: TokenValidator
    client: TestClient
    clock: list[float]

    @property
    def realm(self) -> str:
        return self.validator.realm

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


def make_bed(**validator_options: Any) -> Bed:
    clock = [float(NOW)]
    authority = Authority(clock=lambda: clock[0])
    api = authority.api("calc-api")
    allowed = [authority.client("calc-client").client_id]
    allowed.append(authority.client("reader-client").client_id)
    validator = TokenValidator(
        tenant_id=authority.tenant_id,
        authority_host=authority.host,
        audience=[api.client_id, api.identifier_uri],
        allowed_clients=allowed,
        http_client=httpx.AsyncClient(transport=authority.transport()),
        clock=lambda: clock[0],
        leeway=LEEWAY,
        **validator_options,
    )
    client = TestClient(create_app(validator))
    return Bed(authority, TokenFactory(authority), validator, client, clock)


@pytest.fixture
def bed() -> Iterator[Bed]:
    bed = make_bed()
    with bed.client:
        yield bed


def challenge_ok(bed: Bed, header: str | None, error: str | None, fragment: str) -> bool:
    realm = f'Bearer realm="{bed.realm}"'
    if error is None:
        return header == realm
    assert header is not None
    prefix = f'{realm}, error="{error}", error_description="'
    return header.startswith(prefix) and fragment in header[len(prefix) :]


# --- the table ----------------------------------------------------------------------------
# (id, builder returning the Authorization header value or None, status, error, fragment)

Builder = Callable[[Bed], "str | list[str] | None"]


def bearer(make: Callable[[Bed], str]) -> Builder:
    return lambda bed: f"Bearer {make(bed)}"


def pem(bed: Bed) -> bytes:
    public = bed.authority.key(bed.authority.signing_kid).private_key.public_key()
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def hs256_with_public_key(bed: Bed) -> str:
    import hashlib
    import hmac

    signing_input = f"{seg({**bed.header(), 'alg': 'HS256'})}.{seg(bed.claims())}"
    mac = hmac.new(pem(bed), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def attacker_jwk() -> dict[str, Any]:
    numbers = ATTACKER.public_key().public_numbers()
    return {
        "kty": "RSA",
        "kid": "attacker",
        "n": b64(numbers.n.to_bytes(256, "big")),
        "e": b64(numbers.e.to_bytes(3, "big")),
    }


ISSUER_NEAR_MISSES: list[tuple[str, Callable[[Bed], str]]] = [
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

CASES: list[tuple[str, Builder, int, str | None, str]] = [
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


@pytest.mark.parametrize(
    ("builder", "status", "error", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_request_is_refused(bed: Bed, builder: Builder, status: int, error: str | None, fragment: str) -> None:  # fmt: skip
    value = builder(bed)
    if value is None:
        headers: list[tuple[str, str]] = []
    elif isinstance(value, list):
        headers = [("Authorization", v) for v in value]
    else:
        headers = [("Authorization", value)]
    response = bed.client.get("/calc/v1/add/2/3", headers=headers)
    assert response.status_code == status
    assert challenge_ok(bed, response.headers.get("www-authenticate"), error, fragment), (
        response.headers.get("www-authenticate")
    )
    assert response.json()["error"] == (error or "unauthorized")


def test_case_ids_are_distinct_and_many() -> None:
    ids = [c[0] for c in CASES]
    assert len(set(ids)) == len(ids) >= 40


# --- good tokens at the edges -------------------------------------------------------------

GOOD: list[tuple[str, Callable[[Bed], str]]] = [
    ("plain", lambda bed: bed.mint()),
    ("exp-inside-leeway", lambda bed: bed.mint(claims={"exp": NOW - LEEWAY + 1})),
    ("nbf-inside-leeway", lambda bed: bed.mint(claims={"nbf": NOW + LEEWAY})),
    ("aud-app-id-uri", lambda bed: bed.mint(claims={"aud": bed.authority.api("calc-api").identifier_uri})),
    ("lowercase-scheme", lambda bed: bed.mint()),
]  # fmt: skip


@pytest.mark.parametrize("make", [g[1] for g in GOOD], ids=[g[0] for g in GOOD])
def test_good_token_is_served(bed: Bed, make: Callable[[Bed], str]) -> None:
    response = bed.client.get("/calc/v1/add/2/3", headers={"Authorization": f"bearer {make(bed)}"})
    assert response.status_code == 200
    assert response.json() == {"result": 5, "caller": bed.authority.client("calc-client").client_id}


# --- keys: rotation and outages -----------------------------------------------------------


def get(bed: Bed, token: str) -> httpx.Response:
    return bed.client.get("/calc/v1/add/2/3", headers={"Authorization": f"Bearer {token}"})


def test_rotated_key_is_picked_up_with_one_refetch(bed: Bed) -> None:
    assert get(bed, bed.mint()).status_code == 200
    bed.authority.rotate_keys()
    bed.clock[0] += 31  # past the unknown-kid refetch cooldown (30 s)
    assert get(bed, bed.mint()).status_code == 200
    assert bed.authority.hits["jwks"] == 2


def test_unknown_kid_inside_the_cooldown_is_refused_without_a_refetch(bed: Bed) -> None:
    assert get(bed, bed.mint()).status_code == 200
    for _ in range(5):
        response = get(bed, bed.tokens.unknown_kid())
        assert response.status_code == 401
    assert bed.authority.hits["jwks"] == 1


def test_token_signed_by_retired_key_is_refused_on_a_cold_cache(bed: Bed) -> None:
    old = bed.authority.signing_kid
    token = bed.mint()
    bed.authority.rotate_keys()
    bed.authority.retire_key(old)
    response = get(bed, token)
    assert response.status_code == 401
    assert challenge_ok(bed, response.headers["www-authenticate"], "invalid_token", "kid")


@pytest.mark.parametrize("endpoint", ["jwks", "discovery"])
def test_outage_on_a_cold_cache_is_503_with_retry_after(bed: Bed, endpoint: str) -> None:
    bed.authority.set_fault(endpoint, Fault(status=503))
    response = get(bed, bed.mint())
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) > 0
    assert "www-authenticate" not in response.headers


@pytest.mark.parametrize("fault", [Fault(status=503), Fault(drop=True), Fault(body=b"<html>")])
def test_outage_on_a_warm_cache_serves_known_keys(bed: Bed, fault: Fault) -> None:
    assert get(bed, bed.mint()).status_code == 200
    bed.authority.set_fault("jwks", fault)
    bed.authority.set_fault("discovery", fault)
    assert get(bed, bed.mint(claims={"uti": "another"})).status_code == 200


@pytest.mark.anyio
async def test_hundred_concurrent_requests_on_a_cold_cache_fetch_keys_once() -> None:
    bed = make_bed()
    transport = httpx.ASGITransport(app=create_app(bed.validator))
    tokens = [bed.mint(claims={"uti": f"u{i}"}) for i in range(100)]
    async with httpx.AsyncClient(transport=transport, base_url="http://calc") as http:
        responses = await asyncio.gather(
            *(
                http.get("/calc/v1/add/1/1", headers={"Authorization": f"Bearer {t}"})
                for t in tokens
            )
        )
    assert [r.status_code for r in responses] == [200] * 100
    assert (bed.authority.hits["discovery"], bed.authority.hits["jwks"]) == (1, 1)


# --- WebSocket ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda bed: None,
        lambda bed: bed.tokens.expired(),
        lambda bed: bed.mint(client="reader-client"),
    ],
    ids=["no-token", "expired", "no-role"],
)
def test_websocket_with_bad_token_is_closed_1008_before_accept(bed: Bed, make: Callable[[Bed], str | None]) -> None:  # fmt: skip
    token = make(bed)
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    with pytest.raises(WebSocketDisconnect) as info, bed.client.websocket_connect("/calc/v1/ws", headers=headers):  # fmt: skip
        pass  # pragma: no cover - the handshake is refused
    assert info.value.code == 1008
