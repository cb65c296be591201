"""The in-process local authority: endpoints, tokens, errors, keys and faults."""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any
from urllib.parse import quote_plus

import httpx
import jwt
import pytest
import respx
from tests.support import START

from ccflow.authority import (
    DEFAULT_HOST,
    DEFAULT_TENANT_ID,
    ApiApp,
    Authority,
    ClientApp,
    Fault,
    Registrations,
)
from ccflow.errors import ConfigurationError

NOW = START


@pytest.fixture
def http(authority: Authority) -> httpx.Client:
    return httpx.Client(transport=authority.transport())


def form(
    authority: Authority, client: str = "calc-client", **overrides: str | None
) -> dict[str, str]:
    data: dict[str, str | None] = {
        "grant_type": "client_credentials",
        "client_id": authority.client(client).client_id,
        "client_secret": authority.client(client).secret,
        "scope": authority.api("calc-api").default_scope,
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def verify(authority: Authority, http: httpx.Client, token: str, **kwargs: Any) -> dict[str, Any]:
    jwks = jwt.PyJWKSet.from_dict(http.get(authority.jwks_uri).json())
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwks.keys if k.key_id == kid)
    options = {"verify_exp": False, "verify_iat": False, "verify_nbf": False}
    return jwt.decode(token, key.key, algorithms=["RS256"], options=options, **kwargs)


# -- addresses and registrations ---------------------------------------------------------------


def test_addresses_follow_azure_ad_layout(authority: Authority) -> None:
    base = f"{DEFAULT_HOST}/{DEFAULT_TENANT_ID}"
    assert authority.host == DEFAULT_HOST == "https://login.ccflow.test"
    assert authority.tenant_id == DEFAULT_TENANT_ID
    assert authority.issuer == f"{base}/v2.0"
    assert authority.token_endpoint == f"{base}/oauth2/v2.0/token"
    assert authority.jwks_uri == f"{base}/discovery/v2.0/keys"
    assert authority.discovery_url == f"{base}/v2.0/.well-known/openid-configuration"


@pytest.mark.parametrize(
    ("version", "issuer", "token", "discovery", "keys"),
    [
        (2, "/v2.0", "/oauth2/v2.0/token", "/v2.0/.well-known/openid-configuration", "/v2.0/keys"),
        (1, "/", "/oauth2/token", "/.well-known/openid-configuration", "/keys"),
    ],
)
def test_endpoints_of_a_tenant_follow_azure_ad_layout(
    authority: Authority, version: int, issuer: str, token: str, discovery: str, keys: str
) -> None:
    base = f"{DEFAULT_HOST}/{DEFAULT_TENANT_ID}"
    urls = authority.endpoints(tenant=DEFAULT_TENANT_ID, version=version)
    assert (urls.tenant, urls.version) == (DEFAULT_TENANT_ID, version)
    assert urls.issuer == base + issuer
    assert urls.token_endpoint == base + token
    assert urls.discovery_url == base + discovery
    assert urls.jwks_uri == f"{base}/discovery{keys}"
    assert authority.endpoints(version=version) == urls


def test_endpoints_back_the_documented_properties(authority: Authority) -> None:
    urls = authority.endpoints()
    assert (authority.issuer, authority.token_endpoint) == (urls.issuer, urls.token_endpoint)
    assert (authority.jwks_uri, authority.discovery_url) == (urls.jwks_uri, urls.discovery_url)
    assert authority.issuer_v1 == authority.endpoints(version=1).issuer
    v1 = authority.endpoints(tenant="other", version=1)
    assert authority.issuer_for("other", version=1) == v1.issuer
    assert authority.token_endpoint_for("other", version=1) == v1.token_endpoint
    assert authority.discovery_url_for("other", version=1) == v1.discovery_url


@pytest.mark.parametrize("alias", ["organizations", "common", "Organizations"])
def test_endpoints_of_an_alias_carry_the_issuer_template(authority: Authority, alias: str) -> None:
    urls = authority.endpoints(tenant=alias)
    assert urls.issuer == f"{DEFAULT_HOST}/{{tenantid}}/v2.0"
    assert urls.token_endpoint == f"{DEFAULT_HOST}/{alias}/oauth2/v2.0/token"


def test_endpoints_are_a_frozen_value(authority: Authority) -> None:

    with pytest.raises(dataclasses.FrozenInstanceError):
        authority.endpoints().issuer = "https://elsewhere"  # type: ignore[misc]


@pytest.mark.parametrize("version", [0, 3])
def test_endpoints_know_only_versions_1_and_2(authority: Authority, version: int) -> None:
    with pytest.raises(ValueError, match="version must be 1 or 2"):
        authority.endpoints(version=version)


def test_default_registrations_are_fixed(authority: Authority) -> None:
    api = authority.api("calc-api")
    assert api.client_id == "c0ffee00-cc10-4000-8000-0000000000a1"
    assert api.identifier_uri == f"api://{api.client_id}"
    assert api.roles == ("invokeRole",)
    assert api.access_token_version == 2
    assert authority.client("calc-client").roles == {"calc-api": ("invokeRole",)}
    assert authority.client("reader-client").roles == {}
    assert Authority().client("calc-client").secret == authority.client("calc-client").secret


def test_secrets_stay_out_of_reprs(authority: Authority) -> None:
    client = authority.client("calc-client")
    assert client.secret
    assert client.secret not in repr(client)
    assert client.secret not in repr(authority)
    assert client.secret not in repr(authority.registrations)


def test_unknown_names_raise_key_error_naming_the_known_ones(authority: Authority) -> None:
    with pytest.raises(KeyError, match="calc-client"):
        authority.client("nope")


def test_grants_must_name_defined_roles() -> None:

    api = ApiApp(name="a", client_id="1", identifier_uri="api://a", roles=("r",))
    with pytest.raises(ConfigurationError, match="does not define"):
        Registrations(
            tenant_id="t",
            apis=(api,),
            clients=(ClientApp(name="c", client_id="2", secrets=("s",), roles={"a": ("x",)}),),
        )


# -- discovery and keys ------------------------------------------------------------------------


def test_v2_discovery_document(authority: Authority, http: httpx.Client) -> None:
    doc = http.get(authority.discovery_url).json()
    assert doc["issuer"] == authority.issuer
    assert doc["token_endpoint"] == authority.token_endpoint
    assert doc["jwks_uri"] == authority.jwks_uri
    assert doc["authorization_endpoint"].startswith(authority.host)


def test_v1_discovery_document(authority: Authority, http: httpx.Client) -> None:
    doc = http.get(authority.endpoints(version=1).discovery_url).json()
    assert doc["issuer"] == authority.issuer_v1
    assert doc["jwks_uri"] == authority.endpoints(version=1).jwks_uri
    assert "authorization_endpoint" in doc


@pytest.mark.parametrize("version", [1, 2])
def test_jwks_publishes_the_signing_key(
    authority: Authority, http: httpx.Client, version: int
) -> None:
    url = authority.jwks_uri if version == 2 else authority.endpoints(version=1).jwks_uri
    keys = http.get(url).json()["keys"]
    assert [k["kid"] for k in keys] == [authority.signing_kid]
    assert keys[0]["kty"] == "RSA"
    assert keys[0]["use"] == "sig"
    assert "d" not in keys[0]


def test_hits_count_endpoints(authority: Authority, http: httpx.Client) -> None:
    http.get(authority.discovery_url)
    http.get(authority.jwks_uri)
    http.get(authority.jwks_uri)
    http.post(authority.token_endpoint, data=form(authority))
    assert authority.hits == {"discovery": 1, "jwks": 2, "token": 1}


# -- tokens ------------------------------------------------------------------------------------


def test_token_response_shape(authority: Authority, http: httpx.Client) -> None:
    response = http.post(authority.token_endpoint, data=form(authority))
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3599
    assert body["ext_expires_in"] == 3599
    assert "no-store" in response.headers["cache-control"]


def test_v2_token_claims(authority: Authority, http: httpx.Client) -> None:
    token = http.post(authority.token_endpoint, data=form(authority)).json()["access_token"]
    api, client = authority.api("calc-api"), authority.client("calc-client")
    claims = verify(authority, http, token, audience=api.client_id, issuer=authority.issuer)
    assert claims["azp"] == client.client_id
    assert claims["azpacr"] == "1"
    assert claims["roles"] == ["invokeRole"]
    assert claims["tid"] == authority.tenant_id
    assert claims["ver"] == "2.0"
    assert claims["oid"] == claims["sub"] == client.object_id
    assert claims["iat"] == claims["nbf"] == int(NOW)
    assert claims["exp"] == int(NOW) + 3599
    assert {"aio", "uti", "rh"} <= claims.keys()


def test_token_header_is_azure_ads(authority: Authority, http: httpx.Client) -> None:
    token = http.post(authority.token_endpoint, data=form(authority)).json()["access_token"]
    header = jwt.get_unverified_header(token)
    assert header == {
        "typ": "JWT",
        "alg": "RS256",
        "kid": authority.signing_kid,
        "x5t": authority.signing_kid,
    }


def test_client_without_grants_gets_a_token_without_roles_claim(
    authority: Authority, http: httpx.Client
) -> None:
    data = form(authority, "reader-client")
    token = http.post(authority.token_endpoint, data=data).json()["access_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert "roles" not in claims
    assert claims["azp"] == authority.client("reader-client").client_id


def test_v1_api_gets_v1_shaped_tokens() -> None:
    regs = Registrations(
        tenant_id="t1",
        apis=(
            ApiApp(
                name="old",
                client_id="a1",
                identifier_uri="api://old",
                roles=("r",),
                access_token_version=1,
            ),
        ),
        clients=(ClientApp(name="c", client_id="c1", secrets=("s",), roles={"old": ("r",)}),),
    )
    authority = Authority(regs, clock=lambda: NOW)
    http = httpx.Client(transport=authority.transport())
    data = {
        "grant_type": "client_credentials",
        "client_id": "c1",
        "client_secret": "s",
        "scope": "api://old/.default",
    }
    token = http.post(authority.token_endpoint, data=data).json()["access_token"]
    claims = verify(authority, http, token, audience="api://old", issuer=authority.issuer_v1)
    assert claims["ver"] == "1.0"
    assert claims["appid"] == "c1"
    assert claims["appidacr"] == "1"
    assert claims["idp"] == authority.issuer_v1
    assert "azp" not in claims


def test_token_lifetime_is_configurable() -> None:
    authority = Authority(token_lifetime=600, clock=lambda: NOW)
    http = httpx.Client(transport=authority.transport())
    body = http.post(authority.token_endpoint, data=form(authority)).json()
    assert body["expires_in"] == 600
    assert jwt.decode(body["access_token"], options={"verify_signature": False})["exp"] == NOW + 600


@pytest.mark.parametrize("scope", ["{uri}/.default", "{client_id}/.default", "{uri}//.default"])
def test_scope_may_name_the_app_id_uri_or_client_id(
    authority: Authority, http: httpx.Client, scope: str
) -> None:
    api = authority.api("calc-api")
    data = form(authority, scope=scope.format(uri=api.identifier_uri, client_id=api.client_id))
    assert http.post(authority.token_endpoint, data=data).status_code == 200


def test_client_secret_basic_decodes_form_encoding_rfc6749() -> None:
    secret = "a+b/c%d&e=f:g h~"
    regs = Registrations(
        tenant_id="t1",
        apis=(ApiApp(name="api", client_id="a1", identifier_uri="api://x"),),
        clients=(ClientApp(name="c", client_id="id:with+plus", secrets=(secret,)),),
    )
    authority = Authority(regs)
    userpass = f"{quote_plus('id:with+plus')}:{quote_plus(secret)}"
    basic = "Basic " + base64.b64encode(userpass.encode()).decode()
    response = httpx.Client(transport=authority.transport()).post(
        authority.token_endpoint,
        data={"grant_type": "client_credentials", "scope": "api://x/.default"},
        headers={"Authorization": basic},
    )
    assert response.status_code == 200


def test_extra_form_fields_are_ignored(authority: Authority, http: httpx.Client) -> None:
    data = form(authority, client_info="1", claims='{"access_token":{}}')
    assert http.post(authority.token_endpoint, data=data).status_code == 200


# -- errors ------------------------------------------------------------------------------------

CALC_ID = "c0ffee00-cc10-4000-8000-0000000000c1"

ERRORS = [
    # (case, form overrides, status, error, AADSTS code)
    ("wrong secret", {"client_secret": "nope"}, 401, "invalid_client", 7000215),
    (
        "unknown client",
        {"client_id": "00000000-0000-0000-0000-000000000000"},
        400,
        "unauthorized_client",
        700016,
    ),
    (
        "scope without /.default",
        {"scope": "api://c0ffee00-cc10-4000-8000-0000000000a1"},
        400,
        "invalid_scope",
        1002012,
    ),
    ("two scopes", {"scope": "api://a/.default api://b/.default"}, 400, "invalid_scope", 70011),
    ("unknown resource", {"scope": "api://unknown/.default"}, 400, "invalid_resource", 500011),
    ("no grant type", {"grant_type": None}, 400, "invalid_request", 900144),
    ("other grant type", {"grant_type": "password"}, 400, "unsupported_grant_type", 70003),
    ("no client id", {"client_id": None}, 400, "invalid_request", 900144),
    ("no secret", {"client_secret": None}, 401, "invalid_client", 7000218),
    ("no scope", {"scope": None}, 400, "invalid_request", 900144),
    ("empty scope", {"scope": ""}, 400, "invalid_request", 900144),
    ("assertion and secret", {"client_assertion": "x"}, 400, "invalid_request", 9002313),
]


def assert_aad_error(response: httpx.Response, status: int, error: str, code: int) -> None:
    assert response.status_code == status
    body = response.json()
    assert body["error"] == error
    assert body["error_codes"] == [code]
    assert body["error_description"].startswith(f"AADSTS{code}: ")
    for field in ("timestamp", "trace_id", "correlation_id", "error_uri"):
        assert body[field]
    assert body["trace_id"] in body["error_description"]


@pytest.mark.parametrize(
    ("case", "overrides", "status", "error", "code"), ERRORS, ids=[e[0] for e in ERRORS]
)
def test_token_errors_in_azure_ad_shape(
    authority: Authority,
    http: httpx.Client,
    case: str,
    overrides: dict[str, str | None],
    status: int,
    error: str,
    code: int,
) -> None:
    response = http.post(authority.token_endpoint, data=form(authority, **overrides))
    assert_aad_error(response, status, error, code)


def test_unknown_tenant(authority: Authority, http: httpx.Client) -> None:
    url = f"{authority.host}/no-such-tenant/oauth2/v2.0/token"
    assert_aad_error(http.post(url, data=form(authority)), 400, "invalid_request", 90002)


@pytest.mark.parametrize(
    "path", ["v2.0/.well-known/openid-configuration", "discovery/v2.0/keys", "discovery/keys"]
)
def test_unknown_tenant_discovery_and_keys(
    authority: Authority, http: httpx.Client, path: str
) -> None:
    # Azure AD answers these endpoints' unknown tenant with error "invalid_tenant".
    url = f"{authority.host}/no-such-tenant/{path}"
    assert_aad_error(http.get(url), 400, "invalid_tenant", 90002)


def test_tenant_id_in_the_url_is_case_insensitive(authority: Authority, http: httpx.Client) -> None:
    url = f"{authority.host}/{authority.tenant_id.upper()}/oauth2/v2.0/token"
    response = http.post(url, data=form(authority))
    assert response.status_code == 200, response.text
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert (claims["tid"], claims["iss"]) == (authority.tenant_id, authority.issuer)


def test_json_body_is_refused_clearly(authority: Authority, http: httpx.Client) -> None:
    response = http.post(authority.token_endpoint, json=form(authority))
    assert_aad_error(response, 400, "invalid_request", 900144)
    assert "form-encoded" in response.json()["error_description"]


@pytest.mark.parametrize(
    "header",
    [
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Bearer abc",
        "Basic",
        "garbage",
        "Basic " + base64.b64encode(b"\xff\xfe:x").decode(),
    ],
)
def test_garbage_authorization_header_is_400(
    authority: Authority, http: httpx.Client, header: str
) -> None:
    response = http.post(
        authority.token_endpoint,
        data=form(authority, client_secret=None),
        headers={"Authorization": header},
    )
    assert_aad_error(response, 400, "invalid_request", 9002313)


@pytest.mark.parametrize("body", [b"%ff%fe=1", b"\xff\xfe", b"a=1&a=2", b"", b"[1,2]"])
def test_malformed_bodies_are_400(authority: Authority, http: httpx.Client, body: bytes) -> None:
    response = http.post(
        authority.token_endpoint,
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400
    assert response.json()["error_description"].startswith("AADSTS")


def test_duplicated_field_is_refused(authority: Authority, http: httpx.Client) -> None:
    body = "&".join(f"{k}={quote_plus(v)}" for k, v in form(authority).items()) + "&scope=x"
    response = http.post(
        authority.token_endpoint,
        content=body.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_aad_error(response, 400, "invalid_request", 9000411)


def test_get_on_token_endpoint_is_405(authority: Authority, http: httpx.Client) -> None:
    response = http.get(authority.token_endpoint)
    assert_aad_error(response, 405, "invalid_request", 900561)
    assert response.headers["allow"] == "POST"


def test_unknown_path_is_404(authority: Authority, http: httpx.Client) -> None:
    assert http.get(f"{authority.host}/nothing/here").status_code == 404


def test_client_request_id_becomes_correlation_id(authority: Authority, http: httpx.Client) -> None:
    corr = "12345678-1234-1234-1234-123456789abc"
    response = http.post(
        authority.token_endpoint,
        data=form(authority, client_secret="x"),
        headers={"client-request-id": corr},
    )
    assert response.json()["correlation_id"] == corr


def test_error_bodies_never_echo_the_secret(authority: Authority, http: httpx.Client) -> None:
    secret = "Sup3r~Secret+Value/=="
    response = http.post(authority.token_endpoint, data=form(authority, client_secret=secret))
    assert secret not in response.text
    assert quote_plus(secret) not in response.text


# -- in-process faces --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_transport_works_with_async_client(authority: Authority) -> None:
    async with httpx.AsyncClient(transport=authority.transport()) as http:
        response = await http.post(authority.token_endpoint, data=form(authority))
    assert response.status_code == 200


def test_mock_routes_the_host_through_respx(authority: Authority) -> None:
    with authority.mock():
        response = httpx.get(authority.discovery_url)
    assert response.json()["issuer"] == authority.issuer


def test_mock_adds_to_a_given_router(authority: Authority) -> None:
    with respx.mock(assert_all_called=False) as router:
        assert authority.mock(router) is router
        assert httpx.get(authority.jwks_uri).status_code == 200


@pytest.mark.anyio
async def test_asgi_app_serves_the_same_endpoints(authority: Authority) -> None:
    transport = httpx.ASGITransport(app=authority.asgi)
    async with httpx.AsyncClient(transport=transport, base_url=authority.host) as http:
        token = await http.post(authority.token_endpoint, data=form(authority))
        discovery = await http.get(authority.discovery_url)
    assert token.status_code == 200
    assert discovery.json()["issuer"] == authority.issuer


# -- keys --------------------------------------------------------------------------------------


def test_rotation_publishes_both_keys_and_signs_with_the_new_one(
    authority: Authority, http: httpx.Client
) -> None:
    old = authority.signing_kid
    new = authority.rotate_keys()
    assert new != old
    assert [k["kid"] for k in http.get(authority.jwks_uri).json()["keys"]] == [old, new]
    token = http.post(authority.token_endpoint, data=form(authority)).json()["access_token"]
    assert jwt.get_unverified_header(token)["kid"] == new


def test_retired_key_leaves_the_jwks(authority: Authority, http: httpx.Client) -> None:
    old = authority.signing_kid
    new = authority.rotate_keys()
    authority.retire_key(old)
    assert [k["kid"] for k in http.get(authority.jwks_uri).json()["keys"]] == [new]


def test_retiring_the_signing_key_falls_back_to_the_newest_remaining(authority: Authority) -> None:
    old = authority.signing_kid
    new = authority.rotate_keys()
    authority.retire_key(new)
    assert authority.signing_kid == old


def test_the_last_key_cannot_be_retired(authority: Authority) -> None:
    with pytest.raises(ValueError, match="rotate"):
        authority.retire_key(authority.signing_kid)


def test_mint_with_a_retired_key_is_possible(authority: Authority) -> None:
    old = authority.signing_kid
    authority.rotate_keys()
    authority.retire_key(old)
    assert jwt.get_unverified_header(authority.mint(kid=old))["kid"] == old


# -- mint --------------------------------------------------------------------------------------


def test_mint_matches_the_token_endpoint(authority: Authority, http: httpx.Client) -> None:
    claims = verify(authority, http, authority.mint(), audience=authority.api("calc-api").client_id)
    assert claims["roles"] == ["invokeRole"]
    assert claims["azp"] == authority.client("calc-client").client_id


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"roles": ()}, lambda c: "roles" not in c),
        ({"roles": ["x", "y"]}, lambda c: c["roles"] == ["x", "y"]),
        ({"version": 1}, lambda c: c["ver"] == "1.0" and "appid" in c),
        ({"lifetime": 60, "now": 100}, lambda c: (c["iat"], c["exp"]) == (100, 160)),
        ({"claims": {"aud": "other"}}, lambda c: c["aud"] == "other"),
        ({"omit": ["tid"]}, lambda c: "tid" not in c),
    ],
)
def test_mint_options(authority: Authority, options: dict[str, Any], expected: Any) -> None:
    claims = jwt.decode(authority.mint(**options), options={"verify_signature": False})
    assert expected(claims)


def test_mint_headers_override(authority: Authority) -> None:
    token = authority.mint(headers={"typ": "at+jwt"})
    assert jwt.get_unverified_header(token)["typ"] == "at+jwt"


# -- faults ------------------------------------------------------------------------------------


def test_fault_status_with_retry_after(authority: Authority, http: httpx.Client) -> None:
    authority.set_fault("token", Fault(status=429, retry_after="7"))
    response = http.post(authority.token_endpoint, data=form(authority))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json()["error_description"].startswith("AADSTS")


def test_fault_garbage_body(authority: Authority, http: httpx.Client) -> None:
    authority.set_fault("jwks", Fault(status=502, body=b"<html>bad gateway</html>"))
    response = http.get(authority.jwks_uri)
    assert (response.status_code, response.content) == (502, b"<html>bad gateway</html>")


def test_fault_body_alone_answers_200(authority: Authority, http: httpx.Client) -> None:
    authority.set_fault("discovery", Fault(body=b"not json"))
    response = http.get(authority.discovery_url)
    assert (response.status_code, response.content) == (200, b"not json")


def test_fault_drop_raises_connect_error(authority: Authority, http: httpx.Client) -> None:
    authority.set_fault("token", Fault(drop=True))
    with pytest.raises(httpx.ConnectError):
        http.post(authority.token_endpoint, data=form(authority))


def test_fault_timeout_raises_read_timeout(authority: Authority, http: httpx.Client) -> None:
    authority.set_fault("jwks", Fault(timeout=True))
    with pytest.raises(httpx.ReadTimeout):
        http.get(authority.jwks_uri)


def test_fault_times_limits_it(authority: Authority, http: httpx.Client) -> None:
    authority.set_fault("token", Fault(status=503, times=2))
    codes = [
        http.post(authority.token_endpoint, data=form(authority)).status_code for _ in range(3)
    ]
    assert codes == [503, 503, 200]


def test_clear_fault(authority: Authority, http: httpx.Client) -> None:
    authority.set_fault("jwks", Fault(status=500))
    authority.clear_fault("jwks")
    assert http.get(authority.jwks_uri).status_code == 200


def test_fault_on_one_endpoint_leaves_others(authority: Authority, http: httpx.Client) -> None:
    authority.set_fault("jwks", Fault(status=500))
    assert http.get(authority.discovery_url).status_code == 200


def test_delay_only_fault_changes_nothing_in_process(
    authority: Authority, http: httpx.Client
) -> None:
    authority.set_fault("token", Fault(delay=5))
    assert http.post(authority.token_endpoint, data=form(authority)).status_code == 200


@pytest.mark.parametrize("endpoint", ["nope", "Token"])
def test_fault_names_are_checked(authority: Authority, endpoint: str) -> None:
    with pytest.raises(ValueError, match="token"):
        authority.set_fault(endpoint, Fault(status=500))


@pytest.mark.parametrize("kwargs", [{"status": 99}, {"delay": -1}, {"times": 0}])
def test_fault_values_are_checked(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Fault(**kwargs)


def test_json_bodies_are_compact_json(authority: Authority, http: httpx.Client) -> None:
    response = http.get(authority.jwks_uri)
    assert response.headers["content-type"].startswith("application/json")
    assert json.loads(response.content) == authority.jwks()


@pytest.mark.anyio
async def test_asgi_app_answers_a_latin1_header_value(authority: Authority) -> None:
    # ASGI headers are bytes; a non-ASCII value made building the request raise (a 500).
    transport = httpx.ASGITransport(app=authority.asgi)
    async with httpx.AsyncClient(transport=transport, base_url=authority.host) as http:
        r = await http.get(authority.discovery_url, headers={"X-Caller": "café".encode("latin-1")})
    assert r.status_code == 200


@pytest.mark.anyio
async def test_asgi_app_bounds_the_body_it_reads(authority: Authority) -> None:
    # The TLS server caps bodies at 1 MiB; the ASGI face (the demo's, under uvicorn) read any.
    transport = httpx.ASGITransport(app=authority.asgi)
    async with httpx.AsyncClient(transport=transport, base_url=authority.host) as http:
        big = await http.post(authority.token_endpoint, content=b"a" * ((1 << 20) + 1))
        small = await http.post(authority.token_endpoint, data={"grant_type": "x"})
    assert big.status_code == 413
    assert "request body over" in big.text
    assert small.status_code == 400


@pytest.mark.anyio
async def test_asgi_app_refuses_a_websocket_handshake(authority: Authority) -> None:
    sent: list[dict[str, object]] = []
    messages = iter([{"type": "websocket.connect"}])

    async def receive() -> dict[str, object]:
        return next(messages)

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await authority.asgi({"type": "websocket", "path": "/", "headers": []}, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}]


def test_an_empty_secret_never_authenticates() -> None:
    # A registration holding an empty secret (secrets = [""] in TOML) let any request with an
    # empty client_secret in.
    regs = Registrations.default()
    calc_client = regs.client("calc-client")
    emptied = ClientApp(
        name="calc-client",
        client_id=calc_client.client_id,
        secrets=("",),
        roles=calc_client.roles,
        object_id=calc_client.object_id,
    )
    authority = Authority(
        Registrations(tenant_id=regs.tenant_id, apis=regs.apis, clients=(emptied,))
    )
    with httpx.Client(transport=authority.transport()) as http:
        data = {**form(authority), "client_secret": ""}
        r = http.post(authority.token_endpoint, data=data)
        basic = http.post(
            authority.token_endpoint,
            data={k: v for k, v in data.items() if k != "client_secret"},
            auth=(emptied.client_id, ""),
        )
    assert (r.status_code, r.json()["error_codes"]) == (401, [7000215])
    assert (basic.status_code, basic.json()["error_codes"]) == (401, [7000215])


@pytest.mark.parametrize(
    "case", [str.upper, lambda s: s[:8].upper() + s[8:]], ids=["upper", "mixed"]
)
def test_client_ids_match_case_insensitively_as_in_azure_ad(
    authority: Authority, http: httpx.Client, case: Any
) -> None:
    # Client ids are GUIDs, which Azure AD matches in any case; an upper-case client id got
    # AADSTS700016 (application not found). The token names the registered id.
    calc_client = authority.client("calc-client")
    r = http.post(
        authority.token_endpoint, data=form(authority, client_id=case(calc_client.client_id))
    )
    assert r.status_code == 200, r.text
    claims = jwt.decode(r.json()["access_token"], options={"verify_signature": False})
    assert claims["azp"] == calc_client.client_id
    api = authority.api("calc-api")
    by_guid = form(authority, scope=f"{case(api.client_id)}/.default")
    assert http.post(authority.token_endpoint, data=by_guid).status_code == 200


# -- the v1 token endpoint ---------------------------------------------------------------------


def v1_form(authority: Authority, resource: str | None) -> dict[str, str]:
    data = form(authority, scope=None)
    if resource is not None:
        data["resource"] = resource
    return data


@pytest.mark.parametrize("which", ["identifier_uri", "client_id"])
def test_v1_token_endpoint_takes_resource_and_answers_strings(
    authority: Authority, http: httpx.Client, which: str
) -> None:
    api = authority.api("calc-api")
    resource = getattr(api, which)
    assert (
        authority.endpoints(version=1).token_endpoint
        == f"{DEFAULT_HOST}/{authority.tenant_id}/oauth2/token"
    )
    response = http.post(
        authority.endpoints(version=1).token_endpoint, data=v1_form(authority, resource)
    )
    assert response.status_code == 200
    body = response.json()
    assert body["expires_in"] == body["ext_expires_in"] == "3599"
    assert body["expires_on"] == str(int(NOW) + 3599)
    assert body["not_before"] == str(int(NOW))
    assert body["resource"] == resource
    # The token's version is the API's (2 for calc-api), not the endpoint's, as in Azure AD.
    claims = verify(authority, http, body["access_token"], audience=api.client_id)
    assert claims["ver"] == "2.0"
    assert claims["roles"] == ["invokeRole"]


def test_v1_token_endpoint_ignores_scope_and_needs_resource(
    authority: Authority, http: httpx.Client
) -> None:
    # TokenClient sends `scope` only: at Azure AD's v1 endpoint that is AADSTS900144 as well.
    response = http.post(authority.endpoints(version=1).token_endpoint, data=form(authority))
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_request"
    assert body["error_codes"] == [900144]
    assert "'resource'" in body["error_description"]


def test_v1_token_endpoint_refuses_an_unknown_resource(
    authority: Authority, http: httpx.Client
) -> None:
    response = http.post(
        authority.endpoints(version=1).token_endpoint, data=v1_form(authority, "api://nowhere")
    )
    assert response.status_code == 400
    assert response.json()["error_codes"] == [500011]


def test_v1_discovery_names_the_served_v1_token_endpoint(
    authority: Authority, http: httpx.Client
) -> None:
    document = http.get(authority.endpoints(version=1).discovery_url).json()
    assert document["token_endpoint"] == authority.endpoints(version=1).token_endpoint
    resource = authority.api("calc-api").identifier_uri
    answer = http.post(document["token_endpoint"], data=v1_form(authority, resource))
    assert answer.status_code == 200


@pytest.mark.parametrize(
    ("registrations", "hint"),
    [("authority.toml", "from_toml"), ({"tenant_id": "t"}, "from_mapping")],
)
def test_registrations_of_the_wrong_type_are_refused_at_once(registrations: Any, hint: str) -> None:
    # A TOML path passed as is (or through the plugin's marker) was accepted and failed later
    # with an AttributeError deep inside.
    with pytest.raises(TypeError, match=f"registrations must be a Registrations.*{hint}"):
        Authority(registrations)


@pytest.mark.parametrize("lifetime", ["600", 60.5, True])
def test_a_token_lifetime_that_is_not_whole_seconds_is_refused(lifetime: Any) -> None:
    with pytest.raises(TypeError, match="token_lifetime must be whole seconds"):
        Authority(token_lifetime=lifetime)


def _client_credentials(authority: Authority, client: str = "calc-client") -> dict[str, str]:
    app = authority.client(client)
    assert app.secret is not None
    return {
        "grant_type": "client_credentials",
        "client_id": app.client_id,
        "client_secret": app.secret,
        "scope": authority.api("calc-api").default_scope,
    }


def test_a_host_with_a_path_prefix_serves_the_endpoints_it_advertises() -> None:
    # normalize_authority_host accepts a proxy prefix (and TokenClient/TokenValidator use
    # one), but every endpoint under it answered 404.
    authority = Authority(host="https://login.ccflow.test/prefix")
    with httpx.Client(transport=authority.transport()) as http:
        document = http.get(authority.discovery_url)
        assert document.status_code == 200
        assert document.json()["token_endpoint"] == authority.token_endpoint
        assert http.get(authority.jwks_uri).status_code == 200
        answer = http.post(authority.token_endpoint, data=_client_credentials(authority))
        assert answer.status_code == 200, answer.text
        # Outside the prefix nothing is served.
        outside = f"https://login.ccflow.test/{authority.tenant_id}/discovery/v2.0/keys"
        assert http.get(outside).status_code == 404
