"""Token request building, response parsing and AADSTS messages: plain data, no HTTP."""

from __future__ import annotations

import doctest
import json
import pickle
from typing import Any
from urllib.parse import parse_qsl

import pytest

import ccflow._core.tokens as tokens_module
from ccflow._core.tokens import (
    AccessToken,
    ErrorContext,
    RequestFields,
    build_token_request,
    is_azure_token_endpoint,
    normalize_scopes,
    parse_token_response,
)
from ccflow.errors import AuthorityUnreachableError, ConfigurationError, TokenRequestError

ENDPOINT = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
SCOPES = ("api://calc-api/.default",)
CONTEXT = ErrorContext("11111111-2222-3333-4444-555555555555", ENDPOINT, SCOPES)


def parse(status: int, body: bytes | dict[str, Any], **kw: Any) -> Any:
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    return parse_token_response(status, raw, scopes=SCOPES, now=1000.0, context=CONTEXT, **kw)


def test_docstring_examples_hold() -> None:
    assert doctest.testmod(tokens_module).failed == 0


@pytest.mark.parametrize(
    ("scopes", "azure", "expected"),
    [
        (("api://calc-api",), True, ("api://calc-api/.default",)),
        (("api://calc-api/",), True, ("api://calc-api/.default",)),
        (("api://calc-api/.default",), True, ("api://calc-api/.default",)),
        # was completed to api://calc-api/.default/.default
        (("api://calc-api/.default/",), True, ("api://calc-api/.default",)),
        (("api://contoso.com/calc/.default",), True, ("api://contoso.com/calc/.default",)),
        (("api://A/invokeRole/.default",), True, ("api://A/invokeRole/.default",)),
        (("https://contoso.com/calc",), True, ("https://contoso.com/calc/.default",)),
        (("https://graph.microsoft.com/",), True, ("https://graph.microsoft.com/.default",)),
        (
            ("api://contoso.com/00000003-0000-0000-c000-000000000000",),
            True,
            ("api://contoso.com/00000003-0000-0000-c000-000000000000/.default",),
        ),
        (("api://calc-api/invokeRole",), False, ("api://calc-api/invokeRole",)),
        (("https://graph.microsoft.com",), True, ("https://graph.microsoft.com/.default",)),
        (
            ("00000003-0000-0000-c000-000000000000",),
            True,
            ("00000003-0000-0000-c000-000000000000/.default",),
        ),
        (("api://calc-api",), False, ("api://calc-api",)),
        (("read", "write"), False, ("read", "write")),
    ],
)
def test_normalize_scopes(scopes: tuple[str, ...], azure: bool, expected: tuple[str, ...]) -> None:
    assert normalize_scopes(scopes, azure=azure) == expected


@pytest.mark.parametrize(
    ("scope", "resource"),
    [
        ("api://A/invokeRole", "api://A"),
        ("api://calc-api/access_as_user/", "api://calc-api"),
        ("API://contoso.com/calc", "api://contoso.com"),
        (
            "api://c0ffee00-cc10-4000-8000-0000000000a1/invokeRole",
            "api://c0ffee00-cc10-4000-8000-0000000000a1",
        ),
    ],
)
def test_a_scope_naming_a_role_or_permission_is_refused_not_rewritten(
    scope: str, resource: str
) -> None:
    # api://A/invokeRole was sent as api://A/invokeRole/.default, and Azure AD answered that
    # no such resource exists.
    with pytest.raises(ConfigurationError) as info:
        normalize_scopes((scope,), azure=True)
    message = str(info.value)
    assert "client credentials" in message
    assert f"'{resource}/.default'" in message
    assert "app role or permission" in message
    assert info.value.setting == "scopes"


@pytest.mark.parametrize("scopes", [(), ("",), ("a b",), ("  ",)])
def test_bad_scopes_are_refused(scopes: tuple[str, ...]) -> None:
    with pytest.raises(ConfigurationError):
        normalize_scopes(scopes, azure=True)


@pytest.mark.parametrize(
    ("url", "azure"),
    [
        (ENDPOINT, True),
        ("http://127.0.0.1:8123/tenant/oauth2/v2.0/token", True),
        ("https://auth.example.com/oauth/token", False),
        ("https://keycloak.example/realms/x/protocol/openid-connect/token", False),
    ],
)
def test_azure_endpoint_shape(url: str, azure: bool) -> None:
    assert is_azure_token_endpoint(url) is azure


def test_request_body_is_the_client_credentials_form() -> None:
    fields = RequestFields(form=(("client_id", "cid"), ("client_secret", "a+b&c=d%")))
    request = build_token_request(ENDPOINT, ("api://x/.default",), fields)
    assert request.url == ENDPOINT
    assert parse_qsl(request.body.decode()) == [
        ("grant_type", "client_credentials"),
        ("client_id", "cid"),
        ("client_secret", "a+b&c=d%"),
        ("scope", "api://x/.default"),
    ]
    assert ("Content-Type", "application/x-www-form-urlencoded") in request.headers


def test_request_carries_credential_headers() -> None:
    fields = RequestFields(headers=(("Authorization", "Basic abc"),))
    request = build_token_request(ENDPOINT, SCOPES, fields)
    assert ("Authorization", "Basic abc") in request.headers


def test_request_repr_hides_body_and_headers() -> None:
    fields = RequestFields(form=(("client_secret", "TOPSECRET"),), headers=(("X", "TOPSECRET"),))
    request = build_token_request(ENDPOINT, SCOPES, fields)
    assert "TOPSECRET" not in repr(request)
    assert "TOPSECRET" not in repr(fields)


@pytest.mark.parametrize("expires_in", [3599, "3599", 3599.0])
def test_success_accepts_expires_in_as_number_or_string(expires_in: object) -> None:
    result = parse(200, {"access_token": "tok", "token_type": "Bearer", "expires_in": expires_in})
    assert result.token == AccessToken("tok", 4599, "Bearer", SCOPES)
    assert result.expires_in == 3599


def test_success_reads_refresh_in() -> None:
    result = parse(200, {"access_token": "t", "expires_in": 86399, "refresh_in": "43199"})
    assert result.refresh_in == 43199


def test_success_without_expires_in_assumes_an_hour() -> None:
    assert parse(200, {"access_token": "t"}).expires_in == 3600


def test_access_token_repr_hides_the_token() -> None:
    token = AccessToken("eyJ.secret.sig", 1, "Bearer", SCOPES)
    assert "eyJ.secret.sig" not in repr(token)
    assert "eyJ.secret.sig" not in str(token)


def test_access_token_is_frozen() -> None:
    token = AccessToken("t", 1)
    with pytest.raises(AttributeError):
        token.token = "u"  # type: ignore[misc]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>ok</html>",
        b"[]",
        b'{"token_type": "Bearer"}',
        b'{"access_token": ""}',
        b'{"access_token": "t", "expires_in": 0}',
        b'{"access_token": "t", "expires_in": "-5"}',
        b'{"access_token": "t", "expires_in": -3599}',
        # Strings that pass str.isdigit() but int() refuses: no ValueError may escape.
        '{"access_token": "t", "expires_in": "\u00b2"}'.encode(),
        b'{"access_token": "t", "expires_in": "--5"}',
        b'{"access_token": "t", "expires_in": "' + b"9" * 5000 + b'"}',
    ],
)
def test_unusable_success_body_is_unreachable_error(body: bytes) -> None:
    with pytest.raises(AuthorityUnreachableError, match="HTTP 200"):
        parse(200, body)


def aad_error(code: int, error: str = "invalid_request", status: int = 400) -> dict[str, Any]:
    return {
        "error": error,
        "error_description": f"AADSTS{code}: something. Trace ID: abc Correlation ID: def",
        "error_codes": [code],
        "timestamp": "2026-01-01 00:00:00Z",
        "trace_id": "trace-1",
        "correlation_id": "corr-1",
    }


@pytest.mark.parametrize(
    ("code", "error", "expected"),
    [
        (7000215, "invalid_client", "client secret .* wrong or expired"),
        (700016, "unauthorized_client", "not found in tenant contoso.onmicrosoft.com"),
        (500011, "invalid_resource", "App ID URI is wrong"),
        (1002012, "invalid_scope", r"needs '<app id uri>/\.default'"),
        (70011, "invalid_scope", r"needs '<app id uri>/\.default'"),
        (90002, "invalid_request", "tenant contoso.onmicrosoft.com was not found"),
    ],
)
def test_aadsts_errors_say_what_to_do(code: int, error: str, expected: str) -> None:
    with pytest.raises(TokenRequestError, match=expected) as info:
        parse(400, aad_error(code, error))
    err = info.value
    assert err.status_code == 400
    assert err.error == error
    assert err.error_codes == (code,)
    assert err.aadsts_code == code
    assert err.trace_id == "trace-1"
    assert err.correlation_id == "corr-1"
    assert err.timestamp == "2026-01-01 00:00:00Z"
    assert "trace_id=trace-1" in str(err)


def test_invalid_client_from_any_server() -> None:
    with pytest.raises(TokenRequestError, match="rejected the credentials") as info:
        parse(401, {"error": "invalid_client", "error_description": "bad client"})
    assert info.value.error_description == "bad client"
    assert info.value.aadsts_code is None


def test_completed_scope_is_named_in_scope_errors() -> None:
    context = ErrorContext("cid", ENDPOINT, ("api://x/.default",), ("api://x",))
    with pytest.raises(TokenRequestError, match=r"completed from api://x\)"):
        parse_token_response(
            400, json.dumps(aad_error(500011)).encode(), scopes=SCOPES, now=0, context=context
        )


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (502, b"<html><body>Bad gateway</body></html>", "HTTP 502 with an HTML page"),
        (400, b"", "HTTP 400 with an empty body"),
        # A 401 without an OAuth body (Basic challenge): the credentials, not the URL.
        (401, b"", "HTTP 401 with an empty body; the server refused the client's credentials"),
        (500, b"oops", "HTTP 500 with a body that is not JSON"),
        # JSON, but not an OAuth error (a gateway's): it used to be called "not JSON".
        (404, b'{"message": "not found"}', "HTTP 404 with a JSON body that is not an OAuth"),
        (400, b'{"error": 42}', "HTTP 400 with a JSON body that is not an OAuth"),
        (403, b"[1, 2]", "HTTP 403 with a JSON body that is not an OAuth"),
    ],
)
def test_unparsable_error_bodies_still_explain(status: int, body: bytes, expected: str) -> None:
    with pytest.raises(TokenRequestError, match=expected) as info:
        parse(status, body)
    assert info.value.status_code == status


def test_error_keeps_retry_after() -> None:
    with pytest.raises(TokenRequestError) as info:
        parse(429, {"error": "temporarily_unavailable"}, retry_after="7")
    assert info.value.retry_after == 7.0


def test_token_error_pickles_with_its_fields() -> None:
    with pytest.raises(TokenRequestError) as info:
        parse(400, aad_error(7000215, "invalid_client"))
    copy = pickle.loads(pickle.dumps(info.value))
    assert str(copy) == str(info.value)
    assert copy.error_codes == (7000215,)


@pytest.mark.parametrize("scopes", [(["api://a", "api://b"],), (("api://a",),), ({"api://a"},)])
def test_a_collection_passed_as_one_scope_says_to_unpack_it(scopes: tuple[str, ...]) -> None:
    with pytest.raises(ConfigurationError, match=r"get_token\(\*scopes\)") as info:
        normalize_scopes(scopes, azure=True)
    assert info.value.setting == "scopes"


@pytest.mark.parametrize(
    ("status", "error"), [(200, AuthorityUnreachableError), (400, TokenRequestError)]
)
def test_deeply_nested_json_is_an_unusable_answer_not_a_recursion_error(
    status: int, error: type[Exception]
) -> None:
    with pytest.raises(error, match=f"HTTP {status}"):
        parse(status, b"[" * 100_000)
