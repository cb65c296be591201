"""Multi-tenant: more than one tenant, and Azure AD's organizations/common documents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from tests.support import START

from ccflow.authority import DEFAULT_TENANT_ID, PARTNER_TENANT_ID, Authority, Registrations
from ccflow.errors import ConfigurationError

NOW = START


@pytest.fixture
def authority() -> Authority:
    return Authority(Registrations.multi_tenant(), clock=lambda: NOW)


@pytest.fixture
def http(authority: Authority) -> httpx.Client:
    return httpx.Client(transport=authority.transport())


def token_request(
    authority: Authority, http: httpx.Client, client: str, tenant: str
) -> httpx.Response:
    app = authority.client(client)
    assert app.secret is not None
    return http.post(
        authority.token_endpoint_for(tenant),
        data={
            "grant_type": "client_credentials",
            "client_id": app.client_id,
            "client_secret": app.secret,
            "scope": authority.api("calc-api").default_scope,
        },
    )


def unverified(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def test_multi_tenant_registrations_serve_two_tenants(authority: Authority) -> None:
    assert authority.tenant_ids == (DEFAULT_TENANT_ID, PARTNER_TENANT_ID)
    assert authority.api("calc-api").multi_tenant
    assert authority.registrations.tenant_of(authority.client("partner-client")) == (
        PARTNER_TENANT_ID
    )
    assert authority.registrations.tenant_of(authority.client("calc-client")) == DEFAULT_TENANT_ID


def test_default_registrations_stay_single_tenant() -> None:
    authority = Authority()
    assert authority.tenant_ids == (authority.tenant_id,)
    assert not authority.api("calc-api").multi_tenant


@pytest.mark.parametrize("alias", ["organizations", "common"])
def test_alias_discovery_has_the_tenantid_template(
    authority: Authority, http: httpx.Client, alias: str
) -> None:
    doc = http.get(f"{authority.host}/{alias}/v2.0/.well-known/openid-configuration").json()
    assert doc["issuer"] == f"{authority.host}/{{tenantid}}/v2.0"
    assert doc["jwks_uri"] == f"{authority.host}/{alias}/discovery/v2.0/keys"
    assert doc["token_endpoint"] == f"{authority.host}/{alias}/oauth2/v2.0/token"
    v1 = http.get(f"{authority.host}/{alias}/.well-known/openid-configuration").json()
    assert v1["issuer"] == f"{authority.host}/{{tenantid}}/"
    assert authority.hits["discovery"] == 2


@pytest.mark.parametrize("alias", ["organizations", "common"])
def test_alias_jwks_serves_the_same_keys(
    authority: Authority, http: httpx.Client, alias: str
) -> None:
    keys = http.get(f"{authority.host}/{alias}/discovery/v2.0/keys").json()["keys"]
    tenant_keys = http.get(authority.jwks_uri).json()["keys"]
    assert [k["kid"] for k in keys] == [k["kid"] for k in tenant_keys] == list(authority.kids)
    assert {k["issuer"] for k in keys} == {f"{authority.host}/{{tenantid}}/v2.0"}


def test_alias_token_endpoint_is_refused_as_in_azure_ad(
    authority: Authority, http: httpx.Client
) -> None:
    response = token_request(authority, http, "calc-client", "organizations")
    assert response.status_code == 400
    assert response.json()["error_codes"] == [50059]


def test_partner_tenant_documents_name_the_partner(
    authority: Authority, http: httpx.Client
) -> None:
    doc = http.get(authority.discovery_url_for(PARTNER_TENANT_ID)).json()
    assert doc["issuer"] == f"{authority.host}/{PARTNER_TENANT_ID}/v2.0"
    assert doc["token_endpoint"] == authority.token_endpoint_for(PARTNER_TENANT_ID)
    keys = http.get(doc["jwks_uri"]).json()["keys"]
    assert {k["issuer"] for k in keys} == {doc["issuer"]}


def test_partner_client_token_names_its_own_tenant(
    authority: Authority, http: httpx.Client
) -> None:
    response = token_request(authority, http, "partner-client", PARTNER_TENANT_ID)
    assert response.status_code == 200, response.text
    claims = unverified(response.json()["access_token"])
    assert claims["tid"] == PARTNER_TENANT_ID
    assert claims["iss"] == f"{authority.host}/{PARTNER_TENANT_ID}/v2.0"
    assert claims["aud"] == authority.api("calc-api").client_id
    assert claims["azp"] == authority.client("partner-client").client_id
    assert claims["roles"] == ["invokeRole"]


def test_mint_for_a_partner_client_matches_the_endpoint(authority: Authority) -> None:
    claims = unverified(authority.mint(client="partner-client"))
    assert (claims["tid"], claims["iss"]) == (
        PARTNER_TENANT_ID,
        authority.issuer_for(PARTNER_TENANT_ID),
    )
    v1 = unverified(authority.mint(client="partner-client", version=1))
    assert v1["iss"] == v1["idp"] == f"{authority.host}/{PARTNER_TENANT_ID}/"


@pytest.mark.parametrize(
    ("client", "tenant"),
    [("partner-client", DEFAULT_TENANT_ID), ("calc-client", PARTNER_TENANT_ID)],
)
def test_a_client_is_found_only_in_its_home_tenant(
    authority: Authority, http: httpx.Client, client: str, tenant: str
) -> None:
    response = token_request(authority, http, client, tenant)
    assert response.status_code == 400
    assert response.json()["error_codes"] == [700016]
    assert f"directory '{tenant}'" in response.json()["error_description"]


def test_single_tenant_api_is_not_found_from_another_tenant() -> None:
    regs = Registrations.from_mapping(
        {
            "tenant_id": "tenant-a",
            "tenants": ["tenant-b"],
            "apis": {"api": {"client_id": "api1", "roles": ["r"]}},
            "clients": {"b": {"client_id": "b1", "secret": "s", "tenant_id": "tenant-b"}},
        }
    )
    authority = Authority(regs, clock=lambda: NOW)
    with httpx.Client(transport=authority.transport()) as http:
        response = http.post(
            authority.token_endpoint_for("tenant-b"),
            data={
                "grant_type": "client_credentials",
                "client_id": "b1",
                "client_secret": "s",
                "scope": "api://api1/.default",
            },
        )
    assert response.status_code == 400
    assert response.json()["error_codes"] == [500011]
    assert "tenant named tenant-b" in response.json()["error_description"]


def test_toml_declares_tenants_homes_and_multi_tenant_apis(tmp_path: Path) -> None:
    path = tmp_path / "regs.toml"
    path.write_text(
        'tenant_id = "tenant-a"\n'
        'tenants = ["tenant-b"]\n'
        "[apis.orders]\n"
        'client_id = "api1"\n'
        'roles = ["Orders.Read"]\n'
        "multi_tenant = true\n"
        "[clients.shop]\n"
        'client_id = "c1"\n'
        'secret = "s"\n'
        'tenant_id = "tenant-b"\n'
        'roles = { orders = ["Orders.Read"] }\n',
        encoding="utf-8",
    )
    regs = Registrations.from_toml(path)
    assert regs.tenant_ids == ("tenant-a", "tenant-b")
    assert regs.api("orders").multi_tenant
    assert regs.tenant_of(regs.client("shop")) == "tenant-b"
    claims = unverified(Authority(regs).mint(client="shop", api="orders"))
    assert claims["tid"] == "tenant-b"


BAD: dict[str, tuple[dict[str, Any], str]] = {
    "client in an unserved tenant": (
        {"clients": {"c": {"client_id": "c1", "secret": "s", "tenant_id": "nowhere"}}},
        "clients.c.tenant_id",
    ),
    "grant on a single-tenant api from another tenant": (
        {
            "tenants": ["tenant-b"],
            "apis": {"api": {"client_id": "a1", "roles": ["r"]}},
            "clients": {"c": {"client_id": "c1", "tenant_id": "tenant-b", "roles": {"api": ["r"]}}},
        },
        "clients.c.roles",
    ),
    "organizations as a tenant": ({"tenants": ["organizations"]}, "tenants"),
    "duplicate tenant": ({"tenants": ["tenant-a"]}, ""),
    "multi_tenant not a boolean": (
        {"apis": {"api": {"client_id": "a1", "multi_tenant": "yes"}}},
        "apis.api.multi_tenant",
    ),
}


@pytest.mark.parametrize(("data", "setting"), BAD.values(), ids=BAD.keys())
def test_bad_multi_tenant_registrations_are_refused(data: dict[str, Any], setting: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Registrations.from_mapping({"tenant_id": "tenant-a", **data})
    if setting:
        assert info.value.setting == setting
