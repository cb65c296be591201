from __future__ import annotations

import pytest

from ccflow._core.urls import (
    discovery_url_for,
    is_loopback_host,
    jwks_uri_for,
    normalize_authority_host,
    reject_tenant_in_host,
    require_secure_url,
    token_endpoint_for,
)
from ccflow.errors import ConfigurationError


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost", True),
        ("LOCALHOST.", True),
        # Only "localhost" itself: the system resolver may send "api.localhost" to DNS, which
        # can answer with any address, and the secret would cross the network in clear.
        ("api.localhost", False),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("[::1]", True),
        ("::1", True),
        ("10.0.0.1", False),
        ("login.microsoftonline.com", False),
        ("localhost.example.com", False),
        ("128.0.0.1", False),
    ],
)
def test_is_loopback_host(host: str, expected: bool) -> None:
    assert is_loopback_host(host) is expected


@pytest.mark.parametrize(
    "url",
    [
        "https://login.microsoftonline.com/t/oauth2/v2.0/token",
        "http://127.0.0.1:8080/token",
        "http://localhost/token",
        "http://[::1]:9/token",
    ],
)
def test_secure_urls_pass(url: str) -> None:
    assert require_secure_url(url, setting="token_endpoint") == url


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://login.example.com/token", "in clear"),
        ("http://10.1.2.3/token", "in clear"),
        ("ftp://host/token", "absolute https://"),
        ("/relative/token", "absolute https://"),
        ("https://user:pw@host/token", "credentials"),
    ],
)
def test_insecure_urls_are_refused_naming_the_setting(url: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment) as info:
        require_secure_url(url, setting="CCFLOW_TOKEN_ENDPOINT")
    assert info.value.setting == "CCFLOW_TOKEN_ENDPOINT"
    assert "CCFLOW_TOKEN_ENDPOINT" in str(info.value)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("login.microsoftonline.com", "https://login.microsoftonline.com"),
        ("https://login.microsoftonline.us/", "https://login.microsoftonline.us"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ],
)
def test_normalize_authority_host(given: str, expected: str) -> None:
    assert normalize_authority_host(given) == expected


def test_empty_authority_host_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="AZURE_AUTHORITY_HOST is empty"):
        normalize_authority_host("  ", setting="AZURE_AUTHORITY_HOST")


def test_azure_endpoints() -> None:
    host = "https://login.microsoftonline.com/"
    assert token_endpoint_for(host, "t1") == f"{host}t1/oauth2/v2.0/token"
    assert token_endpoint_for(host, "t1", version=1) == f"{host}t1/oauth2/token"
    assert discovery_url_for(host, "t1") == f"{host}t1/v2.0/.well-known/openid-configuration"
    assert discovery_url_for(host, "t1", version=1) == f"{host}t1/.well-known/openid-configuration"
    assert jwks_uri_for(host, "t1") == f"{host}t1/discovery/v2.0/keys"
    assert jwks_uri_for(host, "t1", version=1) == f"{host}t1/discovery/keys"


@pytest.mark.parametrize("tenant", ["", " ", "a/b", "t?x=1", "t#f", "two words"])
def test_bad_tenant_is_refused(tenant: str) -> None:
    with pytest.raises(ConfigurationError, match="tenant_id"):
        token_endpoint_for("https://login.microsoftonline.com", tenant)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("https://login.example.com:99999/token", "not a valid URL"),
        ("https://login.example.com:abc/token", "not a valid URL"),
        ("https://[::1/token", "not a valid URL"),
        (" https://login.example.com/token", "whitespace or control"),
        ("https://login.example.com/tok\nen", "whitespace or control"),
        ("https://login.example.com/t\token", "whitespace or control"),
        ("https://login.example.com/token ", "whitespace or control"),
    ],
)
def test_urls_the_http_client_cannot_use_are_refused(url: str, fragment: str) -> None:
    # urlsplit() silently drops tabs and newlines and checks the port only when asked: such
    # URLs used to pass here and fail on every request with a ValueError from httpx.
    with pytest.raises(ConfigurationError, match=fragment) as info:
        require_secure_url(url, setting="token_endpoint")
    assert info.value.setting == "token_endpoint"


@pytest.mark.parametrize("value", [5, b"https://login.example.com/token", None])
def test_a_url_that_is_not_a_string_is_refused(value: object) -> None:
    with pytest.raises(ConfigurationError, match="must be a string") as info:
        require_secure_url(value, setting="token_endpoint")  # type: ignore[arg-type]
    assert info.value.setting == "token_endpoint"


@pytest.mark.parametrize("value", [5, b"login.microsoftonline.com", None])
def test_an_authority_host_that_is_not_a_string_is_refused(value: object) -> None:
    with pytest.raises(ConfigurationError, match="must be a string") as info:
        normalize_authority_host(value, setting="authority_host")  # type: ignore[arg-type]
    assert info.value.setting == "authority_host"


@pytest.mark.parametrize(
    "host", ["https://login.microsoftonline.com?x=1", "https://login.microsoftonline.com#f"]
)
def test_an_authority_host_with_a_query_or_fragment_is_refused(host: str) -> None:
    # The tenant path was appended after the query: the POST went to the host's root.
    with pytest.raises(ConfigurationError, match="query or fragment") as info:
        normalize_authority_host(host, setting="AZURE_AUTHORITY_HOST")
    assert info.value.setting == "AZURE_AUTHORITY_HOST"


@pytest.mark.parametrize("tenant", ["a\nb", "a\tb", 5, None])
def test_tenant_with_control_characters_or_not_a_string_is_refused(tenant: object) -> None:
    with pytest.raises(ConfigurationError, match="tenant_id") as info:
        token_endpoint_for("https://login.microsoftonline.com", tenant)  # type: ignore[arg-type]
    assert info.value.setting == "tenant_id"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://user:s3cret@host/token",
        "https://user:s3cret@host:99999/token",
        "https://user:s3cret@host/to ken",
        "http://user:s3cret@login.example.com/token",
        "https://user:s3cret@host/token",
    ],
)
def test_a_password_in_a_refused_url_is_not_repeated(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        require_secure_url(url, setting="token_endpoint")
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize(
    ("host", "tenant"),
    [
        ("https://login.microsoftonline.com/contoso.onmicrosoft.com", "contoso.onmicrosoft.com"),
        ("https://login.microsoftonline.com/CONTOSO.onmicrosoft.com/", "contoso.onmicrosoft.com"),
        ("https://login.microsoftonline.com/organizations", "contoso.onmicrosoft.com"),
        ("https://login.microsoftonline.com/t/oauth2/v2.0/token", "t"),
    ],
)
def test_an_msal_style_authority_as_host_is_refused(host: str, tenant: str) -> None:
    with pytest.raises(ConfigurationError, match="pass the tenant as tenant_id") as info:
        reject_tenant_in_host(host, tenant, setting="AZURE_AUTHORITY_HOST")
    assert info.value.setting == "AZURE_AUTHORITY_HOST"


@pytest.mark.parametrize(
    "host", ["https://login.microsoftonline.com", "https://gateway.example/aad-proxy"]
)
def test_a_host_or_a_proxy_prefix_is_accepted(host: str) -> None:
    reject_tenant_in_host(host, "contoso.onmicrosoft.com")
