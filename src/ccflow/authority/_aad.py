"""Azure AD's answers: every AADSTS error the authority gives, and the JSON shape they come in.

Each row of the table is one answer: its AADSTS code, HTTP status, OAuth ``error`` and message
template (``str.format`` fields). Calling a row with those fields gives the :class:`AadError`
to raise::

    raise UNKNOWN_CLIENT(client_id=client_id, tenant=tenant)

A code may have several rows (AADSTS50027 says what is malformed), and one row per wording, so
that every text the authority sends is in this module.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

__all__ = [
    "AadCode",
    "AadError",
    "answer_headers",
    "error_response",
    "json_response",
]

_NO_STORE = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"}


class AadError(Exception):
    """An error the token endpoint answers in Azure AD's shape."""

    def __init__(self, status: int, error: str, code: int, message: str) -> None:
        super().__init__(f"AADSTS{code}: {message}")
        self.status = status
        self.error = error
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class AadCode:
    """One row of the table: AADSTS code, HTTP status, OAuth ``error``, message template."""

    code: int
    status: int
    error: str
    template: str

    def __call__(self, **fields: object) -> AadError:
        """The error with the template filled in from ``fields``."""
        return AadError(self.status, self.error, self.code, self.template.format(**fields))

    def with_status(self, status: int) -> AadCode:
        """This row answered with another HTTP status (a fault's 429 or 503)."""
        return dataclasses.replace(self, status=status)


def _row(answer: tuple[int, int, str], template: str) -> AadCode:
    """A table row: ``(code, status, error)`` and the message template."""
    return AadCode(*answer, template)


# -- the request itself -------------------------------------------------------------------
BAD_CONTENT_TYPE = _row(
    (9002313, 400, "invalid_request"),
    "Invalid request. Content-Type must be application/x-www-form-urlencoded, not "
    "{content_type!r}.",
)
BODY_NOT_UTF8 = _row(
    (9002313, 400, "invalid_request"),
    "Invalid request. The body is not valid form-urlencoded UTF-8.",
)
TOO_MANY_FIELDS = _row(
    (9002313, 400, "invalid_request"),
    "Invalid request. The body has too many fields.",
)
DUPLICATED_PARAMETER = _row(
    (9000411, 400, "invalid_request"),
    "The request is not properly formatted. The parameter '{name}' is duplicated.",
)
MISSING_PARAMETER = _row(
    (900144, 400, "invalid_request"),
    "The request body must contain the following parameter: '{name}'.",
)
JSON_BODY = _row(
    (900144, 400, "invalid_request"),
    "The request body must contain the following parameter: 'grant_type'. The body must be "
    "form-encoded (application/x-www-form-urlencoded); a JSON body is not accepted.",
)
TWO_AUTHORIZATION_HEADERS = _row(
    (9002313, 400, "invalid_request"),
    "Invalid request. More than one Authorization header.",
)
NOT_BASIC = _row(
    (9002313, 400, "invalid_request"),
    "Invalid request. The token endpoint accepts only HTTP Basic client authentication in the "
    "Authorization header.",
)
BAD_BASIC = _row(
    (9002313, 400, "invalid_request"),
    "Invalid request. The Authorization header is not valid Basic credentials.",
)
POST_ONLY = _row(
    (900561, 405, "invalid_request"),
    "The endpoint only accepts POST requests. Received a {method} request.",
)
GET_ONLY = _row(
    (900561, 405, "invalid_request"),
    "The endpoint only accepts GET requests. Received a {method} request.",
)

# -- tenants --------------------------------------------------------------------------------
NO_TENANT = _row(
    (50059, 400, "invalid_request"),
    "No tenant-identifying information found in either the request or implied by any "
    "provided credentials. The client credentials flow needs a tenant id in the token "
    "endpoint, not '{tenant}'.",
)
_TENANT_NOT_FOUND = (
    "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are "
    "signing into the correct cloud."
)
# As Azure AD: the token endpoint says invalid_request, the discovery and keys endpoints
# invalid_tenant.
TENANT_NOT_FOUND = _row(
    (90002, 400, "invalid_request"),
    _TENANT_NOT_FOUND,
)
TENANT_NOT_FOUND_METADATA = _row(
    (90002, 400, "invalid_tenant"),
    _TENANT_NOT_FOUND,
)

# -- the grant, the client, the resource ----------------------------------------------------
UNSUPPORTED_GRANT = _row(
    (70003, 400, "unsupported_grant_type"),
    "The app requested an unsupported grant type '{grant_type}'. This authority supports only "
    "'client_credentials'.",
)
CLIENT_ID_MISMATCH = _row(
    (9002313, 400, "invalid_request"),
    "Invalid request. The client_id in the body differs from the one in the Authorization header.",
)
UNKNOWN_CLIENT = _row(
    (700016, 400, "unauthorized_client"),
    "Application with identifier '{client_id}' was not found in the directory '{tenant}'. "
    "This can happen if the application has not been installed by the administrator of the "
    "tenant or consented to by any user in the tenant. You may have sent your authentication "
    "request to the wrong tenant.",
)
TWO_AUTH_METHODS = _row(
    (9002313, 400, "invalid_request"),
    "Invalid request. Use one client authentication method, not {methods}.",
)
NO_CREDENTIAL = _row(
    (7000218, 401, "invalid_client"),
    "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
)
BAD_ASSERTION_TYPE = _row(
    (9002313, 400, "invalid_request"),
    "Invalid request. client_assertion_type must be '{expected}'.",
)
WRONG_SECRET = _row(
    (7000215, 401, "invalid_client"),
    "Invalid client secret provided. Ensure the secret being sent in the request is the "
    "client secret value, not the client secret ID, for a secret added to app '{client_id}'.",
)
SEVERAL_SCOPES = _row(
    (70011, 400, "invalid_scope"),
    "The provided request must include a 'scope' input parameter. The provided value for the "
    "input parameter 'scope' is not valid. The scope {scope} is not valid: the client "
    "credentials flow takes one scope, '<App ID URI>/.default'.",
)
SCOPE_NOT_DEFAULT = _row(
    (1002012, 400, "invalid_scope"),
    "The provided value for scope {scope} is not valid. Client credential flows must have a "
    "scope value with /.default suffixed to the resource identifier (application ID URI).",
)
UNKNOWN_RESOURCE = _row(
    (500011, 400, "invalid_resource"),
    "The resource principal named {resource} was not found in the tenant named {tenant}. "
    "This can happen if the application has not been installed by the administrator of the "
    "tenant or consented to by any user in the tenant. You might have sent your "
    "authentication request to the wrong tenant.",
)
TRANSIENT = _row(
    (90033, 503, "temporarily_unavailable"),
    "A transient error has occurred. Please try again.",
)

# -- client assertions (private_key_jwt) ----------------------------------------------------
ASSERTION_MALFORMED = _row(
    (50027, 401, "invalid_client"),
    "JWT token is invalid or malformed.",
)
X5C_NOT_A_LIST = _row(
    (50027, 401, "invalid_client"),
    "JWT token is invalid or malformed: the 'x5c' header must be a non-empty list of "
    "base64-encoded certificates.",
)
X5C_NOT_BASE64 = _row(
    (50027, 401, "invalid_client"),
    "JWT token is invalid or malformed: the first 'x5c' certificate is not valid base64.",
)
EXP_MISSING = _row(
    (50027, 401, "invalid_client"),
    "JWT token is invalid or malformed: 'exp' is missing.",
)
JTI_MISSING = _row(
    (50027, 401, "invalid_client"),
    "JWT token is invalid or malformed: 'jti' is missing.",
)
UNSUPPORTED_ALGORITHM = _row(
    (5002738, 401, "invalid_client"),
    "Invalid JWT token. '{alg}' is not a supported signature algorithm.",
)
CERTIFICATE_NOT_REGISTERED = _row(
    (700027, 401, "invalid_client"),
    "The certificate with identifier used to sign the client assertion is not registered on "
    "application. [Reason - The key was not found., Thumbprint of key used by client: "
    "'{thumbprint}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph "
    "to see configured keys for app Id '{client_id}'.]",
)
X5C_NOT_THE_CERTIFICATE = _row(
    (700027, 401, "invalid_client"),
    "The certificate in the client assertion's 'x5c' header is not the certificate its "
    "thumbprint names. [Reason - The first 'x5c' certificate (SHA-256 thumbprint '{sent}') "
    "differs from the registered certificate with thumbprint '{thumbprint}' on app Id "
    "'{client_id}'; send the registered certificate first in 'x5c', or no 'x5c' at all.]",
)
BAD_SIGNATURE = _row(
    (700027, 401, "invalid_client"),
    "Client assertion contains an invalid signature.",
)
WRONG_AUDIENCE = _row(
    (700023, 401, "invalid_client"),
    "Client assertion audience claim does not match Realm issuer. The 'aud' claim must be "
    "'{token_endpoint}'.",
)
WRONG_ISSUER = _row(
    (700021, 401, "invalid_client"),
    "Client assertion application identifier doesn't match 'client_id' parameter: 'iss' and "
    "'sub' must both be the client id.",
)
OUT_OF_TIME = _row(
    (700024, 401, "invalid_client"),
    "Client assertion is not within its valid time range. Current time: {now}, expiry time "
    "of assertion {exp}.",
)
TOO_FAR_AHEAD = _row(
    (700024, 401, "invalid_client"),
    "Client assertion is not within its valid time range: it expires more than {limit} "
    "seconds from now ({exp}, current time {now}).",
)
REPLAYED = _row(
    (700229, 401, "invalid_client"),
    "The client assertion has already been used: its 'jti' was seen before in another "
    "assertion (or, with one-time assertions, in this one). Send a new assertion with a "
    "fresh 'jti'.",
)


def json_response(
    status: int, payload: object, *, headers: Mapping[str, str] | None = None
) -> httpx.Response:
    """A JSON answer with Azure AD's content type."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    all_headers = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
    return httpx.Response(status, content=body, headers=all_headers)


def correlation_id(request: httpx.Request) -> str:
    """The caller's ``client-request-id`` when it is a GUID (msal sends one), else a new one."""
    value = request.headers.get("client-request-id", "")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return str(uuid.uuid4())


def error_response(
    err: AadError,
    *,
    host: str,
    now: float,
    request: httpx.Request,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """``err`` as Azure AD answers it: ``error``, ``error_description`` (``AADSTS<code>: ...``
    with trace and correlation ids and timestamp), ``error_codes``, ``timestamp``,
    ``trace_id``, ``correlation_id``, ``error_uri``."""
    ids = answer_headers(request)
    trace, corr = ids["x-ms-request-id"], ids["client-request-id"]
    stamp = datetime.datetime.fromtimestamp(now, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    payload = {
        "error": err.error,
        "error_description": (
            f"AADSTS{err.code}: {err.message}\r\nTrace ID: {trace}\r\n"
            f"Correlation ID: {corr}\r\nTimestamp: {stamp}"
        ),
        "error_codes": [err.code],
        "timestamp": stamp,
        "trace_id": trace,
        "correlation_id": corr,
        "error_uri": f"{host}/error?code={err.code}",
    }
    return json_response(err.status, payload, headers={**ids, **(headers or {})})


def answer_headers(request: httpx.Request) -> dict[str, str]:
    """Headers of a token answer, an error's too: never cached, a new request id, and the
    correlation id echoed."""
    return {
        **_NO_STORE,
        "x-ms-request-id": str(uuid.uuid4()),
        "client-request-id": correlation_id(request),
    }
