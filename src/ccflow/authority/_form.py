"""Reading a token request: the form body and HTTP Basic client authentication, strictly."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import parse_qsl, unquote_plus

import httpx

from ccflow.authority import _aad

__all__ = ["parse_basic", "parse_form"]

_MAX_FIELDS = 64


def parse_form(request: httpx.Request) -> dict[str, str]:
    """The form body as a dict; JSON bodies, bad encodings and duplicated fields are refused."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    body = request.content
    if content_type == "application/json" or body.lstrip()[:1] in (b"{", b"["):
        raise _aad.JSON_BODY()
    if content_type not in ("", "application/x-www-form-urlencoded"):
        raise _aad.BAD_CONTENT_TYPE(content_type=content_type)
    try:
        text = body.decode("ascii")
        pairs = parse_qsl(text, keep_blank_values=True, errors="strict", max_num_fields=_MAX_FIELDS)
    except UnicodeDecodeError:
        raise _aad.BODY_NOT_UTF8() from None
    except ValueError:
        raise _aad.TOO_MANY_FIELDS() from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise _aad.DUPLICATED_PARAMETER(name=name)
        form[name] = value
    return form


def parse_basic(request: httpx.Request) -> tuple[str, str] | None:
    """Client id and secret from HTTP Basic, each form-urlencoded first (RFC 6749 2.3.1)."""
    values = request.headers.get_list("authorization")
    if not values:
        return None
    if len(values) > 1:
        raise _aad.TWO_AUTHORIZATION_HEADERS()
    scheme, _, credentials = values[0].strip().partition(" ")
    if scheme.lower() != "basic":
        raise _aad.NOT_BASIC()
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise _aad.BAD_BASIC() from None
    client_id, sep, secret = decoded.partition(":")
    if not sep or not client_id:
        raise _aad.BAD_BASIC()
    return unquote_plus(client_id), unquote_plus(secret)
