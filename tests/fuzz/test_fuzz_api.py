"""Property-based tests of the API side: whatever arrives, the documented answer, never a 500.

Two targets:

- the ``Authorization`` header, sent through ``RequireRole`` in front of the calc API over raw
  ASGI (no HTTP client in between, so any header bytes reach the parser): the status and the
  RFC 6750 error follow a small model of the documented rules, the challenge and the JSON body
  agree, and the "failed unexpectedly" fallback of ``rejection_for`` never fires;
- tokens through ``TokenValidator.validate``: random strings, signed tokens with random header
  JSON, signed tokens with random claim values, signed payloads that are not JSON. Only
  ``InvalidTokenError`` / ``InsufficientScopeError`` ever come out, and whatever passes really
  satisfies the documented claim rules.

The authority, the validator and the calc API share one fixed clock; the keys are fetched once
and stay warm, so a 503 is never the right answer here.
"""

# An exception is one of several allowed outcomes here, so pytest.raises does not fit:
# ruff: noqa: PT017

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from examples.calc_api.app import create_app
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support import START, json_values

from ccflow import InsufficientScopeError, InvalidTokenError, TokenValidator
from ccflow.authority import Authority

NOW = int(START)
LEEWAY = 60

AUTHORITY = Authority(clock=lambda: NOW)
API = AUTHORITY.api("calc-api")
CALLERS = (AUTHORITY.client("calc-client").client_id, AUTHORITY.client("reader-client").client_id)
AUDIENCES = (API.client_id, API.identifier_uri)
GOOD = AUTHORITY.mint(now=NOW)
READER = AUTHORITY.mint("reader-client", now=NOW)

FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(header: Any, payload: bytes) -> str:
    """RS256 over any header value and any payload bytes, with the authority's current key."""
    key = AUTHORITY.key(AUTHORITY.signing_kid).private_key
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(payload)}".encode()
    signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input.decode()}.{b64(signature)}"


class Bed:
    """One event loop, one warm validator, the calc API as a raw ASGI callable."""

    def __init__(self) -> None:
        self.runner = asyncio.Runner()
        self.validator = TokenValidator(
            tenant_id=AUTHORITY.tenant_id,
            authority_host=AUTHORITY.host,
            audience=list(AUDIENCES),
            allowed_clients=list(CALLERS),
            http_client=httpx.AsyncClient(transport=AUTHORITY.transport()),
            clock=lambda: NOW,
            leeway=LEEWAY,
        )
        self.app = create_app(self.validator)
        assert self.run(self.validator.validate(GOOD)).client_id == CALLERS[0]  # keys now warm

    def run(self, coro: Any) -> Any:
        return self.runner.run(coro)

    def request(self, headers: list[tuple[bytes, bytes]]) -> tuple[int, dict[bytes, bytes], bytes]:
        return self.run(self._request(headers))

    async def _request(
        self, headers: list[tuple[bytes, bytes]]
    ) -> tuple[int, dict[bytes, bytes], bytes]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/calc/v1/add/2/3",
            "raw_path": b"/calc/v1/add/2/3",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"calc"), *headers],
            "client": ("127.0.0.1", 1234),
            "server": ("calc", 80),
        }
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.app(scope, receive, send)
        start = next(m for m in sent if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return start["status"], dict(start["headers"]), body

    def close(self) -> None:
        self.run(self.validator.aclose())
        self.runner.close()


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    bed = Bed()
    yield bed
    bed.close()


@pytest.fixture
def errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[list[logging.LogRecord]]:
    with caplog.at_level(logging.ERROR, logger="ccflow"):
        yield caplog.records


# --- a model of the documented header rules (RFC 6750 section 2.1, RFC 7230 token) -----------

_SCHEME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_B64TOKEN = re.compile(rb"[A-Za-z0-9\-._~+/]+=*")


def expected(headers: list[bytes]) -> tuple[set[int], str | None]:
    """The statuses the documented rules allow for these Authorization values, and the error."""
    if not headers:
        return {401}, None
    if len(headers) > 1:
        return {400}, "invalid_request"
    value = headers[0].strip(b" \t")
    if not value:
        return {400}, "invalid_request"
    scheme, _, rest = value.partition(b" ")
    if scheme.lower() != b"bearer":
        return ({401}, None) if _SCHEME.fullmatch(scheme) else ({400}, "invalid_request")
    token = rest.lstrip(b" ")
    if not token or _B64TOKEN.fullmatch(token) is None:
        return {400}, "invalid_request"
    if token == GOOD.encode():
        return {200}, None
    if token == READER.encode():
        return {403}, "insufficient_scope"
    return {401}, "invalid_token"


def check_answer(bed: Bed, headers: list[bytes]) -> None:
    status, response_headers, body = bed.request([(b"authorization", h) for h in headers])
    statuses, error = expected(headers)
    assert status in statuses, (headers, status, body)
    if status == 200:
        assert json.loads(body) == {"result": 5, "caller": CALLERS[0]}
        return
    challenge = response_headers[b"www-authenticate"].decode("latin-1")
    realm = f'Bearer realm="{bed.validator.realm}"'
    data = json.loads(body)
    if error is None:
        assert challenge == realm
        assert data["error"] == "unauthorized"
    else:
        assert challenge.startswith(f'{realm}, error="{error}", error_description="')
        assert data["error"] == error
        assert isinstance(data["error_description"], str)
        assert data["error_description"]
    assert response_headers[b"cache-control"] == b"no-store"


B64TOKEN_CHARS = "ABCXYZabcxyz0189-._~+/="
schemes = st.sampled_from(
    [b"Bearer", b"bearer", b"BEARER", b"BeArEr", b"Basic", b"Digest", b"Negotiate", b"Bear"]
)
blanks = st.sampled_from([b"", b" ", b"  ", b"\t", b" \t"])
tokens = st.one_of(
    st.sampled_from([GOOD.encode(), READER.encode()]),
    st.text(alphabet=B64TOKEN_CHARS, min_size=1, max_size=40).map(str.encode),
    st.binary(max_size=40),
    st.text(max_size=20).map(lambda t: t.encode("utf-8")),
    # a real token with one byte replaced
    st.tuples(st.integers(0, len(GOOD) - 1), st.integers(0, 255)).map(
        lambda p: GOOD.encode()[: p[0]] + bytes([p[1]]) + GOOD.encode()[p[0] + 1 :]
    ),
)
header_values = st.one_of(
    st.builds(
        lambda lead, scheme, gap, token, tail: lead + scheme + gap + token + tail,
        blanks,
        schemes,
        st.sampled_from([b" ", b"  ", b"\t", b""]),
        tokens,
        blanks,
    ),
    st.binary(max_size=60),
    st.sampled_from([b"", b"Bearer", b"Bearer ", b" Bearer", b"Bearer\t", b","]),
)


@FUZZ
@given(values=st.lists(header_values, max_size=3))
def test_any_authorization_header_gets_the_documented_answer(
    bed: Bed, errors_logged: list[logging.LogRecord], values: list[bytes]
) -> None:
    check_answer(bed, values)
    assert not errors_logged


@pytest.mark.parametrize(
    "values",
    [
        [b"Bearer " + GOOD.encode()],
        [b"bearer  " + GOOD.encode() + b" "],
        [b"Bearer " + b"x" * 20000],
    ],
    ids=["good", "good-with-blanks", "huge"],
)
def test_header_model_examples(bed: Bed, values: list[bytes]) -> None:
    check_answer(bed, values)


# --- tokens through the validator ----------------------------------------------------------

REFUSED = (InvalidTokenError, InsufficientScopeError)


def outcome(bed: Bed, token: str) -> Any:
    try:
        return bed.run(bed.validator.validate(token))
    except REFUSED as exc:
        assert exc.message
        assert len(token) < 8 or token not in exc.message  # short ones may match by chance
        return exc


@FUZZ
@given(
    token=st.one_of(
        st.text(max_size=80),
        st.text(alphabet="ab.-_=+/eyJ0", max_size=120),
        st.lists(st.text(alphabet="AZaz09-_", max_size=30), min_size=1, max_size=6).map(".".join),
    )
)
def test_any_string_is_refused_with_invalid_token(bed: Bed, token: str) -> None:
    assert isinstance(outcome(bed, token), InvalidTokenError)


HEADER_NAMES = ["alg", "kid", "typ", "crit", "x5t", "jku", "jwk", "x5c", "zip", "enc", "cty", "b64"]
header_values_json = st.one_of(
    json_values,
    st.sampled_from(["RS256", "none", "HS256", "RS512", "ES256", "JWT", "at+jwt", ""]),
    st.just(AUTHORITY.signing_kid),
)


@FUZZ
@given(
    header=st.one_of(
        st.fixed_dictionaries(
            {"alg": st.just("RS256"), "kid": st.just(AUTHORITY.signing_kid)},
            optional=dict.fromkeys(HEADER_NAMES[2:], header_values_json),
        ),
        st.dictionaries(st.sampled_from(HEADER_NAMES), header_values_json, max_size=5),
        json_values,
    )
)
def test_any_signed_header_is_refused_or_exactly_right(bed: Bed, header: Any) -> None:
    payload = json.dumps(AUTHORITY.token_claims(now=NOW)).encode()
    result = outcome(bed, sign(header, payload))
    if isinstance(result, REFUSED):
        return
    assert isinstance(header, dict)
    assert header["alg"] == "RS256"
    assert header["kid"] == AUTHORITY.signing_kid
    assert "crit" not in header  # an unknown critical extension must never be ignored


CLAIM_NAMES = ["aud", "iss", "exp", "nbf", "iat", "azp", "appid", "tid", "ver", "roles", "sub"]
claim_values = st.one_of(
    json_values,
    st.sampled_from(
        [
            *AUDIENCES,
            *CALLERS,
            AUTHORITY.issuer,
            AUTHORITY.issuer_v1,
            AUTHORITY.tenant_id,
            "2.0",
            "1.0",
            ["invokeRole"],
            NOW - LEEWAY - 1,
            NOW - LEEWAY,
            NOW + LEEWAY,
            NOW + LEEWAY + 1,
            NOW + 3600,
            float(NOW + 3600),
        ]
    ),
)


@FUZZ
@given(
    changes=st.dictionaries(st.sampled_from(CLAIM_NAMES), claim_values, max_size=4),
    omit=st.sets(st.sampled_from(CLAIM_NAMES), max_size=2),
)
def test_any_claims_are_refused_or_satisfy_every_rule(
    bed: Bed, changes: dict[str, Any], omit: set[str]
) -> None:
    claims = AUTHORITY.token_claims(now=NOW)
    claims.update(changes)
    for name in omit - set(changes):
        claims.pop(name, None)
    header = {"typ": "JWT", "alg": "RS256", "kid": AUTHORITY.signing_kid}
    result = outcome(bed, sign(header, json.dumps(claims).encode()))
    if isinstance(result, REFUSED):
        return
    # Compared as JSON: a claim may be NaN (Python's json reads it, as PyJWT does), and NaN is
    # not equal to itself.
    assert json.dumps(dict(result.claims), sort_keys=True) == json.dumps(claims, sort_keys=True)
    # What the documented rules promise about anything that passes:
    assert claims["iss"] == AUTHORITY.issuer
    assert claims["aud"] in AUDIENCES or (
        isinstance(claims["aud"], list) and set(claims["aud"]) & set(AUDIENCES)
    )
    for name in ("exp", "nbf", "iat"):
        assert name == "exp" or name not in claims or isinstance(claims[name], int | float)
    assert isinstance(claims["exp"], int | float)
    assert not isinstance(claims["exp"], bool)
    assert claims["exp"] > NOW - LEEWAY
    if isinstance(claims.get("nbf"), int | float):
        assert claims["nbf"] <= NOW + LEEWAY
    assert claims["ver"] == "2.0"
    assert result.client_id in CALLERS
    assert claims.get("azp") == result.client_id


@FUZZ
@given(payload=st.one_of(st.binary(max_size=60), json_values.map(lambda v: json.dumps(v).encode())))
def test_signed_payloads_that_are_not_a_claim_object_are_refused(bed: Bed, payload: bytes) -> None:
    header = {"typ": "JWT", "alg": "RS256", "kid": AUTHORITY.signing_kid}
    assert isinstance(outcome(bed, sign(header, payload)), InvalidTokenError)
