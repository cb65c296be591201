"""ccflow.testing: each bad token differs from a valid one in exactly one way."""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import jwt
import pytest
from tests.support import START

from ccflow.authority import Authority, Registrations
from ccflow.testing import OTHER_TENANT_ID, TokenFactory, decode_unverified

NOW = START


@pytest.fixture
def tokens(authority: Authority) -> TokenFactory:
    return TokenFactory(authority)


def public_key(authority: Authority) -> Any:
    return authority.key(authority.signing_kid).public_key


def strict_decode(authority: Authority, token: str, **options: Any) -> dict[str, Any]:
    return jwt.decode(
        token,
        public_key(authority),
        algorithms=["RS256"],
        audience=authority.api("calc-api").client_id,
        issuer=authority.issuer,
        options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, **options},
    )


def test_valid_token_verifies(authority: Authority, tokens: TokenFactory) -> None:
    claims = strict_decode(authority, tokens.valid())
    assert claims["roles"] == ["invokeRole"]


@pytest.mark.parametrize(
    ("method", "check"),
    [
        ("expired", lambda c: c["exp"] < NOW - 3000),
        ("not_yet_valid", lambda c: c["nbf"] > NOW + 3000),
        ("no_roles", lambda c: "roles" not in c),
        ("v1", lambda c: c["ver"] == "1.0" and c["aud"].startswith("api://")),
    ],
)
def test_signed_variants(
    authority: Authority, tokens: TokenFactory, method: str, check: Any
) -> None:
    token = getattr(tokens, method)()
    _, claims = decode_unverified(token)
    assert check(claims)
    jwt.decode(
        token,
        public_key(authority),
        algorithms=["RS256"],
        options={
            "verify_aud": False,
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
        },
    )


def test_wrong_audience(authority: Authority, tokens: TokenFactory) -> None:
    with pytest.raises(jwt.InvalidAudienceError):
        strict_decode(authority, tokens.wrong_audience())


def test_wrong_issuer(authority: Authority, tokens: TokenFactory) -> None:
    with pytest.raises(jwt.InvalidIssuerError):
        strict_decode(authority, tokens.wrong_issuer())


def test_wrong_tenant_changes_tid_and_issuer(authority: Authority, tokens: TokenFactory) -> None:
    _, claims = decode_unverified(tokens.wrong_tenant())
    assert claims["tid"] == OTHER_TENANT_ID
    assert claims["iss"] == f"{authority.host}/{OTHER_TENANT_ID}/v2.0"


def test_other_key_uses_a_published_kid_but_fails_verification(
    authority: Authority, tokens: TokenFactory
) -> None:
    token = tokens.other_key()
    assert jwt.get_unverified_header(token)["kid"] == authority.signing_kid
    with pytest.raises(jwt.InvalidSignatureError):
        strict_decode(authority, token)


def test_unknown_kid_is_not_published(authority: Authority, tokens: TokenFactory) -> None:
    assert jwt.get_unverified_header(tokens.unknown_kid())["kid"] not in authority.kids


def test_alg_none(authority: Authority, tokens: TokenFactory) -> None:
    token = tokens.alg_none()
    assert token.endswith(".")
    assert jwt.get_unverified_header(token)["alg"] == "none"
    with pytest.raises(jwt.InvalidAlgorithmError):
        strict_decode(authority, token)


def test_hs256_with_public_key_would_fool_a_naive_verifier(
    authority: Authority, tokens: TokenFactory
) -> None:
    import hashlib
    import hmac

    from cryptography.hazmat.primitives import serialization

    token = tokens.hs256_with_public_key()
    pem = public_key(authority).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input, _, signature = token.rpartition(".")
    expected = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)) == expected
    with pytest.raises(jwt.InvalidAlgorithmError):
        strict_decode(authority, token)


def test_oversized(tokens: TokenFactory) -> None:
    assert len(tokens.oversized()) > 16 * 1024


def test_tampered_fails_signature(authority: Authority, tokens: TokenFactory) -> None:
    token = tokens.tampered()
    assert "admin" in decode_unverified(token)[1]["roles"]
    with pytest.raises(jwt.InvalidSignatureError):
        strict_decode(authority, token)


def test_tampered_differs_from_what_was_signed_only_in_roles(
    authority: Authority, tokens: TokenFactory
) -> None:
    header, _, signature = token = tokens.tampered().split(".")
    claims = decode_unverified(".".join(token))[1]
    claims["roles"].remove("admin")
    payload = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode())
    restored = f"{header}.{payload.rstrip(b'=').decode()}.{signature}"
    assert strict_decode(authority, restored) == claims


def test_other_clients_and_apis(authority: Authority, tokens: TokenFactory) -> None:
    _, claims = decode_unverified(tokens.valid("reader-client"))
    assert claims["azp"] == authority.client("reader-client").client_id
    assert "roles" not in claims


def test_with_roles(tokens: TokenFactory) -> None:
    assert decode_unverified(tokens.with_roles(["a", "b"]))[1]["roles"] == ["a", "b"]


def test_segments_are_compact_json(tokens: TokenFactory) -> None:
    header = tokens.alg_none().split(".")[0]
    assert json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["alg"] == "none"


def test_wrong_tenant_of_a_v1_api_keeps_the_v1_issuer_shape() -> None:
    # It always wrote a v2 issuer ({host}/{tid}/v2.0): for an API taking v1 tokens the token
    # then differed from valid() in the issuer's shape too, so it failed the issuer check
    # rather than the tenant's.
    from ccflow.authority import ApiApp, Registrations

    regs = Registrations.default()
    legacy = ApiApp(
        name="calc-api",
        client_id="aaaaaaaa-0000-4000-8000-000000000002",
        identifier_uri="api://legacy",
        roles=("invokeRole",),
        access_token_version=1,
    )
    authority = Authority(
        Registrations(tenant_id=regs.tenant_id, apis=(legacy,), clients=regs.clients),
        clock=lambda: NOW,
    )
    tokens = TokenFactory(authority)
    _, valid = decode_unverified(tokens.valid())
    _, wrong = decode_unverified(tokens.wrong_tenant())
    assert valid["iss"] == f"{authority.host}/{authority.tenant_id}/"
    assert wrong["iss"] == f"{authority.host}/{OTHER_TENANT_ID}/"
    assert wrong["tid"] == OTHER_TENANT_ID
    assert wrong["idp"] == wrong["iss"]
    assert {k for k in valid if valid[k] != wrong[k]} <= {"iss", "idp", "tid", "aio", "rh", "uti"}


@pytest.mark.parametrize("method", ["alg_none", "hs256_with_public_key", "other_key"])
def test_algorithm_and_key_variants_keep_the_header_of_valid(
    tokens: TokenFactory, method: str
) -> None:
    # alg_none() and hs256_with_public_key() dropped x5t, differing from valid() in two ways.
    valid = jwt.get_unverified_header(tokens.valid())
    bad = jwt.get_unverified_header(getattr(tokens, method)())
    assert set(bad) == set(valid)
    assert {k for k in valid if valid[k] != bad[k]} <= {"alg"}


@pytest.mark.parametrize(
    ("registrations", "client", "version"),
    [
        (Registrations.multi_tenant(), "partner-client", 2),
        (Registrations.default(), "calc-client", 1),
    ],
)
def test_wrong_issuer_differs_from_valid_in_the_issuers_host_only(
    registrations: Registrations, client: str, version: int
) -> None:
    # It always wrote https://login.evil.test/<first tenant>/v2.0: for a client of another
    # tenant the tenant in iss changed too (so a multi-tenant validator failed the iss/tid
    # check, not the issuer's), and for a v1 API the issuer's shape changed too.
    apis = tuple(dataclasses.replace(a, access_token_version=version) for a in registrations.apis)
    authority = Authority(dataclasses.replace(registrations, apis=apis), clock=lambda: 1.7e9)
    tokens = TokenFactory(authority)
    _, valid = decode_unverified(tokens.valid(client))
    _, wrong = decode_unverified(tokens.wrong_issuer(client))
    assert wrong["iss"] == valid["iss"].replace(authority.host, "https://login.evil.test")
    assert wrong["iss"] != valid["iss"]
    assert {k for k in valid if valid[k] != wrong[k]} <= {"iss", "aio", "rh", "uti"}


# -- which client and API a factory uses when not told -----------------------------------------

SHOP = {
    "apis": {
        "orders-api": {
            "client_id": "0000000a-0000-4000-8000-00000000000a",
            "roles": ["Orders.Read"],
        },
        "stock-api": {"client_id": "0000000b-0000-4000-8000-00000000000b", "roles": ["Read"]},
    },
    "clients": {
        "auditor": {"client_id": "0000000c-0000-4000-8000-00000000000c", "secret": "s1"},
        "shop": {
            "client_id": "0000000d-0000-4000-8000-00000000000d",
            "secret": "s2",
            "roles": {"orders-api": ["Orders.Read"]},
        },
    },
}


def shop_authority() -> Authority:
    return Authority(registrations=Registrations.from_mapping(SHOP))


def test_defaults_are_the_demo_names_for_the_built_in_registrations(
    tokens: TokenFactory,
) -> None:
    assert (tokens.client, tokens.api) == ("calc-client", "calc-api")


def test_defaults_come_from_the_registrations_served() -> None:
    authority = shop_authority()
    tokens = TokenFactory(authority)
    # The first API registered; the first client granted a role on it, not the first client.
    assert (tokens.client, tokens.api) == ("shop", "orders-api")
    _, claims = decode_unverified(tokens.valid())
    assert claims["azp"] == "0000000d-0000-4000-8000-00000000000d"
    assert claims["aud"] == "0000000a-0000-4000-8000-00000000000a"
    assert claims["roles"] == ["Orders.Read"]


def test_without_a_granted_client_the_first_client_is_the_default() -> None:
    data = {**SHOP, "clients": {"auditor": SHOP["clients"]["auditor"]}}
    tokens = TokenFactory(Authority(registrations=Registrations.from_mapping(data)))
    assert tokens.client == "auditor"
    assert "roles" not in decode_unverified(tokens.valid())[1]


@pytest.mark.parametrize(
    "method",
    [
        "expired",
        "wrong_audience",
        "wrong_issuer",
        "wrong_tenant",
        "no_roles",
        "v1",
        "tampered",
        "user_token",
    ],
)
def test_every_method_uses_the_defaults(method: str) -> None:
    _, claims = decode_unverified(getattr(TokenFactory(shop_authority()), method)())
    assert claims.get("azp", claims.get("appid")) == "0000000d-0000-4000-8000-00000000000d"


def test_defaults_can_be_chosen_and_a_call_still_overrides_them() -> None:
    tokens = TokenFactory(shop_authority(), client="auditor", api="stock-api")
    _, claims = decode_unverified(tokens.valid())
    assert (claims["azp"], claims["aud"]) == (
        "0000000c-0000-4000-8000-00000000000c",
        "0000000b-0000-4000-8000-00000000000b",
    )
    _, claims = decode_unverified(tokens.valid("shop", "orders-api"))
    assert claims["roles"] == ["Orders.Read"]


@pytest.mark.parametrize(
    ("options", "message"),
    [({"client": "shopp"}, "no client named 'shopp'"), ({"api": "order-api"}, "orders-api")],
)
def test_an_unknown_default_name_is_refused_naming_the_registered_ones(
    options: dict[str, str], message: str
) -> None:
    with pytest.raises(KeyError, match=message):
        TokenFactory(shop_authority(), **options)


@pytest.mark.parametrize(
    ("data", "missing"),
    [
        ({"apis": SHOP["apis"]}, "no client app registered"),
        ({"clients": {"auditor": SHOP["clients"]["auditor"]}}, "no API app registered"),
        ({}, "no client app and no API app registered"),
    ],
)
def test_a_token_without_a_name_to_default_to_says_what_is_missing(
    data: dict[str, Any], missing: str
) -> None:
    tokens = TokenFactory(Authority(registrations=Registrations.from_mapping(data)))
    with pytest.raises(KeyError, match=missing):
        tokens.valid()
