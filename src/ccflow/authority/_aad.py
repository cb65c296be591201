"""Azure AD's answers: the error JSON shape, and the request parsing that leads to them."""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import uuid
from collections.abc import Mapping
from urllib.parse import parse_qsl, unquote_plus

import httpx

__all__ = ["AadError", "error_response", "json_response", "parse_basic", "parse_form"]

_NO_STORE = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"}


class AadError(Exception):
    """An error the token endpoint answers in Azure AD's shape."""

    def __init__(self, status: int, error: str, code: int, message: str) -> None:
        super().__init__(f"AADSTS{code}: {message}")
        self.status = status
        self.error = error
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"AADSTS{self.code}: {self.message}"


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
    trace = str(uuid.uuid4())
    corr = correlation_id(request)
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
    extra = {**_NO_STORE, "x-ms-request-id": trace, "client-request-id": corr, **(headers or {})}
    return json_response(err.status, payload, headers=extra)


def success_headers(request: httpx.Request) -> dict[str, str]:
    """Headers of a token answer: never cached, request ids echoed."""
    return {
        **_NO_STORE,
        "x-ms-request-id": str(uuid.uuid4()),
        "client-request-id": (correlation_id(request)),
    }


def _malformed(detail: str) -> AadError:
    return AadError(400, "invalid_request", 9002313, f"Invalid request. {detail}")


def missing(name: str, extra: str = "") -> AadError:
    """AADSTS900144: a required body parameter is absent."""
    message = f"The request body must contain the following parameter: '{name}'."
    return AadError(400, "invalid_request", 900144, message + (f" {extra}" if extra else ""))


def parse_form(request: httpx.Request) -> dict[str, str]:
    """The form body as a dict; JSON bodies, bad encodings and duplicated fields are refused."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    body = request.content
    if content_type == "application/json" or body.lstrip()[:1] in (b"{", b"["):
        raise missing(
            "grant_type",
            "The body must be form-encoded (application/x-www-form-urlencoded); "
            "a JSON body is not accepted.",
        )
    if content_type not in ("", "application/x-www-form-urlencoded"):
        raise _malformed(
            f"Content-Type must be application/x-www-form-urlencoded, not {content_type!r}."
        )
    try:
        text = body.decode("ascii")
        pairs = parse_qsl(text, keep_blank_values=True, errors="strict", max_num_fields=64)
    except UnicodeDecodeError:
        raise _malformed("The body is not valid form-urlencoded UTF-8.") from None
    except ValueError:
        raise _malformed("The body has too many fields.") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise AadError(
                400,
                "invalid_request",
                9000411,
                f"The request is not properly formatted. The parameter '{name}' is duplicated.",
            )
        form[name] = value
    return form


def parse_basic(request: httpx.Request) -> tuple[str, str] | None:
    """Client id and secret from HTTP Basic, each form-urlencoded first (RFC 6749 2.3.1)."""
    values = request.headers.get_list("authorization")
    if not values:
        return None
    if len(values) > 1:
        raise _malformed("More than one Authorization header.")
    scheme, _, credentials = values[0].strip().partition(" ")
    if scheme.lower() != "basic":
        raise _malformed(
            "The token endpoint accepts only HTTP Basic client authentication in the "
            "Authorization header."
        )
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise _malformed("The Authorization header is not valid Basic credentials.") from None
    client_id, sep, secret = decoded.partition(":")
    if not sep or not client_id:
        raise _malformed("The Authorization header is not valid Basic credentials.")
    return unquote_plus(client_id), unquote_plus(secret)
