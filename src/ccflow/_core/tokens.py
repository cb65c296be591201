"""Token requests and responses: build the POST, read the answer, explain the refusal.

No IO and no clock: ``now`` comes in as an argument. Everything the faces need::

    >>> scopes = normalize_scopes(("api://calc-api",), azure=True)
    >>> scopes
    ('api://calc-api/.default',)
    >>> fields = RequestFields(form=(("client_id", "abc"), ("client_secret", "s3cret")))
    >>> request = build_token_request("https://login.test/t/oauth2/v2.0/token", scopes, fields)
    >>> request.body.startswith(b"grant_type=client_credentials&client_id=abc")
    True
    >>> parse_token_response(200, b'{"access_token": "x", "expires_in": "3599"}',
    ...                      scopes=scopes, now=1000.0, context=ErrorContext("abc", "", scopes)
    ...                      ).token.expires_on
    4599
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

from ccflow._core.retry import parse_retry_after
from ccflow.errors import AuthorityUnreachableError, ConfigurationError, TokenRequestError

__all__ = [
    "AccessToken",
    "ErrorContext",
    "RequestFields",
    "TokenRequest",
    "TokenResponse",
    "build_token_request",
    "describe_token_error",
    "is_azure_token_endpoint",
    "normalize_scopes",
    "parse_token_response",
]

DEFAULT_SUFFIX = "/.default"
# Servers that omit expires_in (RFC 6749 only RECOMMENDS it) get an hour, as msal assumes.
DEFAULT_EXPIRES_IN = 3600
# Longer numeric strings are not a lifetime anyone means (and int() stops at 4300 digits).
_MAX_DIGITS = 18
# For str patterns \s is exactly what str.isspace() calls whitespace.
_WHITESPACE = re.compile(r"\s")
_GUID = re.compile(r"[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}")


@dataclass(frozen=True, slots=True)
class AccessToken:
    """An access token and what it is good for.

    ``token`` is the bearer string (kept out of ``repr``); ``expires_on`` is Unix seconds::

        token = client.get_token("api://calc-api/.default")
        headers = {"Authorization": f"{token.token_type} {token.token}"}
        assert token.expires_on > time.time()

    It also unpacks as azure-core's ``AccessToken`` (a ``(token, expires_on)`` pair), so a
    client serves wherever an Azure SDK takes a credential::

        token, expires_on = client.get_token("api://calc-api/.default")
    """

    token: str = field(repr=False)
    expires_on: int
    token_type: str = "Bearer"
    scopes: tuple[str, ...] = ()

    def __iter__(self) -> Iterator[str | int]:
        """``token, expires_on = access_token``, as azure-core's named tuple unpacks."""
        return iter((self.token, self.expires_on))


@dataclass(frozen=True, slots=True)
class RequestFields:
    """What a credential adds to a token request: form fields and headers.

    ``ClientSecret`` gives ``client_id`` + ``client_secret`` (post) or an ``Authorization:
    Basic`` header; assertion credentials give ``client_assertion_type`` + ``client_assertion``.
    Kept out of ``repr``: these are the secrets.
    """

    form: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """A ready-to-send request: the faces hand these to httpx unchanged. A POST to a token
    endpoint, or (a managed identity's, whose ``url`` carries the query) a GET."""

    url: str
    headers: tuple[tuple[str, str], ...] = field(repr=False)
    body: bytes = field(repr=False)
    method: str = "POST"


@dataclass(frozen=True, slots=True)
class TokenResponse:
    """A successful answer: the token plus the server's timing hints for the cache."""

    token: AccessToken
    expires_in: int
    refresh_in: int | None = None


@dataclass(frozen=True, slots=True)
class ErrorContext:
    """What error messages may mention: never a secret, only ids, URLs and scopes."""

    client_id: str
    token_endpoint: str
    scopes: tuple[str, ...] = ()
    completed_from: tuple[str, ...] = ()


def is_azure_token_endpoint(url: str) -> bool:
    """True for Azure-AD-shaped v2 endpoints (``.../{tenant}/oauth2/v2.0/token``) on any host,
    which is also the shape of ccflow's local authority."""
    return urlsplit(url).path.endswith("/oauth2/v2.0/token")


# A scope given as a collection (a common slip: get_token(['a', 'b'])).
_COLLECTIONS: Final = (list, tuple, set, frozenset)


def normalize_scopes(scopes: tuple[str, ...], *, azure: bool) -> tuple[str, ...]:
    """Check scopes and, for Azure AD, complete bare resources with ``/.default``.

    The client-credentials flow of Azure AD accepts only ``<resource>/.default``. A resource
    without a path (``api://calc-api``, an application id GUID, ``https://graph.microsoft.com``)
    or an ``https://`` App ID URI with one (``https://contoso.com/calc``) is completed:
    ``api://calc-api`` -> ``api://calc-api/.default``. An ``api://`` scope with a path
    (``api://calc-api/invokeRole``) usually names an app role or a delegated permission, which
    this flow cannot ask for, so it is refused unless it ends in ``/.default`` or its last
    segment is an application id (``api://contoso.com/<GUID>``). Other servers get the scopes
    unchanged. See docs/caller.md for why.
    """
    if not scopes:
        raise ConfigurationError(
            "get_token() needs at least one scope, e.g. 'api://calc-api/.default'",
            setting="scopes",
        )
    out: list[str] = []
    for scope in scopes:
        if isinstance(scope, _COLLECTIONS):
            raise ConfigurationError(
                f"scopes are separate arguments, got a {type(scope).__name__} {scope!r}: call "
                "get_token(*scopes) or get_token('api://a/.default')",
                setting="scopes",
            )
        if not isinstance(scope, str) or not scope.strip():
            raise ConfigurationError(
                f"a scope must be a non-empty string, got {scope!r}", setting="scopes"
            )
        if _WHITESPACE.search(scope):
            raise ConfigurationError(
                f"scope {scope!r} contains whitespace; pass each scope as its own argument",
                setting="scopes",
            )
        out.append(_with_default(scope) if azure else scope)
    return tuple(out)


def _with_default(scope: str) -> str:
    """An Azure AD scope as ``<resource>/.default``, or the error for a role or permission."""
    # rstrip first: "api://x/.default/" is api://x/.default, not .default/.default.
    scope = scope.rstrip("/")
    if scope.endswith(DEFAULT_SUFFIX):
        return scope
    parts = urlsplit(scope)
    last = parts.path.rpartition("/")[2]
    if parts.scheme.lower() == "api" and parts.path and not _GUID.fullmatch(last):
        resource = f"{parts.scheme}://{parts.netloc}"
        raise ConfigurationError(
            f"scope {scope!r} names an app role or permission ({last!r}), which client "
            f"credentials cannot ask for: they take <resource>/.default (e.g. "
            f"'{resource}/.default') and get every app role the client was granted; if "
            f"{scope!r} is itself the App ID URI, ask for '{scope}/.default'",
            setting="scopes",
        )
    return scope + DEFAULT_SUFFIX


def build_token_request(
    token_endpoint: str,
    scopes: tuple[str, ...],
    fields: RequestFields,
    *,
    claims: str | None = None,
) -> TokenRequest:
    """The client-credentials POST: ``grant_type``, the credential's fields, ``scope``, and a
    claims challenge (CAE) when one is being answered, as msal sends it."""
    form = [("grant_type", "client_credentials"), *fields.form, ("scope", " ".join(scopes))]
    if claims:
        form.append(("claims", claims))
    headers = (
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Accept", "application/json"),
        *fields.headers,
    )
    return TokenRequest(token_endpoint, headers, urlencode(form).encode("ascii"))


def _int_field(value: Any) -> int | None:
    """An integer from JSON, also when sent as a string ("3599"); ``None`` when unusable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        # json reads NaN and Infinity; int() of them raises instead of meaning "unusable".
        return int(value) if math.isfinite(value) else None
    if isinstance(value, str):
        text = value.strip()
        digits = text.removeprefix("-")
        # isdigit() alone admits "²" and other non-ASCII digits that int() refuses, and int()
        # refuses more than 4300 digits: neither may escape as a ValueError.
        if digits.isascii() and digits.isdigit() and len(digits) <= _MAX_DIGITS:
            return int(text)
    return None


def _expires_in(data: dict[str, Any], now: float) -> int | None:
    """The lifetime left: ``expires_in``, else ``expires_on`` (Unix seconds, a number or a
    string: managed identity endpoints), else an hour."""
    if "expires_in" in data:
        return _int_field(data["expires_in"])
    if "expires_on" in data:
        expires_on = _int_field(data["expires_on"])
        return None if expires_on is None else expires_on - int(now)
    return DEFAULT_EXPIRES_IN


def _json_object(body: bytes | None) -> dict[str, Any] | None:
    """``body`` as a JSON object, or ``None`` for anything else (never raises)."""
    if body is None:
        return None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: "[[[[..."
        return None
    return data if isinstance(data, dict) else None


def parse_token_response(
    status: int,
    body: bytes | None,
    *,
    scopes: tuple[str, ...],
    now: float,
    context: ErrorContext,
    retry_after: str | None = None,
) -> TokenResponse:
    """Read a token endpoint answer.

    Returns a :class:`TokenResponse` for a 2xx JSON body with ``access_token``; raises
    :class:`TokenRequestError` for an error answer (any body, even HTML or empty) and
    :class:`AuthorityUnreachableError` for a 2xx whose body is not a token response.
    ``body`` is ``None`` when the answer could not be read (see :class:`ccflow._core.flow.Reply`).
    """
    data = _json_object(body)
    if 200 <= status < 300 and data is not None and "error" not in data:
        access_token = data.get("access_token")
        expires_in = _expires_in(data, now)
        # A token that expires now or already has is no token: never hand one out.
        if isinstance(access_token, str) and access_token and expires_in and expires_in > 0:
            token_type = data.get("token_type")
            refresh_in = _int_field(data.get("refresh_in"))
            token = AccessToken(
                token=access_token,
                expires_on=int(now) + expires_in,
                token_type=token_type if isinstance(token_type, str) and token_type else "Bearer",
                scopes=scopes,
            )
            return TokenResponse(
                token, expires_in, refresh_in if refresh_in and refresh_in > 0 else None
            )
    if 200 <= status < 300 and (data is None or "error" not in data):
        raise AuthorityUnreachableError(
            f"the token endpoint {context.token_endpoint} answered HTTP {status} without a "
            "usable token (no JSON object with access_token and a positive expires_in); check "
            "that token_endpoint points at an OAuth 2.0 token endpoint",
            url=context.token_endpoint,
        )
    raise _token_error(status, body, data, now=now, context=context, retry_after=retry_after)


def _str_or_none(value: Any) -> str | None:
    """``value`` if it is a non-empty string, else ``None``."""
    return value if isinstance(value, str) and value else None


def _token_error(
    status: int,
    body: bytes | None,
    data: dict[str, Any] | None,
    *,
    now: float,
    context: ErrorContext,
    retry_after: str | None,
) -> TokenRequestError:
    """The ``TokenRequestError`` for a refusal, with the server's fields and our advice."""
    wait = parse_retry_after(retry_after, now)
    message = _app_service_message(data)
    if data is not None and message is not None:
        return TokenRequestError(
            f"the token endpoint {context.token_endpoint} answered HTTP {status}; server "
            f"said: {(message.strip().splitlines() or [message])[0]}",
            status_code=status,
            error_description=message,
            correlation_id=_str_or_none(data.get("correlationId")),
            retry_after=wait,
        )
    if data is None or not isinstance(data.get("error"), str):
        return TokenRequestError(
            _describe_unparsable(status, body, context),
            status_code=status,
            retry_after=wait,
        )
    codes_raw = data.get("error_codes")
    codes = (
        [c for c in codes_raw if isinstance(c, int) and not isinstance(c, bool)]
        if isinstance(codes_raw, list)
        else []
    )
    err = TokenRequestError(
        "",
        status_code=status,
        error=data["error"],
        error_description=_str_or_none(data.get("error_description")),
        error_codes=codes,
        trace_id=_str_or_none(data.get("trace_id")),
        correlation_id=_str_or_none(data.get("correlation_id")),
        timestamp=_str_or_none(data.get("timestamp")),
        retry_after=wait,
    )
    err.message = describe_token_error(err, context)
    err.args = (err.message,)
    return err


def _app_service_message(data: dict[str, Any] | None) -> str | None:
    """The ``message`` of an App Service (or Functions) managed identity refusal, whose JSON is
    ``{"statusCode": 401, "message": "...", "correlationId": "..."}`` rather than an OAuth
    error (a 500 may come without ``statusCode``)."""
    if data is None or "error" in data:
        return None
    if (
        not isinstance(data.get("statusCode"), int)
        and _str_or_none(data.get("correlationId")) is None
    ):
        return None
    return _str_or_none(data.get("message"))


def _is_json(body: bytes) -> bool:
    """Whether ``body`` parses as JSON of any kind."""
    try:
        json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False
    return True


def _describe_unparsable(status: int, body: bytes | None, context: ErrorContext) -> str:
    """What went wrong when the answer held no OAuth error: its status and what came instead."""
    stripped = b"" if body is None else body.strip()
    if body is None:
        what = (
            "a body ccflow could not read (an event hook of the http_client raised for the "
            "answer before it was read)"
        )
    elif not stripped:
        what = "an empty body"
    elif stripped[:1] == b"<":
        what = "an HTML page instead of a JSON error (a proxy, gateway or wrong URL answering?)"
    elif _is_json(stripped):
        what = (
            "a JSON body that is not an OAuth error (no 'error' string; a proxy, gateway or "
            "wrong URL answering?)"
        )
    else:
        what = "a body that is not JSON"
    if status >= 500 or status == 429:
        hint = "; the server is failing or overloaded, try again later"
    elif status == 401:
        hint = (
            "; the server refused the client's credentials: check the client id, the secret "
            "or certificate, and the auth_method it expects (client_secret_post or "
            "client_secret_basic)"
        )
    else:
        hint = "; check token_endpoint / authority_host"
    return f"the token endpoint {context.token_endpoint} answered HTTP {status} with {what}{hint}"


def _scope_text(context: ErrorContext) -> str:
    """The requested scopes for a message, with what they were completed from."""
    text = " ".join(context.scopes) or "(none)"
    if context.completed_from:
        text += f" (completed from {' '.join(context.completed_from)})"
    return text


def _tenant_of(context: ErrorContext) -> str:
    """``tenant <the tenant segment of an Azure AD token endpoint>``; ``its tenant`` for an
    endpoint that names none (a managed identity's: ``/metadata/...`` is no tenant)."""
    path = urlsplit(context.token_endpoint).path.strip("/").split("/")
    if is_azure_token_endpoint(context.token_endpoint) and path[0]:
        return f"tenant {path[0]}"
    return "its tenant"


def describe_token_error(err: TokenRequestError, context: ErrorContext) -> str:
    """An actionable message for a token endpoint refusal (AADSTS codes, ``invalid_client``).

    The server's description is appended (it carries Azure AD's trace details but never the
    secret: Azure AD and RFC 6749 servers do not echo credentials).
    """
    ids = [f"HTTP {err.status_code}"]
    if err.trace_id:
        ids.append(f"trace_id={err.trace_id}")
    if err.correlation_id:
        ids.append(f"correlation_id={err.correlation_id}")
    message = f"{_advice(err, context)} [{', '.join(ids)}]"
    description = (err.error_description or "").strip()
    if description:
        message += f"; server said: {description.splitlines()[0]}"
    return message


def _advice(err: TokenRequestError, context: ErrorContext) -> str:
    """What to do about a refusal, by AADSTS code, then by OAuth error."""
    code = err.aadsts_code
    cid = context.client_id
    if code == 7000215:
        advice = (
            f"the client secret for client {cid} is wrong or expired. Create a new secret "
            "(App registrations > Certificates & secrets) and use its Value, not its Secret ID"
        )
    elif code == 700016:
        advice = (
            f"application {cid} was not found in {_tenant_of(context)}. Check the client "
            "id (AZURE_CLIENT_ID) and tenant (AZURE_TENANT_ID): the app must be registered or "
            "consented in that tenant"
        )
    elif code == 500011:
        advice = (
            f"the resource in scope {_scope_text(context)} was not found in "
            f"{_tenant_of(context)}: the App ID URI is wrong or the API has no service "
            "principal there. Use the API's Application ID URI (Expose an API) + '/.default'"
        )
    elif code in (1002012, 70011):
        advice = (
            f"invalid scope {_scope_text(context)}: the client-credentials flow needs "
            "'<app id uri>/.default' (for example api://calc-api/.default), one resource "
            "per request"
        )
    elif code == 90002:
        advice = (
            f"{_tenant_of(context)} was not found. Check the tenant id (AZURE_TENANT_ID: "
            "a GUID or a domain such as contoso.onmicrosoft.com) and, for national clouds, "
            "the authority host (AZURE_AUTHORITY_HOST)"
        )
    elif err.error == "invalid_client":
        advice = (
            f"the server rejected the credentials of client {cid} (invalid_client). Check the "
            "client id and secret or certificate, and the auth_method the server expects "
            "(client_secret_post or client_secret_basic)"
        )
    elif err.error == "invalid_scope":
        advice = f"the server rejected scope {_scope_text(context)} (invalid_scope)"
    elif err.error == "unauthorized_client":
        advice = f"client {cid} may not use the client-credentials grant here (unauthorized_client)"
    else:
        advice = f"the token request for client {cid} was refused ({err.error})"
    return advice
