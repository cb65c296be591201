"""TokenValidator configuration: arguments and environment, bad values fail at startup."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest

from ccflow import TokenValidator
from ccflow.authority import Authority
from ccflow.errors import ConfigurationError

if TYPE_CHECKING:
    from tests.conftest import FakeClock


TENANT = "c0ffee00-cc10-4000-8000-000000000001"


def test_minimal_azure_configuration() -> None:
    validator = TokenValidator(tenant_id=TENANT, audience="api://calc")
    assert validator.realm == "api://calc"
    assert validator.algorithms == frozenset({"RS256"})


BAD_ARGUMENTS: dict[str, tuple[dict[str, Any], str]] = {
    "no audience": ({"tenant_id": TENANT}, "audience"),
    "empty audience list": ({"tenant_id": TENANT, "audience": []}, "audience"),
    "blank audience": ({"tenant_id": TENANT, "audience": " "}, "audience"),
    "audience not a string": ({"tenant_id": TENANT, "audience": [1]}, "audience"),
    "audience a number": ({"tenant_id": TENANT, "audience": 5}, "audience"),
    "two audiences in one string": (
        {"tenant_id": TENANT, "audience": "api://calc, api://other"},
        "audience",
    ),
    "audience with a tab": ({"tenant_id": TENANT, "audience": "api://calc\tx"}, "audience"),
    "require_typ empty": (
        {"tenant_id": TENANT, "audience": "a", "require_typ": " "},
        "require_typ",
    ),
    "require_typ a number": (
        {"tenant_id": TENANT, "audience": "a", "require_typ": 1},
        "require_typ",
    ),
    "issuer blank": ({"issuer": " ", "audience": "a"}, "issuer"),
    "client id with a newline": (
        {"tenant_id": TENANT, "audience": "a", "allowed_clients": ["c1\nc2"]},
        "allowed_clients",
    ),
    "tenant with a control character": (
        {"tenant_id": "organizations", "audience": "a", "allowed_tenants": ["t\x00"]},
        "allowed_tenants",
    ),
    "neither issuer nor tenant": ({"audience": "a"}, "tenant_id"),
    "both issuer and tenant": (
        {"issuer": "https://idp.test", "tenant_id": TENANT, "audience": "a"},
        "issuer",
    ),
    "tenant with a slash": ({"tenant_id": "a/b", "audience": "a"}, "tenant_id"),
    "empty tenant": ({"tenant_id": "", "audience": "a"}, "tenant_id"),
    "plain http issuer": ({"issuer": "http://idp.example", "audience": "a"}, "issuer"),
    "issuer not a URL": ({"issuer": "idp", "audience": "a"}, "issuer"),
    "plain http authority host": (
        {"tenant_id": TENANT, "authority_host": "http://login.example", "audience": "a"},
        "authority_host",
    ),
    "plain http jwks_uri": (
        {"tenant_id": TENANT, "audience": "a", "jwks_uri": "http://keys.example/k"},
        "jwks_uri",
    ),
    "issuer with a broken IPv6 host": ({"issuer": "https://[idp", "audience": "a"}, "issuer"),
    "issuer port not a number": ({"issuer": "https://idp:x/r", "audience": "a"}, "issuer"),
    "authority host port out of range": (
        {"tenant_id": TENANT, "authority_host": "https://login:99999", "audience": "a"},
        "authority_host",
    ),
    "jwks_uri with a broken IPv6 host": (
        {"tenant_id": TENANT, "audience": "a", "jwks_uri": "https://[keys/k"},
        "jwks_uri",
    ),
    "multi-tenant without allowed_tenants": (
        {"tenant_id": "organizations", "audience": "a"},
        "allowed_tenants",
    ),
    "common without allowed_tenants": ({"tenant_id": "common", "audience": "a"}, "allowed_tenants"),
    "allowed_clients empty": (
        {"tenant_id": TENANT, "audience": "a", "allowed_clients": []},
        "allowed_clients",
    ),
    "negative leeway": ({"tenant_id": TENANT, "audience": "a", "leeway": -1}, "leeway"),
    "leeway a string": ({"tenant_id": TENANT, "audience": "a", "leeway": "60"}, "leeway"),
    "alg none": ({"tenant_id": TENANT, "audience": "a", "algorithms": ["none"]}, "algorithms"),
    "alg HS256": ({"tenant_id": TENANT, "audience": "a", "algorithms": ["HS256"]}, "algorithms"),
    "no algorithms": ({"tenant_id": TENANT, "audience": "a", "algorithms": []}, "algorithms"),
    "accept_v1 a string": ({"tenant_id": TENANT, "audience": "a", "accept_v1": "yes"}, "accept_v1"),
    "accept_v1 with a generic issuer": (
        {"issuer": "https://idp.test", "audience": "a", "accept_v1": True},
        "accept_v1",
    ),
    "authority_host with a generic issuer": (
        {"issuer": "https://idp.test", "audience": "a", "authority_host": "https://login.test"},
        "authority_host",
    ),
    "size cap zero": (
        {"tenant_id": TENANT, "audience": "a", "max_token_size": 0},
        "max_token_size",
    ),
    "negative cache": ({"tenant_id": TENANT, "audience": "a", "cache_size": -1}, "cache_size"),
    "negative cooldown": (
        {"tenant_id": TENANT, "audience": "a", "jwks_cooldown": -1},
        "jwks_cooldown",
    ),
    "algorithms None": ({"tenant_id": TENANT, "audience": "a", "algorithms": None}, "algorithms"),
    "algorithms a number": ({"tenant_id": TENANT, "audience": "a", "algorithms": 5}, "algorithms"),
    "authority host a number": (
        {"tenant_id": TENANT, "audience": "a", "authority_host": 5},
        "authority_host",
    ),
    "jwks_uri a number": ({"tenant_id": TENANT, "audience": "a", "jwks_uri": 5}, "jwks_uri"),
    "issuer with a query": ({"issuer": "https://idp.example?x=1", "audience": "a"}, "issuer"),
    "issuer with a fragment": ({"issuer": "https://idp.example/r#f", "audience": "a"}, "issuer"),
    "sync http client": (
        {"tenant_id": TENANT, "audience": "a", "http_client": httpx.Client()},
        "http_client",
    ),
    "clock not callable": ({"tenant_id": TENANT, "audience": "a", "clock": 5}, "clock"),
}


@pytest.mark.parametrize(("kwargs", "setting"), BAD_ARGUMENTS.values(), ids=BAD_ARGUMENTS.keys())
def test_bad_arguments_fail_at_construction_naming_the_argument(
    kwargs: dict[str, Any], setting: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        TokenValidator(**kwargs)
    assert info.value.setting == setting
    assert setting in str(info.value)


def test_loopback_http_issuer_is_allowed() -> None:
    assert TokenValidator(issuer="http://127.0.0.1:8080/realms/a", audience="a").realm == "a"


def test_multi_tenant_with_allowed_tenants() -> None:
    TokenValidator(tenant_id="organizations", audience="a", allowed_tenants=["*"])


def test_authority_host_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", "http://remote.example")
    with pytest.raises(ConfigurationError) as info:
        TokenValidator(tenant_id=TENANT, audience="a")
    assert info.value.setting == "AZURE_AUTHORITY_HOST"


# --- from_env ---------------------------------------------------------------------------------


def test_from_env_reads_every_variable(authority: Authority, clock: FakeClock) -> None:
    env = {
        "CCFLOW_TENANT_ID": authority.tenant_id,
        "AZURE_AUTHORITY_HOST": authority.host,
        "CCFLOW_AUDIENCE": "api://calc, c0ffee00-cc10-4000-8000-0000000000a1",
        "CCFLOW_ALLOWED_CLIENTS": "c0ffee00-cc10-4000-8000-0000000000c1",
        "CCFLOW_ALLOWED_TENANTS": authority.tenant_id,
        "CCFLOW_ACCEPT_V1": "true",
    }
    validator = TokenValidator.from_env(
        env, http_client=httpx.AsyncClient(transport=authority.transport()), clock=clock
    )
    assert validator.realm == "api://calc"


@pytest.mark.anyio
async def test_from_env_validator_accepts_the_authority_tokens(
    authority: Authority, clock: FakeClock
) -> None:
    env = {
        "AZURE_TENANT_ID": authority.tenant_id,
        "AZURE_AUTHORITY_HOST": authority.host,
        "CCFLOW_AUDIENCE": "c0ffee00-cc10-4000-8000-0000000000a1",
        "CCFLOW_ACCEPT_V1": "1",
    }
    validator = TokenValidator.from_env(
        env, http_client=httpx.AsyncClient(transport=authority.transport()), clock=clock
    )
    v1 = authority.mint(version=1, claims={"aud": "c0ffee00-cc10-4000-8000-0000000000a1"})
    assert (await validator.validate(v1)).version == "1.0"
    assert (await validator.validate(authority.mint())).version == "2.0"


def test_from_env_reads_a_generator_override_once() -> None:
    # from_env checks the settings under the variables' names, then builds the validator:
    # a generator must not be used up by the first check.
    audiences = (a for a in ["api://calc", "c0ffee00-cc10-4000-8000-0000000000a1"])
    validator = TokenValidator.from_env({"CCFLOW_TENANT_ID": TENANT}, audience=audiences)
    assert validator.realm == "api://calc"


@pytest.mark.anyio
async def test_from_env_reads_the_authority_host_from_the_mapping_it_is_given(
    authority: Authority, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # authority_host=None (no host given) must fall back to the mapping, not os.environ.
    monkeypatch.delenv("AZURE_AUTHORITY_HOST", raising=False)
    env = {
        "CCFLOW_TENANT_ID": authority.tenant_id,
        "AZURE_AUTHORITY_HOST": authority.host,
        "CCFLOW_AUDIENCE": "c0ffee00-cc10-4000-8000-0000000000a1",
    }
    hosts: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        hosts.append(f"{request.url.scheme}://{request.url.netloc.decode()}")
        return authority.handle(request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handle))
    validator = TokenValidator.from_env(env, authority_host=None, http_client=http, clock=clock)
    assert (await validator.validate(authority.mint())).version == "2.0"
    assert set(hosts) == {authority.host}


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCFLOW_ISSUER", "https://idp.example/realms/a")
    monkeypatch.setenv("CCFLOW_AUDIENCE", "https://calc.example")
    monkeypatch.setenv("AZURE_TENANT_ID", TENANT)  # ignored: CCFLOW_ISSUER wins
    assert TokenValidator.from_env().realm == "https://calc.example"


BAD_ENV: dict[str, tuple[dict[str, str], str]] = {
    "nothing set": ({}, "CCFLOW_AUDIENCE"),
    "no tenant or issuer": ({"CCFLOW_AUDIENCE": "a"}, "CCFLOW_TENANT_ID"),
    "audience blank": ({"CCFLOW_TENANT_ID": TENANT, "CCFLOW_AUDIENCE": " , "}, "CCFLOW_AUDIENCE"),
    "issuer and tenant": (
        {"CCFLOW_ISSUER": "https://i.example", "CCFLOW_TENANT_ID": TENANT, "CCFLOW_AUDIENCE": "a"},
        "CCFLOW_ISSUER",
    ),
    "http issuer": (
        {"CCFLOW_ISSUER": "http://idp.example", "CCFLOW_AUDIENCE": "a"},
        "CCFLOW_ISSUER",
    ),
    "http authority host": (
        {
            "CCFLOW_TENANT_ID": TENANT,
            "AZURE_AUTHORITY_HOST": "http://login.example",
            "CCFLOW_AUDIENCE": "a",
        },
        "AZURE_AUTHORITY_HOST",
    ),
    "issuer not a valid URL": (
        {"CCFLOW_ISSUER": "https://[idp", "CCFLOW_AUDIENCE": "a"},
        "CCFLOW_ISSUER",
    ),
    "authority host not a valid URL": (
        {"CCFLOW_TENANT_ID": TENANT, "AZURE_AUTHORITY_HOST": "[login", "CCFLOW_AUDIENCE": "a"},
        "AZURE_AUTHORITY_HOST",
    ),
    "bad tenant": ({"CCFLOW_TENANT_ID": "a b", "CCFLOW_AUDIENCE": "a"}, "CCFLOW_TENANT_ID"),
    "bad AZURE_TENANT_ID": ({"AZURE_TENANT_ID": "a/b", "CCFLOW_AUDIENCE": "a"}, "AZURE_TENANT_ID"),
    "multi-tenant without tenants": (
        {"CCFLOW_TENANT_ID": "organizations", "CCFLOW_AUDIENCE": "a"},
        "CCFLOW_ALLOWED_TENANTS",
    ),
    "accept_v1 not a boolean": (
        {"CCFLOW_TENANT_ID": TENANT, "CCFLOW_AUDIENCE": "a", "CCFLOW_ACCEPT_V1": "maybe"},
        "CCFLOW_ACCEPT_V1",
    ),
    "accept_v1 with a generic issuer": (
        {"CCFLOW_ISSUER": "https://idp.test", "CCFLOW_AUDIENCE": "a", "CCFLOW_ACCEPT_V1": "yes"},
        "CCFLOW_ACCEPT_V1",
    ),
}


@pytest.mark.parametrize(("env", "variable"), BAD_ENV.values(), ids=BAD_ENV.keys())
def test_from_env_errors_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        TokenValidator.from_env(env)
    assert info.value.setting == variable
    assert variable in str(info.value)


def test_from_env_errors_in_overrides_name_the_argument_not_a_variable() -> None:
    env = {"CCFLOW_TENANT_ID": TENANT, "CCFLOW_AUDIENCE": "a"}
    with pytest.raises(ConfigurationError) as info:
        TokenValidator.from_env(env, audience=" ")
    assert info.value.setting == "audience"
    assert "CCFLOW_AUDIENCE" not in str(info.value)


def test_from_env_issuer_override_with_a_tenant_in_the_environment_names_both() -> None:
    env = {"AZURE_TENANT_ID": TENANT, "CCFLOW_AUDIENCE": "a"}
    with pytest.raises(ConfigurationError) as info:
        TokenValidator.from_env(env, issuer="https://idp.example")
    message = str(info.value)
    assert "AZURE_TENANT_ID" in message
    assert "CCFLOW_ISSUER" not in message


def test_from_env_with_a_mapping_reads_only_that_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    # The process environment's AZURE_AUTHORITY_HOST is not part of the mapping passed in.
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", "http://remote.example")
    validator = TokenValidator.from_env({"CCFLOW_TENANT_ID": TENANT, "CCFLOW_AUDIENCE": "a"})
    assert validator.realm == "a"


def test_an_msal_style_authority_host_is_refused_naming_it() -> None:
    with pytest.raises(ConfigurationError, match="pass the tenant as tenant_id") as info:
        TokenValidator.from_env(
            {
                "CCFLOW_TENANT_ID": TENANT,
                "CCFLOW_AUDIENCE": "api://calc",
                "AZURE_AUTHORITY_HOST": f"https://login.microsoftonline.com/{TENANT}",
            }
        )
    assert info.value.setting == "AZURE_AUTHORITY_HOST"


def test_a_value_with_whitespace_says_how_to_give_several() -> None:
    with pytest.raises(ConfigurationError) as caught:
        TokenValidator(tenant_id=TENANT, audience="api://calc api://other")
    assert "'api://calc api://other' contains whitespace" in str(caught.value)
    assert "as a list" in str(caught.value)
    # The environment's comma-separated form is split first, so it stays fine.
    validator = TokenValidator.from_env(
        {"CCFLOW_TENANT_ID": TENANT, "CCFLOW_AUDIENCE": "api://calc, api://other"}
    )
    assert validator.realm == "api://calc"


@pytest.mark.parametrize("issuer_from", ["environment", "override"])
def test_a_generic_issuer_ignores_azure_sdks_authority_host_variable(
    monkeypatch: pytest.MonkeyPatch, issuer_from: str
) -> None:
    # AZURE_AUTHORITY_HOST is often set for Azure SDKs; it must not break a generic issuer.
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.us")
    env = {"CCFLOW_AUDIENCE": "a", "AZURE_AUTHORITY_HOST": "https://login.microsoftonline.us"}
    if issuer_from == "environment":
        validator = TokenValidator.from_env({**env, "CCFLOW_ISSUER": "https://idp.test/r"})
    else:
        validator = TokenValidator.from_env(env, issuer="https://idp.test/r")
    assert validator.realm == "a"
    monkeypatch.setenv("CCFLOW_ISSUER", "https://idp.test/r")
    monkeypatch.setenv("CCFLOW_AUDIENCE", "a")
    assert TokenValidator.from_env().realm == "a"


def test_a_generic_issuer_holding_the_tenant_template_is_refused() -> None:
    # IssuerRule fills "{tenantid}" with the token's own tid: as a generic issuer (with a
    # jwks_uri, so no discovery could object) it accepted every tenant's tokens, with no
    # allowed_tenants to limit them.
    with pytest.raises(ConfigurationError, match="multi-tenant template") as info:
        TokenValidator(
            issuer="https://login.microsoftonline.com/{tenantid}/v2.0",
            jwks_uri="https://login.microsoftonline.com/common/discovery/v2.0/keys",
            audience="api://calc",
        )
    assert info.value.setting == "issuer"


def test_from_env_names_the_variable_for_a_templated_issuer() -> None:
    with pytest.raises(ConfigurationError) as info:
        TokenValidator.from_env(
            {
                "CCFLOW_ISSUER": "https://login.microsoftonline.com/{tenantid}/v2.0",
                "CCFLOW_AUDIENCE": "api://calc",
            }
        )
    assert info.value.setting == "CCFLOW_ISSUER"
    assert "CCFLOW_TENANT_ID" in str(info.value)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("jwks_uri", "https://xn--zz.example/keys"),
        ("issuer", "https://xn--zz.example/realms/a"),
        ("authority_host", "https://xn--zz.example"),
        ("jwks_uri", "https://\ufb00.example/keys"),
    ],
    ids=["jwks_uri invalid A-label", "issuer invalid A-label", "host invalid A-label", "ffi"],
)
def test_a_url_whose_host_httpx_cannot_encode_fails_at_configuration(
    setting: str, value: str
) -> None:
    # It passed configuration, then every request failed to fetch (a 503 for ever).
    options: dict[str, Any] = {"audience": "api://calc", setting: value}
    if setting != "issuer":
        options["tenant_id"] = "contoso.onmicrosoft.com"
    with pytest.raises(ConfigurationError) as info:
        TokenValidator(**options)
    assert info.value.setting == setting


def test_the_constructor_and_the_settings_state_the_same_defaults() -> None:
    # from_env() and `ccflow verify` check values through ValidatorSettings: a default that
    # differed from the constructor's would check one value and use another.
    import dataclasses
    import inspect

    from ccflow._validator_config import ValidatorSettings

    constructor = inspect.signature(TokenValidator).parameters
    settings = {field.name: field.default for field in dataclasses.fields(ValidatorSettings)}
    assert set(settings) <= set(constructor)
    for name, default in settings.items():
        assert constructor[name].default == default, name
        assert constructor[name].kind is inspect.Parameter.KEYWORD_ONLY, name
