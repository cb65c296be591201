"""Claim rules: time, version, issuer (incl. multi-tenant), audience, caller, roles, tenants."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from tests.support import START

from ccflow._core.claims import ClaimRules, IssuerRule, ValidatedToken, check_claims, check_roles
from ccflow.errors import ConfigurationError, InsufficientScopeError, InvalidTokenError

NOW = int(START)
TID = "11111111-2222-3333-4444-555555555555"
ISS2 = f"https://login.example/{TID}/v2.0"
ISS1 = f"https://sts.example/{TID}/"
API = "00000000-aaaa-bbbb-cccc-000000000001"
API_URI = "api://calc-api"
CLIENT = "99999999-0000-0000-0000-000000000001"

AZURE = ClaimRules(
    issuers=(IssuerRule(ISS2, "2.0"), IssuerRule(ISS1, "1.0")),
    audiences=frozenset({API, API_URI}),
    azure=True,
    accept_v1=True,
)
AZURE_V2_ONLY = ClaimRules(issuers=(IssuerRule(ISS2, "2.0"),), audiences=frozenset({API}))
MULTI = ClaimRules(
    issuers=(IssuerRule("https://login.example/{tenantid}/v2.0", "2.0"),),
    audiences=frozenset({API}),
    allowed_tenants=frozenset({TID}),
)
GENERIC = ClaimRules(
    issuers=(IssuerRule("https://idp.example/realms/a"),),
    audiences=frozenset({"https://calc.example/api"}),
    azure=False,
)


def v2(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "aud": API,
        "iss": ISS2,
        "iat": NOW - 10,
        "nbf": NOW - 10,
        "exp": NOW + 3600,
        "azp": CLIENT,
        "azpacr": "1",
        "roles": ["invokeRole"],
        "tid": TID,
        "oid": "o",
        "sub": "o",
        "ver": "2.0",
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not DROP}


def v1(**changes: Any) -> dict[str, Any]:
    claims = v2(aud=API_URI, iss=ISS1, ver="1.0", azp=DROP, azpacr=DROP, appid=CLIENT)
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not DROP}


DROP = object()


def test_a_good_v2_token_gives_its_caller_tenant_roles_version_and_expiry() -> None:
    result = check_claims(v2(), AZURE, now=NOW)
    assert result == ValidatedToken(
        claims=v2(),
        client_id=CLIENT,
        tenant_id=TID,
        roles=("invokeRole",),
        version="2.0",
        expires_on=NOW + 3600,
    )
    assert result.claims["oid"] == "o"


def test_claims_of_the_result_are_read_only() -> None:
    result = check_claims(v2(), AZURE, now=NOW)
    with pytest.raises(TypeError):
        result.claims["aud"] = "x"  # type: ignore[index]


def test_the_result_is_a_frozen_slotted_value() -> None:
    result = check_claims(v2(), AZURE, now=NOW)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.client_id = "someone"  # type: ignore[misc]
    assert not hasattr(result, "__dict__")


def test_a_good_v1_token_uses_appid_as_the_caller() -> None:
    result = check_claims(v1(), AZURE, now=NOW)
    assert (result.client_id, result.version) == (CLIENT, "1.0")


def test_roles_absent_means_no_roles() -> None:
    assert check_claims(v2(roles=DROP), AZURE, now=NOW).roles == ()


GOOD = {
    "exp exactly leeway ahead of expiry": (v2(exp=NOW - 59), AZURE),
    "nbf within leeway": (v2(nbf=NOW + 60), AZURE),
    "iat within leeway": (v2(iat=NOW + 60), AZURE),
    "no nbf no iat": (v2(nbf=DROP, iat=DROP), AZURE),
    "float times": (v2(exp=NOW + 0.5, nbf=NOW - 0.5), AZURE),
    "aud is the App ID URI": (v2(aud=API_URI), AZURE),
    "aud a list with ours": (v2(aud=["other", API]), AZURE),
    "multi-tenant issuer filled with tid": (v2(), MULTI),
    "generic: no tid no ver, client_id claim": (
        {
            "iss": "https://idp.example/realms/a",
            "aud": "https://calc.example/api",
            "exp": NOW + 60,
            "client_id": "svc",
        },
        GENERIC,
    ),
    "generic: azp": (
        {
            "iss": "https://idp.example/realms/a",
            "aud": "https://calc.example/api",
            "exp": NOW + 60,
            "azp": "svc",
            "ver": "whatever",
        },
        GENERIC,
    ),
}


@pytest.mark.parametrize(("claims", "rules"), GOOD.values(), ids=GOOD.keys())
def test_acceptable_claims(claims: dict[str, Any], rules: ClaimRules) -> None:
    assert isinstance(check_claims(claims, rules, now=NOW), ValidatedToken)


BAD: dict[str, tuple[dict[str, Any], ClaimRules, str, str]] = {
    # time
    "exp missing": (v2(exp=DROP), AZURE, "claims", "exp"),
    "exp a string": (v2(exp=str(NOW + 60)), AZURE, "claims", "exp"),
    "exp a bool": (v2(exp=True), AZURE, "claims", "exp"),
    "exp null": (v2(exp=None), AZURE, "claims", "exp"),
    "exp a list": (v2(exp=[NOW + 60]), AZURE, "claims", "exp"),
    "exp infinite": (v2(exp=float("inf")), AZURE, "claims", "exp"),
    "exp NaN": (v2(exp=float("nan")), AZURE, "claims", "exp"),
    "nbf a string": (v2(nbf="0"), AZURE, "claims", "nbf"),
    "iat a string": (v2(iat="0"), AZURE, "claims", "iat"),
    "expired beyond leeway": (v2(exp=NOW - 61), AZURE, "expired", "exp"),
    "expired at the leeway edge": (v2(exp=NOW - 60), AZURE, "expired", "exp"),
    "nbf beyond leeway": (v2(nbf=NOW + 61), AZURE, "not_yet_valid", "nbf"),
    "iat beyond leeway": (v2(iat=NOW + 61), AZURE, "issued_at", "iat"),
    # version
    "v1 when v1 not accepted": (v1(), AZURE_V2_ONLY, "version", "ver"),
    "ver missing (Azure)": (v2(ver=DROP), AZURE, "version", "ver"),
    "ver unknown": (v2(ver="3.0"), AZURE, "version", "ver"),
    "ver a number": (v2(ver=2.0), AZURE, "version", "ver"),
    # issuer
    "iss missing": (v2(iss=DROP), AZURE, "issuer", "iss"),
    "iss not a string": (v2(iss=[ISS2]), AZURE, "issuer", "iss"),
    "iss other tenant": (v2(iss=ISS2.replace("1111", "9999")), AZURE, "issuer", "iss"),
    "iss trailing slash": (v2(iss=ISS2 + "/"), AZURE, "issuer", "iss"),
    "iss upper case": (v2(iss=ISS2.upper()), AZURE, "issuer", "iss"),
    "iss http": (v2(iss=ISS2.replace("https", "http")), AZURE, "issuer", "iss"),
    "iss prefix": (v2(iss=ISS2[:-1]), AZURE, "issuer", "iss"),
    "iss with whitespace": (v2(iss=ISS2 + " "), AZURE, "issuer", "iss"),
    "v2 token with v1 issuer": (v2(iss=ISS1), AZURE, "issuer", "iss"),
    "v1 token with v2 issuer": (v1(iss=ISS2), AZURE, "issuer", "iss"),
    "multi: iss tenant differs from tid": (
        v2(iss="https://login.example/other/v2.0"),
        MULTI,
        "issuer",
        "iss",
    ),
    "multi: template issuer literally": (
        v2(iss="https://login.example/{tenantid}/v2.0"),
        MULTI,
        "issuer",
        "iss",
    ),
    "multi: tid missing": (v2(tid=DROP), MULTI, "issuer", "iss"),
    "tid not a string": (v2(tid=5), AZURE, "issuer", "tid"),
    # audience
    "aud missing": (v2(aud=DROP), AZURE, "audience", "aud"),
    "aud other app": (v2(aud="api://other"), AZURE, "audience", "aud"),
    "aud empty string": (v2(aud=""), AZURE, "audience", "aud"),
    "aud empty list": (v2(aud=[]), AZURE, "audience", "aud"),
    "aud a number": (v2(aud=1), AZURE, "audience", "aud"),
    "aud an object": (v2(aud={"a": API}), AZURE, "audience", "aud"),
    "aud list with a number": (v2(aud=[API, 1]), AZURE, "audience", "aud"),
    "aud trailing slash": (v2(aud=API_URI + "/"), AZURE, "audience", "aud"),
    "aud upper case": (v2(aud=API.upper()), AZURE, "audience", "aud"),
    "aud with .default": (v2(aud=API_URI + "/.default"), AZURE, "audience", "aud"),
    # caller
    "azp missing (v2)": (v2(azp=DROP), AZURE, "client", "azp"),
    "azp missing, appid present (v2)": (v2(azp=DROP, appid=CLIENT), AZURE, "client", "azp"),
    "appid missing (v1)": (v1(appid=DROP), AZURE, "client", "appid"),
    "azp not a string": (v2(azp=[CLIENT]), AZURE, "client", "azp"),
    "generic: no caller": (
        {"iss": "https://idp.example/realms/a", "aud": "https://calc.example/api", "exp": NOW + 60},
        GENERIC,
        "client",
        "azp",
    ),
    # roles typing
    "roles a string": (v2(roles="invokeRole"), AZURE, "roles", "roles"),
    "roles with a number": (v2(roles=["invokeRole", 1]), AZURE, "roles", "roles"),
    "roles an object": (v2(roles={"invokeRole": True}), AZURE, "roles", "roles"),
}


def test_an_empty_caller_id_is_called_empty_not_a_non_string() -> None:
    with pytest.raises(InvalidTokenError, match="azp claim is empty"):
        check_claims(v2(azp=""), AZURE, now=NOW)


@pytest.mark.parametrize(("claims", "rules", "reason", "claim"), BAD.values(), ids=BAD.keys())
def test_invalid_claims(claims: dict[str, Any], rules: ClaimRules, reason: str, claim: str) -> None:
    with pytest.raises(InvalidTokenError) as info:
        check_claims(claims, rules, now=NOW)
    assert (info.value.reason, info.value.claim) == (reason, claim)


def test_leeway_is_configurable() -> None:
    strict = ClaimRules(issuers=AZURE.issuers, audiences=AZURE.audiences, leeway=0)
    with pytest.raises(InvalidTokenError):
        check_claims(v2(exp=NOW), strict, now=NOW)
    assert check_claims(v2(exp=NOW + 1), strict, now=NOW).expires_on == NOW + 1


FORBIDDEN = {
    "caller not allowed": (
        v2(),
        ClaimRules(
            issuers=AZURE.issuers,
            audiences=AZURE.audiences,
            allowed_clients=frozenset({"someone-else"}),
        ),
        "client",
    ),
    "v1 caller not allowed": (
        v1(),
        ClaimRules(
            issuers=AZURE.issuers,
            audiences=AZURE.audiences,
            accept_v1=True,
            allowed_clients=frozenset({"someone-else"}),
        ),
        "client",
    ),
    "tenant not allowed": (
        v2(),
        ClaimRules(
            issuers=AZURE.issuers, audiences=AZURE.audiences, allowed_tenants=frozenset({"other"})
        ),
        "tenant",
    ),
    "multi: tenant not allowed": (
        v2(tid="other", iss="https://login.example/other/v2.0"),
        MULTI,
        "tenant",
    ),
    "generic: tid absent but tenants required": (
        {
            "iss": "https://idp.example/realms/a",
            "aud": "https://calc.example/api",
            "exp": NOW + 60,
            "azp": "svc",
        },
        ClaimRules(
            issuers=GENERIC.issuers,
            audiences=GENERIC.audiences,
            azure=False,
            allowed_tenants=frozenset({TID}),
        ),
        "tenant",
    ),
}


@pytest.mark.parametrize(("claims", "rules", "reason"), FORBIDDEN.values(), ids=FORBIDDEN.keys())
def test_valid_but_not_allowed(claims: dict[str, Any], rules: ClaimRules, reason: str) -> None:
    with pytest.raises(InsufficientScopeError) as info:
        check_claims(claims, rules, now=NOW)
    assert info.value.reason == reason


def test_a_refusal_names_the_caller_the_checks_decided_on() -> None:
    # Generic OIDC takes azp, then client_id, then appid: the 403 (and so the refusal log)
    # names that caller, not whichever id claim another reader would try first.
    claims = {
        "iss": "https://idp.example/realms/a",
        "aud": "https://calc.example/api",
        "exp": NOW + 60,
        "client_id": "svc-a",
        "appid": "svc-b",
        "tid": "t1",
    }
    rules = ClaimRules(
        issuers=GENERIC.issuers,
        audiences=GENERIC.audiences,
        azure=False,
        allowed_clients=frozenset({"svc-c"}),
    )
    with pytest.raises(InsufficientScopeError) as info:
        check_claims(claims, rules, now=NOW)
    assert (info.value.client_id, info.value.tenant_id) == ("svc-a", "t1")


def test_allowed_client_and_any_tenant_pass() -> None:
    rules = ClaimRules(
        issuers=MULTI.issuers,
        audiences=MULTI.audiences,
        allowed_clients=frozenset({CLIENT}),
        allowed_tenants=frozenset({"*"}),
    )
    other = v2(tid="other", iss="https://login.example/other/v2.0")
    assert check_claims(other, rules, now=NOW).tenant_id == "other"


def test_allow_lists_compare_guids_case_insensitively() -> None:
    # The portal shows GUIDs in lower case, but an upper-case GUID pasted into the
    # configuration (or a token that carries one) names the same app and tenant.
    client, tenant = "9f1e0c2a-bd34-4e5f-a6b7-c8d9e0f1a2b3", "ab12cd34-ef56-4a78-9bcd-ef0123456789"
    iss = f"https://login.example/{tenant}/v2.0"
    rules = ClaimRules(
        issuers=(IssuerRule(iss, "2.0"),),
        audiences=AZURE.audiences,
        allowed_clients=frozenset({client.upper()}),
        allowed_tenants=frozenset({tenant.upper()}),
    )
    assert check_claims(v2(azp=client, tid=tenant, iss=iss), rules, now=NOW).client_id == client
    shouting = v2(azp=client.upper(), tid=tenant.upper(), iss=iss)
    assert check_claims(shouting, rules, now=NOW).client_id == client.upper()
    with pytest.raises(InsufficientScopeError):
        check_claims(v2(azp=client.replace("9f", "8f"), tid=tenant, iss=iss), rules, now=NOW)


def test_allow_lists_compare_other_ids_exactly() -> None:
    rules = ClaimRules(
        issuers=GENERIC.issuers,
        audiences=GENERIC.audiences,
        azure=False,
        allowed_clients=frozenset({"Billing-Service"}),
    )
    claims = {
        "iss": "https://idp.example/realms/a",
        "aud": "https://calc.example/api",
        "exp": NOW + 60,
        "azp": "billing-service",
    }
    with pytest.raises(InsufficientScopeError):
        check_claims(claims, rules, now=NOW)
    assert check_claims({**claims, "azp": "Billing-Service"}, rules, now=NOW).client_id


ROLE_CASES = {
    "any: one of two": (("a", "b"), ("b", "c"), "any", True),
    "any: none": (("a",), ("b", "c"), "any", False),
    "all: both": (("a", "b"), ("a", "b"), "all", True),
    "all: one missing": (("a",), ("a", "b"), "all", False),
    "wrong case": (("invokerole",), ("invokeRole",), "any", False),
    "no roles": ((), ("invokeRole",), "any", False),
    "single string": (("invokeRole",), "invokeRole", "any", True),
}


@pytest.mark.parametrize(
    ("granted", "required", "match", "ok"), ROLE_CASES.values(), ids=ROLE_CASES.keys()
)
def test_role_checks(granted: tuple[str, ...], required: Any, match: Any, ok: bool) -> None:
    if ok:
        check_roles(granted, required, match=match)
    else:
        with pytest.raises(InsufficientScopeError) as info:
            check_roles(granted, required, match=match)
        assert info.value.reason == "role"
        wanted = (required,) if isinstance(required, str) else required
        assert info.value.required == wanted


def test_a_delegated_token_with_scp_only_has_no_roles() -> None:
    result = check_claims(v2(roles=DROP, scp="user_impersonation"), AZURE, now=NOW)
    with pytest.raises(InsufficientScopeError):
        result.require_roles("invokeRole")


@pytest.mark.parametrize(("required", "match"), [((), "any"), (("",), "any"), (("a",), "some")])
def test_role_check_misuse_is_a_configuration_error(required: Any, match: Any) -> None:
    with pytest.raises(ConfigurationError):
        check_roles(("a",), required, match=match)


def test_issuer_rule_template_needs_a_tenant() -> None:
    rule = IssuerRule("https://x/{tenantid}/v2.0")
    assert rule.matches("https://x/t/v2.0", "t")
    assert not rule.matches("https://x//v2.0", "")
    assert not rule.matches("https://x/t/v2.0", None)


def test_the_verdicts_claims_are_a_read_only_copy_all_the_way_down() -> None:
    claims = v2(roles=["invokeRole"], extra={"nested": ["a"]})
    verdict = check_claims(claims, AZURE, now=NOW)
    claims["roles"].append("admin")
    claims["more"] = 1
    assert verdict.claims["roles"] == ("invokeRole",)
    assert "more" not in verdict.claims
    with pytest.raises(TypeError):
        verdict.claims["aud"] = "other"  # type: ignore[index]
    with pytest.raises(AttributeError):
        verdict.claims["roles"].append("admin")
    with pytest.raises(TypeError):
        verdict.claims["extra"]["nested"] = []


def test_generic_oidc_refuses_an_id_token() -> None:
    rules = ClaimRules(
        issuers=(IssuerRule("https://idp.example"),), audiences=frozenset({"api"}), azure=False
    )
    claims = {"iss": "https://idp.example", "aud": "api", "azp": "c", "exp": NOW + 60}
    assert check_claims(claims, rules, now=NOW).client_id == "c"
    with pytest.raises(InvalidTokenError) as caught:
        check_claims({**claims, "nonce": "n-0S6_WzA2Mj"}, rules, now=NOW)
    assert (caught.value.reason, caught.value.claim) == ("type", "nonce")


def test_azure_ad_tokens_may_carry_a_nonce_like_claim() -> None:
    # Azure AD access tokens are told apart by ver and azp, not nonce: no such rule there.
    assert check_claims({**v2(), "nonce": "x"}, AZURE, now=NOW).client_id
