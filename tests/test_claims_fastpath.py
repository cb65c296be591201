"""check_claims takes a fast path for the usual claim shapes; on any claims it must give exactly
the verdict (or the exception, reason and message) of the general checks it replaced.

The oracle below is check_claims as it was before the fast paths, built from the same
general helpers; a seeded generator mixes valid values with every wrong shape per claim
(missing, None, bool, float, empty, lists, upper-case GUIDs, other issuers and audiences)
under single-tenant, v1+v2, multi-tenant, allow-listed and generic-OIDC rules.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import pytest

from ccflow._core.claims import (
    ANY_TENANT,
    ClaimRules,
    IssuerRule,
    ValidatedToken,
    _check_audience,
    _check_time,
    _invalid,
    _optional_str,
    check_claims,
    id_key,
)
from ccflow.errors import CCFlowError, InsufficientScopeError

NOW = 1_800_000_000
TID = "1111aaaa-2222-3333-4444-55555555bbbb"
ISS2 = f"https://login.example/{TID}/v2.0"
ISS1 = f"https://sts.example/{TID}/"
API = "00000000-aaaa-bbbb-cccc-000000000001"
CLIENT = "9999cccc-0000-0000-0000-00000000dddd"
RULES = {
    "v2": ClaimRules(issuers=(IssuerRule(ISS2, "2.0"),), audiences=frozenset({API})),
    "v1+v2, allow-lists": ClaimRules(
        issuers=(IssuerRule(ISS2, "2.0"), IssuerRule(ISS1, "1.0")),
        audiences=frozenset({API, "api://calc"}),
        accept_v1=True,
        allowed_clients=frozenset({CLIENT.upper(), "plain-client"}),
        allowed_tenants=frozenset({TID}),
        leeway=0,
    ),
    "multi-tenant": ClaimRules(
        issuers=(IssuerRule("https://login.example/{tenantid}/v2.0", "2.0"),),
        audiences=frozenset({API}),
        allowed_tenants=frozenset({TID.upper()}),
    ),
    "any tenant": ClaimRules(
        issuers=(IssuerRule("https://login.example/{tenantid}/v2.0", "2.0"),),
        audiences=frozenset({API}),
        allowed_tenants=frozenset({ANY_TENANT}),
    ),
    "generic": ClaimRules(
        issuers=(IssuerRule("https://idp.example/realms/a"),),
        audiences=frozenset({"https://calc.example/api", API}),
        azure=False,
        allowed_clients=frozenset({CLIENT}),
    ),
}
WRONG = [None, True, False, 1.5, float("nan"), "", [], {}, ["x"], "x"]
CHOICES: dict[str, list[Any]] = {
    "exp": [NOW + 3600, NOW - 30, NOW - 60, NOW - 61, NOW, NOW + 0.5, 2**70, *WRONG],
    "nbf": [NOW - 10, NOW, NOW + 30, NOW + 60, NOW + 61, NOW + 1.0, *WRONG],
    "iat": [NOW - 10, NOW, NOW + 30, NOW + 60, NOW + 61, *WRONG],
    "ver": ["2.0", "1.0", "3.0", *WRONG],
    "tid": [TID, TID.upper(), "other", *WRONG],
    "iss": [
        ISS2,
        ISS1,
        ISS2 + "/",
        "https://login.example/other/v2.0",
        "https://idp.example/realms/a",
        *WRONG,
    ],
    "aud": [
        API,
        "api://calc",
        "https://calc.example/api",
        [API],
        [API, "x"],
        ["x"],
        [API, 1],
        [""],
        *WRONG,
    ],
    "azp": [CLIENT, CLIENT.upper(), "plain-client", "other", *WRONG],
    "appid": [CLIENT, "other", *WRONG],
    "client_id": [CLIENT, "other", *WRONG],
    "roles": [["invokeRole"], [], ["a", "b"], ("t",), ["a", 1], "invokeRole", *WRONG],
}
MISSING = object()


def reference_check_claims(
    claims: Mapping[str, Any], rules: ClaimRules, *, now: float
) -> ValidatedToken:
    """check_claims as it was before its fast paths: one general helper per check."""
    expires_on = _check_time(claims, now, rules.leeway)

    ver = claims.get("ver")
    version = ver if isinstance(ver, str) else None
    if rules.azure:
        if ver == "1.0":
            if not rules.accept_v1:
                raise _invalid("v1.0 tokens are not accepted by this API", "version", "ver")
        elif ver != "2.0":
            raise _invalid("the token's version (ver) is missing or unknown", "version", "ver")

    tid = _optional_str(claims, "tid", "issuer")
    iss = claims.get("iss")
    if not isinstance(iss, str):
        raise _invalid("the token's issuer (iss) is missing or not a string", "issuer", "iss")
    for rule in rules.issuers:
        if (rule.version is None or rule.version == version) and rule.matches(iss, tid):
            break
    else:
        raise _invalid("the token is from another issuer", "issuer", "iss")

    _check_audience(claims, rules.audiences)

    if rules.azure:
        client_claim = "appid" if version == "1.0" else "azp"
        client_id = _optional_str(claims, client_claim, "client")
    else:
        client_claim = "azp"
        client_id = None
        for name in ("azp", "client_id", "appid"):
            client_id = _optional_str(claims, name, "client")
            if client_id is not None:
                client_claim = name
                break
    if client_id is None:
        raise _invalid(f"the token names no caller ({client_claim})", "client", client_claim)

    roles_claim = claims.get("roles", ())
    if type(roles_claim) not in (list, tuple):
        raise _invalid("the token's roles claim is not a list of strings", "roles", "roles")
    for role in roles_claim:
        if type(role) is not str:
            raise _invalid("the token's roles claim is not a list of strings", "roles", "roles")

    if rules.allowed_clients is not None and id_key(client_id) not in rules.allowed_clients:
        raise InsufficientScopeError("the calling application is not allowed", reason="client")
    if (
        rules.allowed_tenants is not None
        and ANY_TENANT not in rules.allowed_tenants
        and (tid is None or id_key(tid) not in rules.allowed_tenants)
    ):
        raise InsufficientScopeError("the caller's tenant is not allowed", reason="tenant")

    return ValidatedToken(
        claims=MappingProxyType(dict(claims)),
        client_id=client_id,
        tenant_id=tid,
        roles=tuple(roles_claim),
        version=version,
        expires_on=expires_on,
    )


def outcome(function: Any, claims: Mapping[str, Any], rules: ClaimRules) -> Any:
    try:
        result = function(claims, rules, now=NOW)
    except CCFlowError as exc:
        return (type(exc).__name__, getattr(exc, "reason", None), str(exc))
    assert isinstance(result, ValidatedToken)
    return (result, dict(result.claims))


# The valid value where a rule set's differs from the first choice.
VALID = {"generic": {"iss": "https://idp.example/realms/a"}}


def random_claims(rng: random.Random, valid: Mapping[str, Any]) -> dict[str, Any]:
    claims: dict[str, Any] = {}
    for name, values in CHOICES.items():
        # Mostly the valid value, so that later checks are reached too.
        value = valid.get(name, values[0]) if rng.random() < 0.7 else rng.choice([MISSING, *values])
        if value is not MISSING:
            claims[name] = value
    return claims


@pytest.mark.parametrize("name", list(RULES))
def test_check_claims_gives_the_general_checks_verdict_on_20000_claim_sets(name: str) -> None:
    rules = RULES[name]
    rng = random.Random(f"claims-{name}")
    accepted = 0
    for _ in range(20_000):
        claims = random_claims(rng, VALID.get(name, {}))
        expected = outcome(reference_check_claims, claims, rules)
        assert outcome(check_claims, claims, rules) == expected, claims
        accepted += isinstance(expected[0], ValidatedToken)
    assert accepted > 200  # the generator reaches the end of the checks, not only the start
