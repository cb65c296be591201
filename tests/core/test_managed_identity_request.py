"""A managed identity's token request and answer, without IO: which endpoint the environment
names, the GET it makes, how its answers are read and which failures are retried."""

from __future__ import annotations

import json
import pickle
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from ccflow import ConfigurationError, ManagedIdentity, TokenRequestError
from ccflow import _managed_identity as mi_module
from ccflow._core.tokens import ErrorContext, parse_token_response
from ccflow._managed_identity import ManagedIdentityRetry

SCOPES = ("api://calc-api/.default",)
APP_SERVICE = {"IDENTITY_ENDPOINT": "http://127.0.0.1:8081/msi/token", "IDENTITY_HEADER": "h3ader"}
IMDS = {"AZURE_POD_IDENTITY_AUTHORITY_HOST": "http://127.0.0.1:9999/"}


def query_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


def test_imds_is_asked_with_the_metadata_header() -> None:
    request = ManagedIdentity(environ=IMDS).token_request(scopes=SCOPES, now=0)
    assert request.method == "GET"
    assert request.url.startswith("http://127.0.0.1:9999/metadata/identity/oauth2/token?")
    assert query_of(request.url) == {"api-version": "2018-02-01", "resource": "api://calc-api"}
    assert ("Metadata", "true") in request.headers
    assert request.body == b""


def test_app_service_is_asked_with_its_header_secret() -> None:
    request = ManagedIdentity(environ=APP_SERVICE).token_request(scopes=SCOPES, now=0)
    assert request.url.startswith("http://127.0.0.1:8081/msi/token?")
    assert query_of(request.url) == {"api-version": "2019-08-01", "resource": "api://calc-api"}
    assert ("X-IDENTITY-HEADER", "h3ader") in request.headers


@pytest.mark.parametrize("environ", [IMDS, APP_SERVICE])
def test_a_user_assigned_identity_is_named_by_client_id(environ: dict[str, str]) -> None:
    request = ManagedIdentity("uai-1", environ=environ).token_request(scopes=SCOPES, now=0)
    assert query_of(request.url)["client_id"] == "uai-1"


def test_the_default_imds_host_is_azures_link_local_address() -> None:
    # Only the constant: the test suite refuses to build a credential that would use it.
    assert mi_module.IMDS_HOST == "http://169.254.169.254"


def test_the_suite_refuses_the_default_imds_host() -> None:
    with pytest.raises(AssertionError, match=r"169\.254\.169\.254"):
        ManagedIdentity(environ={})


def test_one_resource_per_request() -> None:
    identity = ManagedIdentity(environ=IMDS)
    with pytest.raises(ConfigurationError, match="one resource at a time"):
        identity.token_request(scopes=("api://a/.default", "api://b/.default"), now=0)


@pytest.mark.parametrize(
    ("environ", "match"),
    [
        ({"IDENTITY_ENDPOINT": "http://127.0.0.1/msi/token"}, "IDENTITY_HEADER is not"),
        ({"IDENTITY_HEADER": "h"}, "IDENTITY_ENDPOINT is not"),
        ({**APP_SERVICE, "IDENTITY_ENDPOINT": "localhost:8081"}, "http:// or https://"),
        ({"AZURE_POD_IDENTITY_AUTHORITY_HOST": "ftp://x"}, "AZURE_POD_IDENTITY_AUTHORITY_HOST"),
    ],
)
def test_an_environment_that_names_no_endpoint_is_refused(
    environ: dict[str, str], match: str
) -> None:
    with pytest.raises(ConfigurationError, match=match) as info:
        ManagedIdentity(environ=environ)
    assert "h3ader" not in str(info.value)


@pytest.mark.parametrize("header", ["s\u00e9cret-h3ader", "h3ader\nX-Other: 1", "h3\x00ader"])
def test_a_header_secret_no_http_header_can_carry_is_refused_unquoted(header: str) -> None:
    # httpx and h11 quote an illegal header value in their errors: it must never be sent.
    with pytest.raises(ConfigurationError, match="IDENTITY_HEADER holds characters") as info:
        ManagedIdentity(environ={**APP_SERVICE, "IDENTITY_HEADER": header})
    assert "h3" not in str(info.value)
    assert info.value.setting == "IDENTITY_HEADER"


@pytest.mark.parametrize("client_id", ["", "  ", 3])
def test_a_blank_client_id_is_refused(client_id: Any) -> None:
    with pytest.raises(ConfigurationError, match="client_id"):
        ManagedIdentity(client_id, environ=IMDS)


def test_the_header_secret_stays_out_of_repr_and_pickles() -> None:
    identity = ManagedIdentity(environ=APP_SERVICE)
    assert "h3ader" not in repr(identity)
    assert "h3ader" not in repr(identity.token_request(scopes=SCOPES, now=0))
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(identity)


CONTEXT = ErrorContext("system-assigned managed identity", APP_SERVICE["IDENTITY_ENDPOINT"])


@pytest.mark.parametrize(
    "body",
    [
        {"access_token": "t", "expires_on": "4600", "token_type": "Bearer"},
        {"access_token": "t", "expires_on": 4600},
        {"access_token": "t", "expires_on": "4600", "expires_in": "3600"},
    ],
)
def test_expires_on_is_read_as_a_string_or_a_number(body: dict[str, Any]) -> None:
    response = parse_token_response(
        200, json.dumps(body).encode(), scopes=SCOPES, now=1000.0, context=CONTEXT
    )
    assert response.token.expires_on == 4600
    assert response.expires_in == 3600


def test_an_expires_on_in_the_past_is_no_token() -> None:
    with pytest.raises(Exception, match="without a usable token"):
        parse_token_response(
            200,
            b'{"access_token": "t", "expires_on": "999"}',
            scopes=SCOPES,
            now=1000.0,
            context=CONTEXT,
        )


def test_app_service_refusals_say_what_the_host_said() -> None:
    body = b'{"statusCode": 401, "message": "Unauthorized: the header is wrong."}'
    with pytest.raises(TokenRequestError) as info:
        parse_token_response(401, body, scopes=SCOPES, now=0, context=CONTEXT)
    assert str(info.value) == (
        "the token endpoint http://127.0.0.1:8081/msi/token answered HTTP 401; server said: "
        "Unauthorized: the header is wrong."
    )
    assert info.value.status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {"statusCode": 500, "message": "Unable to load the identity.", "correlationId": "c-1"},
        {"message": "Unable to load the identity.", "correlationId": "c-1"},  # a bare 500
    ],
)
def test_app_service_refusals_keep_the_correlation_id(body: dict[str, Any]) -> None:
    with pytest.raises(TokenRequestError) as info:
        parse_token_response(500, json.dumps(body).encode(), scopes=SCOPES, now=0, context=CONTEXT)
    assert str(info.value).endswith("server said: Unable to load the identity.")
    assert info.value.correlation_id == "c-1"


def test_imds_refusals_come_as_oauth_errors() -> None:
    body = b'{"error": "invalid_request", "error_description": "Identity not found"}'
    with pytest.raises(TokenRequestError) as info:
        parse_token_response(400, body, scopes=SCOPES, now=0, context=CONTEXT)
    assert info.value.error == "invalid_request"
    assert str(info.value).endswith("server said: Identity not found")


@pytest.mark.parametrize(
    ("status", "retried"),
    [
        (404, True),
        (410, True),
        (429, True),
        (500, True),
        (503, True),
        (400, False),
        (401, False),
        (403, False),
    ],
)
def test_imds_guidance_decides_what_is_retried(status: int, retried: bool) -> None:
    assert ManagedIdentityRetry().retries(status) is retried


def test_backoff_is_exponential_and_longer_while_imds_updates() -> None:
    policy = ManagedIdentityRetry(max_retries=5, jitter=lambda: 1.0)
    assert [policy.delay(n, None, 503) for n in range(5)] == [0.8, 1.6, 3.2, 6.4, 12.8]
    assert [policy.delay(n, None, 410) for n in range(5)] == [10.0, 20.0, 40.0, 40.0, 40.0]
    # The default three retries span 35-70 s for a 410 (Azure: IMDS may update for ~70 s).
    low = ManagedIdentityRetry(jitter=lambda: 0.0)
    assert sum(low.delay(n, None, 410) for n in range(3)) == 35.0
    assert sum(policy.delay(n, None, 410) for n in range(3)) == 70.0
    assert policy.delay(0, 2.0, 410) == 2.0  # a Retry-After wins


@pytest.mark.parametrize(
    "endpoint",
    ["http://127.0.0.1:9999/metadata/identity/oauth2/token", APP_SERVICE["IDENTITY_ENDPOINT"]],
)
def test_a_refusal_names_no_tenant_the_endpoint_does_not_name(endpoint: str) -> None:
    # The path of IMDS's (/metadata/...) or App Service's endpoint is no tenant.
    body = {"error": "invalid_resource", "error_description": "AADSTS500011: not found"}
    context = ErrorContext("system-assigned managed identity", endpoint)
    with pytest.raises(TokenRequestError) as info:
        parse_token_response(
            400, json.dumps(body).encode(), scopes=SCOPES, now=0.0, context=context
        )
    assert "was not found in its tenant:" in str(info.value)
