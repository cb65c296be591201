"""TokenValidator end to end against the local authority: configuration, verdicts, cache."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from tests.support import START, b64, b64json, make_token, rsa_jwk, rsa_key

from ccflow import TokenValidator, ValidatedToken
from ccflow.authority import (
    DEFAULT_HOST,
    DEFAULT_TENANT_ID,
    PARTNER_TENANT_ID,
    Authority,
    Registrations,
)
from ccflow.errors import (
    InsufficientScopeError,
    InvalidTokenError,
    KeysUnavailableError,
)

if TYPE_CHECKING:
    from tests.api.conftest import ValidatorFactory
    from tests.conftest import FakeClock


pytestmark = pytest.mark.anyio


@pytest.fixture
def validator(validator_for: ValidatorFactory) -> TokenValidator:
    return validator_for()


# --- accepted tokens --------------------------------------------------------------------------


async def test_valid_v2_token(authority: Authority, validator: TokenValidator) -> None:
    result = await validator.validate(authority.mint())
    assert isinstance(result, ValidatedToken)
    assert result.client_id == authority.client("calc-client").client_id
    assert result.tenant_id == authority.tenant_id
    assert result.roles == ("invokeRole",)
    assert result.version == "2.0"
    assert result.expires_on == int(START) + authority.token_lifetime
    assert result.claims["aud"] == authority.api("calc-api").client_id
    result.require_roles(("invokeRole",))


async def test_app_id_uri_audience_is_accepted(
    authority: Authority, validator: TokenValidator
) -> None:
    token = authority.mint(claims={"aud": authority.api("calc-api").identifier_uri})
    assert (await validator.validate(token)).claims["aud"].startswith("api://")


async def test_v1_token_accepted_when_enabled(
    validator_for: ValidatorFactory, authority: Authority, clock: FakeClock
) -> None:
    validator = validator_for(accept_v1=True)
    result = await validator.validate(authority.mint(version=1))
    assert (result.version, result.client_id) == ("1.0", authority.client("calc-client").client_id)
    assert authority.hits["discovery"] == 2  # v2 and v1 documents: both issuers


async def test_allowed_client_passes(
    validator_for: ValidatorFactory, authority: Authority, clock: FakeClock
) -> None:
    calc = authority.client("calc-client").client_id
    validator = validator_for(allowed_clients=[calc])
    assert (await validator.validate(authority.mint())).client_id == calc


async def test_generic_oidc_issuer_with_at_jwt_no_tid_no_ver(
    authority: Authority, clock: FakeClock
) -> None:
    validator = TokenValidator(
        issuer=authority.issuer,
        audience="https://calc.example/api",
        http_client=httpx.AsyncClient(transport=authority.transport()),
        clock=clock,
    )
    token = authority.mint(
        claims={"aud": "https://calc.example/api"},
        omit=("tid", "ver"),
        headers={"typ": "at+jwt"},
    )
    result = await validator.validate(token)
    assert (result.tenant_id, result.version) == (None, None)
    assert validator.realm == "https://calc.example/api"


async def test_generic_oidc_with_jwks_uri_skips_discovery(
    authority: Authority, clock: FakeClock
) -> None:
    validator = TokenValidator(
        issuer=authority.issuer,
        jwks_uri=authority.jwks_uri,
        audience=authority.api("calc-api").client_id,
        http_client=httpx.AsyncClient(transport=authority.transport()),
        clock=clock,
    )
    await validator.validate(authority.mint())
    assert (authority.hits["discovery"], authority.hits["jwks"]) == (0, 1)


async def test_multi_tenant_checks_issuer_against_tid_and_allowed_tenants(
    validator_for: ValidatorFactory, authority: Authority, clock: FakeClock
) -> None:
    # The authority serves /organizations/ as Azure AD does: the {tenantid} issuer template.
    validator = validator_for(
        tenant_id="organizations",
        allowed_tenants=[authority.tenant_id],
    )
    assert (await validator.validate(authority.mint())).tenant_id == authority.tenant_id
    other = "0ther000-0000-0000-0000-000000000000"
    forged_tenant = authority.mint(claims={"tid": other})
    with pytest.raises(InvalidTokenError) as info:
        await validator.validate(forged_tenant)
    assert info.value.reason == "issuer"
    foreign = authority.mint(claims={"tid": other, "iss": f"{authority.host}/{other}/v2.0"})
    with pytest.raises(InsufficientScopeError) as scope:
        await validator.validate(foreign)
    assert scope.value.reason == "tenant"
    assert authority.hits["discovery"] == 1


@pytest.fixture
def two_tenants(clock: FakeClock) -> Authority:
    """calc-api multi-tenant in the home tenant; partner-client at home in the partner tenant."""
    return Authority(Registrations.multi_tenant(), clock=clock)


def partner_token(authority: Authority) -> str:
    """partner-client's token from its own tenant's token endpoint, as a client would get it."""
    partner = authority.client("partner-client")
    assert partner.secret is not None
    with httpx.Client(transport=authority.transport()) as http:
        response = http.post(
            authority.token_endpoint_for(PARTNER_TENANT_ID),
            data={
                "grant_type": "client_credentials",
                "client_id": partner.client_id,
                "client_secret": partner.secret,
                "scope": authority.api("calc-api").default_scope,
            },
        )
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


@pytest.mark.parametrize("alias", ["organizations", "common"])
async def test_multi_tenant_accepts_a_token_from_an_allowed_tenant(
    validator_for: ValidatorFactory, two_tenants: Authority, clock: FakeClock, alias: str
) -> None:
    validator = validator_for(
        two_tenants,
        tenant_id=alias,
        allowed_tenants=[two_tenants.tenant_id, PARTNER_TENANT_ID],
    )
    result = await validator.validate(partner_token(two_tenants))
    assert result.tenant_id == PARTNER_TENANT_ID
    assert result.client_id == two_tenants.client("partner-client").client_id
    assert result.claims["iss"] == f"{two_tenants.host}/{PARTNER_TENANT_ID}/v2.0"
    assert (await validator.validate(two_tenants.mint())).tenant_id == two_tenants.tenant_id


async def test_multi_tenant_refuses_a_tenant_not_allowed(
    validator_for: ValidatorFactory, two_tenants: Authority, clock: FakeClock
) -> None:
    validator = validator_for(
        two_tenants, tenant_id="organizations", allowed_tenants=[two_tenants.tenant_id]
    )
    with pytest.raises(InsufficientScopeError) as info:
        await validator.validate(partner_token(two_tenants))
    assert info.value.reason == "tenant"


@pytest.mark.parametrize(
    "claims",
    [
        {"tid": DEFAULT_TENANT_ID},  # iss names the partner tenant, tid the home tenant
        {"iss": f"{DEFAULT_HOST}/{DEFAULT_TENANT_ID}/v2.0"},
    ],
    ids=["tid changed", "iss changed"],
)
async def test_multi_tenant_refuses_iss_and_tid_that_disagree(
    validator_for: ValidatorFactory,
    two_tenants: Authority,
    clock: FakeClock,
    claims: dict[str, str],
) -> None:
    validator = validator_for(
        two_tenants,
        tenant_id="organizations",
        allowed_tenants=[two_tenants.tenant_id, PARTNER_TENANT_ID],
    )
    with pytest.raises(InvalidTokenError) as info:
        await validator.validate(two_tenants.mint(client="partner-client", claims=claims))
    assert info.value.reason == "issuer"


# --- the negative suite -----------------------------------------------------------------------

Mint = Callable[[Authority], str]


def _pem(authority: Authority) -> bytes:
    return authority.key(authority.signing_kid).public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _hs256_with_public_key(authority: Authority) -> str:
    header = {"alg": "HS256", "typ": "JWT", "kid": authority.signing_kid}
    signing_input = f"{b64json(header)}.{b64json(authority.token_claims())}"
    mac = hmac.new(_pem(authority), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def _none_alg(authority: Authority) -> str:
    header = {"alg": "none", "typ": "JWT", "kid": authority.signing_kid}
    return f"{b64json(header)}.{b64json(authority.token_claims())}."


def _own_key(authority: Authority, **kwargs: Any) -> str:
    """Signed with the authority's real key, header built by hand."""
    key = authority.key(authority.signing_kid).private_key
    return make_token(authority.token_claims(), key=key, **kwargs)


def _attacker(authority: Authority, **header: Any) -> str:
    attacker = rsa_key("attacker")
    base = {"alg": "RS256", "typ": "JWT", "kid": authority.signing_kid}
    return make_token(authority.token_claims(), key=attacker, header={**base, **header})


def _tampered(authority: Authority) -> str:
    head, _, sig = authority.mint().split(".")
    claims = {**authority.token_claims(), "roles": ["admin"]}
    return f"{head}.{b64json(claims)}.{sig}"


def _segments(authority: Authority, how: str) -> str:
    head, body, sig = authority.mint().split(".")
    return {
        "two": f"{head}.{body}",
        "four": f"{head}.{body}.{sig}.{sig}",
        "swapped": f"{body}.{head}.{sig}",
        "bad base64": f"{head}.{body}*.{sig}",
        "header not json": f"{b64(b'{')}.{body}.{sig}",
        "claims not json": f"{head}.{b64(b'[1,')}.{sig}",
        "claims an array": f"{head}.{b64json([1])}.{sig}",
    }[how]


def _now(a: Authority) -> float:
    return a.clock()


NOW = int(START)
AAD = "api://c0ffee00-cc10-4000-8000-0000000000a1"

INVALID: dict[str, tuple[Mint, str]] = {
    # malformed
    "empty": (lambda a: "", "malformed"),
    "garbage": (lambda a: "not-a-token", "malformed"),
    "two segments": (lambda a: _segments(a, "two"), "malformed"),
    "four segments": (lambda a: _segments(a, "four"), "malformed"),
    "segments swapped": (lambda a: _segments(a, "swapped"), "algorithm"),
    "bad base64": (lambda a: _segments(a, "bad base64"), "malformed"),
    "header not JSON": (lambda a: _segments(a, "header not json"), "malformed"),
    "claims not JSON": (lambda a: _segments(a, "claims not json"), "malformed"),
    "claims a JSON array": (lambda a: _segments(a, "claims an array"), "malformed"),
    "over the size cap": (lambda a: a.mint(claims={"pad": "x" * 17_000}), "malformed"),
    "crit header": (lambda a: a.mint(headers={"crit": ["exp"]}), "malformed"),
    # algorithm attacks
    "alg none": (_none_alg, "algorithm"),
    "HS256 keyed with the RSA public key": (_hs256_with_public_key, "algorithm"),
    "RS384 not allowed": (lambda a: a.mint(headers={"alg": "RS384"}), "algorithm"),
    "PS256 not allowed": (lambda a: a.mint(headers={"alg": "PS256"}), "algorithm"),
    "alg missing": (
        lambda a: _own_key(a, header={"typ": "JWT", "kid": a.signing_kid}),
        "algorithm",
    ),
    # keys
    "kid missing": (lambda a: _own_key(a, kid=None), "key"),
    "kid unknown": (lambda a: _own_key(a, kid="no-such-kid"), "key"),
    "kid not a string": (lambda a: _own_key(a, header={"alg": "RS256", "kid": 42}), "key"),
    "wrong key for a known kid": (lambda a: _attacker(a), "signature"),
    "jku header to attacker keys": (
        lambda a: _attacker(a, jku="https://evil.test/keys"),
        "signature",
    ),
    "x5u header": (lambda a: _attacker(a, x5u="https://evil.test/cert.pem"), "signature"),
    "jwk header embedding attacker key": (
        lambda a: _attacker(a, jwk=rsa_jwk(rsa_key("attacker"), a.signing_kid)),
        "signature",
    ),
    "x5c header": (
        lambda a: _attacker(a, x5c=["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]),
        "signature",
    ),
    "claims tampered after signing": (_tampered, "signature"),
    # time
    "expired": (lambda a: a.mint(now=NOW - 4000), "expired"),
    "expired just past leeway": (lambda a: a.mint(claims={"exp": NOW - 60}), "expired"),
    "nbf in the future": (lambda a: a.mint(claims={"nbf": NOW + 61}), "not_yet_valid"),
    "iat in the future": (lambda a: a.mint(claims={"iat": NOW + 61}), "issued_at"),
    "exp a string": (lambda a: a.mint(claims={"exp": str(NOW + 600)}), "claims"),
    "exp missing": (lambda a: a.mint(omit=("exp",)), "claims"),
    "nbf a string": (lambda a: a.mint(claims={"nbf": "yesterday"}), "claims"),
    # issuer
    "other tenant's issuer": (
        lambda a: a.mint(claims={"iss": a.issuer.replace(a.tenant_id, "other-tenant")}),
        "issuer",
    ),
    "issuer with trailing slash": (lambda a: a.mint(claims={"iss": a.issuer + "/"}), "issuer"),
    "issuer upper-cased host": (
        lambda a: a.mint(claims={"iss": a.issuer.replace("login", "LOGIN")}),
        "issuer",
    ),
    "issuer over http": (
        lambda a: a.mint(claims={"iss": a.issuer.replace("https", "http")}),
        "issuer",
    ),
    "v1 issuer on a v2 token": (lambda a: a.mint(claims={"iss": a.issuer_v1}), "issuer"),
    "issuer missing": (lambda a: a.mint(omit=("iss",)), "issuer"),
    # version
    "v1 token when v1 not accepted": (lambda a: a.mint(version=1), "version"),
    "ver missing": (lambda a: a.mint(omit=("ver",)), "version"),
    # audience
    "other app's audience": (lambda a: a.mint(claims={"aud": "api://other-app"}), "audience"),
    "App ID URI with trailing slash": (lambda a: a.mint(claims={"aud": AAD + "/"}), "audience"),
    "App ID URI with /.default": (lambda a: a.mint(claims={"aud": AAD + "/.default"}), "audience"),
    "audience empty": (lambda a: a.mint(claims={"aud": ""}), "audience"),
    "audience empty list": (lambda a: a.mint(claims={"aud": []}), "audience"),
    "audience a number": (lambda a: a.mint(claims={"aud": 1}), "audience"),
    "audience missing": (lambda a: a.mint(omit=("aud",)), "audience"),
    # callers and roles typing
    "azp missing": (lambda a: a.mint(omit=("azp",)), "client"),
    "azp not a string": (lambda a: a.mint(claims={"azp": 7}), "client"),
    "roles a string instead of a list": (lambda a: a.mint(claims={"roles": "invokeRole"}), "roles"),
}


@pytest.mark.parametrize(("mint", "reason"), INVALID.values(), ids=INVALID.keys())
async def test_invalid_tokens_are_refused_with_a_reason(
    authority: Authority, validator: TokenValidator, mint: Mint, reason: str
) -> None:
    token = mint(authority)
    with pytest.raises(InvalidTokenError) as info:
        await validator.validate(token)
    assert info.value.reason == reason
    if len(token) > 20:
        assert token not in str(info.value)


@pytest.mark.parametrize(("exp_offset", "ok"), [(-59, True), (-60, False), (0, True), (1, True)])
async def test_leeway_edges(
    authority: Authority, validator: TokenValidator, exp_offset: int, ok: bool
) -> None:
    token = authority.mint(claims={"exp": NOW + exp_offset})
    if ok:
        await validator.validate(token)
    else:
        with pytest.raises(InvalidTokenError):
            await validator.validate(token)


FORBIDDEN: dict[str, tuple[Mint, dict[str, Any], str]] = {
    "caller not on the allow-list": (
        lambda a: a.mint(client="reader-client"),
        {"allowed_clients": ["c0ffee00-cc10-4000-8000-0000000000c1"]},
        "client",
    ),
    "v1 appid not on the allow-list": (
        lambda a: a.mint(client="reader-client", version=1),
        {"allowed_clients": ["c0ffee00-cc10-4000-8000-0000000000c1"], "accept_v1": True},
        "client",
    ),
    "tenant not allowed": (lambda a: a.mint(), {"allowed_tenants": ["someone-else"]}, "tenant"),
}


@pytest.mark.parametrize(("mint", "options", "reason"), FORBIDDEN.values(), ids=FORBIDDEN.keys())
async def test_valid_tokens_from_callers_not_allowed_are_forbidden(
    validator_for: ValidatorFactory,
    authority: Authority,
    clock: FakeClock,
    mint: Mint,
    options: dict[str, Any],
    reason: str,
) -> None:
    validator = validator_for(**options)
    with pytest.raises(InsufficientScopeError) as info:
        await validator.validate(mint(authority))
    assert info.value.reason == reason


ROLES: dict[str, tuple[Mint, tuple[str, ...], str]] = {
    "role missing": (lambda a: a.mint(roles=()), ("invokeRole",), "any"),
    "role in the wrong case": (lambda a: a.mint(roles=["invokerole"]), ("invokeRole",), "any"),
    "delegated token with scp only": (
        lambda a: a.mint(roles=(), claims={"scp": "invokeRole"}),
        ("invokeRole",),
        "any",
    ),
    "all-of with one missing": (
        lambda a: a.mint(roles=["invokeRole"]),
        ("invokeRole", "adminRole"),
        "all",
    ),
    "another client's roles": (lambda a: a.mint(client="reader-client"), ("invokeRole",), "any"),
}


@pytest.mark.parametrize(("mint", "roles", "match"), ROLES.values(), ids=ROLES.keys())
async def test_valid_tokens_without_the_role_fail_require_roles(
    authority: Authority, validator: TokenValidator, mint: Mint, roles: Any, match: Any
) -> None:
    result = await validator.validate(mint(authority))
    with pytest.raises(InsufficientScopeError) as info:
        result.require_roles(roles, match=match)
    assert info.value.reason == "role"


async def test_forged_token_lacking_the_role_is_invalid_not_forbidden(
    authority: Authority, validator: TokenValidator
) -> None:
    with pytest.raises(InvalidTokenError):
        await validator.validate(_attacker(authority))


# --- the verified-token cache -----------------------------------------------------------------


async def test_repeated_token_comes_from_the_cache(
    authority: Authority, validator: TokenValidator
) -> None:
    token = authority.mint()
    first = await validator.validate(token)
    assert await validator.validate(token) is first


async def test_cache_entry_never_outlives_exp(
    validator_for: ValidatorFactory, authority: Authority, clock: FakeClock
) -> None:
    validator = validator_for(leeway=0)
    token = authority.mint(lifetime=100)
    await validator.validate(token)
    clock.advance(100)
    with pytest.raises(InvalidTokenError) as info:
        await validator.validate(token)
    assert info.value.reason == "expired"


async def test_cache_is_bounded(
    validator_for: ValidatorFactory, authority: Authority, clock: FakeClock
) -> None:
    validator = validator_for(cache_size=2)
    tokens = [authority.mint() for _ in range(3)]
    first = await validator.validate(tokens[0])
    for token in tokens[1:]:
        await validator.validate(token)
    again = await validator.validate(tokens[0])
    assert again == first
    assert again is not first


async def test_cache_can_be_disabled(
    validator_for: ValidatorFactory, authority: Authority, clock: FakeClock
) -> None:
    validator = validator_for(cache_size=0)
    token = authority.mint()
    assert await validator.validate(token) is not await validator.validate(token)


async def test_failed_tokens_are_not_cached(
    authority: Authority, validator: TokenValidator
) -> None:
    token = authority.mint(claims={"aud": "api://other"})
    for _ in range(2):
        with pytest.raises(InvalidTokenError):
            await validator.validate(token)


async def test_tokens_never_reach_the_logs(
    validator_for: ValidatorFactory,
    authority: Authority,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    validator = validator_for()
    good, bad = authority.mint(), _attacker(authority)
    await validator.validate(good)
    with pytest.raises(InvalidTokenError):
        await validator.validate(bad)
    for token in (good, bad):
        for part in token.split("."):
            assert part not in caplog.text


# --- cold start without keys ------------------------------------------------------------------


async def test_cold_start_outage_is_keys_unavailable_with_retry_after(
    authority: Authority, validator: TokenValidator
) -> None:
    from ccflow.authority import Fault

    authority.set_fault("discovery", Fault(status=503, retry_after="7"))
    with pytest.raises(KeysUnavailableError) as info:
        await validator.validate(authority.mint())
    assert info.value.retry_after == 7


async def test_aclose_leaves_a_caller_owned_client_open(
    validator_for: ValidatorFactory, authority: Authority, clock: FakeClock
) -> None:
    http = httpx.AsyncClient(transport=authority.transport())
    validator = validator_for(http_client=http)
    await validator.aclose()
    assert not http.is_closed
    await http.aclose()


async def test_validator_is_an_async_context_manager(
    validator_for: ValidatorFactory, authority: Authority, clock: FakeClock
) -> None:
    async with validator_for(http_client=None) as validator:
        assert validator.realm == authority.api("calc-api").client_id


async def test_a_token_whose_algorithm_its_key_does_not_name_is_refused() -> None:
    # The JWKS says the key is for RS256 only; a PS256 token with its kid is refused before
    # any signature check, although PS256 is allowed.
    key = rsa_key("alg-bound")
    jwks = {"keys": [rsa_jwk(key, "bound", alg="RS256")]}
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=jwks))
    validator = TokenValidator(
        issuer="https://idp.example",
        jwks_uri="https://idp.example/keys",
        audience="api",
        algorithms=["RS256", "PS256"],
        http_client=httpx.AsyncClient(transport=transport),
    )
    claims = {"iss": "https://idp.example", "aud": "api", "azp": "c", "exp": 4_000_000_000}
    assert (await validator.validate(make_token(claims, key=key, kid="bound"))).client_id == "c"
    with pytest.raises(InvalidTokenError, match="does not fit its signing key") as caught:
        await validator.validate(make_token(claims, key=key, kid="bound", alg="PS256"))
    assert caught.value.reason == "algorithm"
