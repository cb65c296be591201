"""azure-core's credential options, checked without IO (``ccflow._azure_core``), and the
AccessToken shape azure-core expects."""

from __future__ import annotations

import doctest
import json
from typing import Any
from urllib.parse import quote_plus

import pytest

from ccflow import AccessToken, ConfigurationError
from ccflow import _azure_core as azure_core_module
from ccflow._azure_core import (
    TokenOptions,
    allowed_tenants,
    options_from_mapping,
    token_options,
)
from ccflow._core.tokens import RequestFields, build_token_request

ENDPOINT = "https://login.test/t1/oauth2/v2.0/token"
CLAIMS = json.dumps({"access_token": {"nbf": {"essential": True, "value": "1700000000"}}})


def test_module_examples() -> None:
    assert doctest.testmod(azure_core_module).failed == 0


def test_access_token_unpacks_as_azure_cores_pair() -> None:
    token, expires_on = AccessToken("t", 4600, "Bearer", ("s",))
    assert (token, expires_on) == ("t", 4600)


def test_access_token_keeps_its_attributes_and_equality() -> None:
    token = AccessToken("t", 4600, "pop", ("s",))
    assert (token.token_type, token.scopes) == ("pop", ("s",))
    assert token == AccessToken("t", 4600, "pop", ("s",))
    assert "'t'" not in repr(token)


@pytest.mark.parametrize("claims", [None, ""])
def test_no_claims_and_own_tenant_are_the_default(claims: str | None) -> None:
    assert token_options(claims=claims, token_endpoint=ENDPOINT) == TokenOptions()


@pytest.mark.parametrize("tenant", ["t1", "T1", " t1 "])
def test_the_clients_own_tenant_changes_nothing(tenant: str) -> None:
    options = token_options(tenant_id=tenant, token_endpoint=ENDPOINT)
    assert options.token_endpoint is None
    assert options.tenant_id is None


def test_claims_force_a_fresh_token() -> None:
    options = token_options(claims=CLAIMS, token_endpoint=ENDPOINT)
    assert options.fresh
    assert options.claims == CLAIMS


@pytest.mark.parametrize(
    ("claims", "match"),
    [(b"{}", "JSON string"), ("not json", "JSON object"), ("[1]", "JSON object"), (1, "JSON")],
)
def test_claims_that_are_no_challenge_are_refused(claims: Any, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match) as info:
        token_options(claims=claims, token_endpoint=ENDPOINT)
    assert info.value.setting == "claims"


def test_another_tenant_is_refused_with_the_fix() -> None:
    with pytest.raises(ConfigurationError) as info:
        token_options(tenant_id="t2", token_endpoint=ENDPOINT)
    assert "additionally_allowed_tenants=['t2']" in str(info.value)
    assert "(t1)" in str(info.value)
    assert info.value.setting == "tenant_id"


@pytest.mark.parametrize("allowed", [("t2",), ("*",), ("other", "t2")])
def test_an_allowed_tenant_gets_its_own_endpoint(allowed: tuple[str, ...]) -> None:
    # The endpoint is part of the client's cache key (TokenKey), so its tokens are kept apart.
    options = token_options(tenant_id="T2", token_endpoint=ENDPOINT, allowed=allowed)
    assert options.token_endpoint == "https://login.test/T2/oauth2/v2.0/token"


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("https://h/prefix/t1/oauth2/v2.0/token", "https://h/prefix/t2/oauth2/v2.0/token"),
        ("https://h/t1/oauth2/token", "https://h/t2/oauth2/token"),
    ],
)
def test_the_tenant_segment_is_replaced_under_a_prefix_and_on_v1(
    endpoint: str, expected: str
) -> None:
    options = token_options(tenant_id="t2", token_endpoint=endpoint, allowed=("*",))
    assert options.token_endpoint == expected


def test_a_non_azure_endpoint_cannot_change_tenant() -> None:
    with pytest.raises(ConfigurationError, match="cannot get tokens from another tenant"):
        token_options(tenant_id="t2", token_endpoint="https://idp.test/token", allowed=("*",))


@pytest.mark.parametrize("allowed", [(), ("*",)])
def test_a_credential_bound_to_its_tenant_ignores_tenant_id(allowed: tuple[str, ...]) -> None:
    options = token_options(tenant_id="t2", token_endpoint=ENDPOINT, allowed=allowed, tenants=False)
    assert options == TokenOptions()


@pytest.mark.parametrize("tenant", [3, "   ", "a/b"])
def test_a_malformed_tenant_id_is_refused(tenant: Any) -> None:
    with pytest.raises(ConfigurationError, match="tenant id"):
        token_options(tenant_id=tenant, token_endpoint=ENDPOINT)


def test_enable_cae_must_be_a_bool() -> None:
    assert token_options(enable_cae=True, token_endpoint=ENDPOINT) == TokenOptions()
    with pytest.raises(ConfigurationError, match="enable_cae"):
        token_options(enable_cae="yes", token_endpoint=ENDPOINT)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, ()), ([], ()), (["T2", " t3 "], ("t2", "t3")), (("*",), ("*",))],
)
def test_allowed_tenants(value: Any, expected: tuple[str, ...]) -> None:
    assert allowed_tenants(value) == expected


@pytest.mark.parametrize("value", ["t2", [""], [3], ["a/b"]])
def test_allowed_tenants_refuses_what_is_no_list_of_tenants(value: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        allowed_tenants(value)
    assert info.value.setting == "additionally_allowed_tenants"


def test_token_request_options_become_keywords() -> None:
    options = {"claims": CLAIMS, "tenant_id": "t1", "enable_cae": True, "other": 1}
    assert options_from_mapping(options) == {
        "claims": CLAIMS,
        "tenant_id": "t1",
        "enable_cae": True,
    }
    assert options_from_mapping(None) == {}
    with pytest.raises(ConfigurationError, match="mapping"):
        options_from_mapping(["claims"])  # type: ignore[arg-type]


def test_a_challenge_is_sent_with_the_token_request() -> None:
    fields = RequestFields(form=(("client_id", "c"),))
    request = build_token_request(ENDPOINT, ("api://x/.default",), fields, claims=CLAIMS)
    assert request.body.endswith(b"&claims=" + quote_plus(CLAIMS).encode())
    assert b"claims" not in build_token_request(ENDPOINT, ("api://x/.default",), fields).body
