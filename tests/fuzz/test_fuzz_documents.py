"""Property-based tests of every document ccflow reads from an authority.

- discovery documents and JWKS documents, parsed on their own (only ``DiscoveryError`` /
  ``JWKSError`` may come out, and what is accepted is safe to use) and served to a cold
  ``TokenValidator`` in place of the authority's own (a good token is then valid, refused with
  ``InvalidTokenError``, or answered with ``KeysUnavailableError``: nothing else);
- token endpoint answers (any status, any body, any ``Retry-After``), parsed by the core and
  served to a ``TokenClient`` with one retry: an ``AccessToken`` or ``TokenRequestError`` /
  ``AuthorityUnreachableError``, with at most two POSTs and bounded waits.
"""

# An exception is one of several allowed outcomes here, so pytest.raises does not fit:
# ruff: noqa: PT017

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support import START, json_values

from ccflow import (
    AccessToken,
    AuthorityUnreachableError,
    InvalidTokenError,
    KeysUnavailableError,
    TokenClient,
    TokenRequestError,
    TokenValidator,
)
from ccflow._core.discovery import DiscoveryError, parse_discovery
from ccflow._core.jwks import JWKSError, parse_jwks
from ccflow._core.tokens import ErrorContext, parse_token_response
from ccflow._core.urls import require_secure_url
from ccflow.authority import Authority
from ccflow.errors import ConfigurationError

if TYPE_CHECKING:
    from tests.caller.conftest import Sleeps


NOW = int(START)
AUTHORITY = Authority(clock=lambda: NOW)
API = AUTHORITY.api("calc-api")
CALC = AUTHORITY.client("calc-client")
GOOD = AUTHORITY.mint(now=NOW)
REAL_JWK: dict[str, Any] = json.loads(json.dumps(AUTHORITY.jwks()["keys"][0]))
REAL_DISCOVERY: dict[str, Any] = json.loads(json.dumps(AUTHORITY.discovery()))

FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def encode(value: Any) -> bytes:
    return json.dumps(value).encode()  # NaN and Infinity too: Python's json reads them back


raw_bodies = st.one_of(
    st.binary(max_size=80),
    st.sampled_from([b"", b"<html>Bad gateway</html>", b"null", b"[]", b"{", b'{"a":1}' * 3]),
    json_values.map(encode),
)


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as runner:
        yield runner


def validate_with(runner: asyncio.Runner, serve: dict[str, bytes]) -> Any:
    """Validate GOOD with a cold validator whose authority answers ``serve[url]`` (200) for
    the URLs given and is itself otherwise; return the verdict or the ccflow error."""

    def handler(request: httpx.Request) -> httpx.Response:
        body = serve.get(str(request.url))
        if body is not None:
            return httpx.Response(200, content=body)
        return AUTHORITY.handle(request)

    async def go() -> Any:
        validator = TokenValidator(
            tenant_id=AUTHORITY.tenant_id,
            authority_host=AUTHORITY.host,
            audience=API.client_id,
            http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
            clock=lambda: NOW,
        )
        try:
            return await validator.validate(GOOD)
        except (InvalidTokenError, KeysUnavailableError) as exc:
            return exc
        finally:
            await validator.aclose()

    return runner.run(go())


# --- discovery ---------------------------------------------------------------------------

issuers = st.one_of(
    st.sampled_from(
        [
            AUTHORITY.issuer,
            AUTHORITY.issuer + "/",
            AUTHORITY.issuer.replace("https://", "http://"),
            "https://login.microsoftonline.com/{tenantid}/v2.0",
            "http://127.0.0.1:1/t/v2.0",
            "",
        ]
    ),
    json_values,
)
jwks_uris = st.one_of(
    st.sampled_from(
        [
            AUTHORITY.jwks_uri,
            AUTHORITY.jwks_uri.replace("https://", "http://"),
            "http://127.0.0.1:9/keys",
            "https://evil.test/keys",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "",
        ]
    ),
    json_values,
)
discovery_documents = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={"issuer": issuers, "jwks_uri": jwks_uris, "token_endpoint": json_values},
    ).map(encode),
    st.builds(
        lambda d, extra: encode({**REAL_DISCOVERY, **extra}),
        st.just(0),
        st.dictionaries(
            st.sampled_from(["issuer", "jwks_uri", "id_token_signing_alg_values_supported"]),
            st.one_of(issuers, jwks_uris),
            max_size=2,
        ),
    ),
    raw_bodies,
)


@FUZZ
@given(document=discovery_documents)
def test_discovery_parse_accepts_only_safe_documents(document: bytes) -> None:
    try:
        meta = parse_discovery(document)
    except DiscoveryError as exc:
        assert str(exc)
        return
    assert isinstance(meta.issuer, str)
    assert meta.issuer
    require_secure_url(meta.jwks_uri, setting="jwks_uri")  # https, or http to loopback only


@FUZZ
@given(document=discovery_documents)
def test_any_discovery_document_gives_a_documented_outcome(
    runner: asyncio.Runner, document: bytes
) -> None:
    result = validate_with(runner, {AUTHORITY.discovery_url: document})
    if isinstance(result, InvalidTokenError | KeysUnavailableError):
        return
    data = json.loads(document)
    assert data["issuer"] == AUTHORITY.issuer
    assert data["jwks_uri"] == AUTHORITY.jwks_uri
    assert result.client_id == CALC.client_id


# --- JWKS --------------------------------------------------------------------------------

JWK_FIELDS = ["kty", "kid", "use", "alg", "n", "e", "crv", "x", "y", "key_ops", "x5c"]


def mutated_jwk(changes: dict[str, Any], drop: set[str]) -> dict[str, Any]:
    jwk = {**REAL_JWK, **changes}
    for name in drop - set(changes):
        jwk.pop(name, None)
    return jwk


jwk_field_values = st.one_of(
    json_values,
    st.sampled_from(
        ["RSA", "EC", "oct", "sig", "enc", "RS256", "HS256", "none", "AQAB", "AQ", "P-256", ""]
    ),
    st.just(["verify"]),
    st.just(["encrypt"]),
    st.just(REAL_JWK["kid"]),
    st.just(REAL_JWK["n"][:-4]),
)
jwk_entries = st.one_of(
    st.builds(
        mutated_jwk,
        st.dictionaries(st.sampled_from(JWK_FIELDS), jwk_field_values, max_size=2),
        st.sets(st.sampled_from(JWK_FIELDS), max_size=2),
    ),
    st.just(REAL_JWK),
    json_values,
)
jwks_documents = st.one_of(
    st.lists(jwk_entries, max_size=4).map(lambda keys: encode({"keys": keys})),
    st.dictionaries(st.sampled_from(["keys", "x"]), json_values, max_size=2).map(encode),
    raw_bodies,
)


def holds_the_real_key(document: bytes) -> bool:
    try:
        data = json.loads(document)
    except ValueError:
        return False
    keys = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(keys, list):
        return False
    return any(
        isinstance(k, dict)
        and k.get("kty") == "RSA"
        and all(k.get(name) == REAL_JWK[name] for name in ("kid", "n", "e"))
        and k.get("use", "sig") == "sig"
        # "alg": null is read as no "alg" (the parser ignores a missing or null alg).
        and k.get("alg") in (None, "RS256")
        for k in keys
    )


@FUZZ
@given(document=jwks_documents)
def test_jwks_parse_never_fails_outside_its_error(document: bytes) -> None:
    try:
        keys = parse_jwks(document, algorithms=frozenset({"RS256"}))
    except JWKSError as exc:
        assert str(exc)
        return
    for kid, key in keys.keys.items():
        assert key.kid == kid
        assert kid
        assert key.algorithms <= {"RS256"}


@FUZZ
@given(document=jwks_documents)
def test_any_jwks_document_gives_a_documented_outcome(
    runner: asyncio.Runner, document: bytes
) -> None:
    result = validate_with(runner, {AUTHORITY.jwks_uri: document})
    if isinstance(result, InvalidTokenError | KeysUnavailableError):
        return
    # Valid only with the real key (the first usable entry with its kid wins).
    assert holds_the_real_key(document)
    assert result.client_id == CALC.client_id


# --- token endpoint answers --------------------------------------------------------------

SCOPES = (API.default_scope,)
CONTEXT = ErrorContext(CALC.client_id, AUTHORITY.token_endpoint, SCOPES)

token_fields = st.fixed_dictionaries(
    {},
    optional={
        "access_token": st.one_of(st.sampled_from(["eyJ.x.y", ""]), json_values),
        "expires_in": st.one_of(
            st.sampled_from(
                [
                    3599,
                    "3599",
                    "-5",
                    " 60 ",
                    0,
                    1e400,
                    "1e3",
                    True,
                    2**70,
                    "\u00b2",
                    "--5",
                    "9" * 5000,
                ]
            ),
            json_values,
        ),
        "token_type": st.one_of(st.just("Bearer"), json_values),
        "refresh_in": json_values,
        "ext_expires_in": json_values,
        "error": st.one_of(
            st.sampled_from(["invalid_client", "invalid_scope", "temporarily_unavailable"]),
            json_values,
        ),
        "error_description": st.one_of(
            st.just("AADSTS7000215: Invalid client secret"), json_values
        ),
        "error_codes": st.one_of(st.just([7000215]), json_values),
        "trace_id": json_values,
        "correlation_id": json_values,
    },
)
token_bodies = st.one_of(token_fields.map(encode), raw_bodies)
statuses = st.one_of(
    st.sampled_from([200, 201, 400, 401, 429, 500, 502, 503]), st.integers(100, 599)
)
retry_afters = st.one_of(
    st.none(),
    st.sampled_from(
        [
            *("0", "2", "120", "-1", "soon", "Thu, 01 Jan 2026 00:00:05 GMT", "1e9", ""),
            *("\u00b2", "9" * 400, "9" * 5000),
        ]
    ),
    st.text(alphabet="0123456789 ,GMTa:", max_size=20),
)


@FUZZ
@given(status=statuses, body=token_bodies, retry_after=retry_afters)
def test_token_answers_parse_to_a_token_or_a_documented_error(
    status: int, body: bytes, retry_after: str | None
) -> None:
    try:
        response = parse_token_response(
            status, body, scopes=SCOPES, now=NOW, context=CONTEXT, retry_after=retry_after
        )
    except TokenRequestError as exc:
        assert exc.status_code == status
        assert exc.message
        assert exc.retry_after is None or (math.isfinite(exc.retry_after) and exc.retry_after >= 0)
        return
    except AuthorityUnreachableError as exc:
        assert 200 <= status < 300
        assert exc.url == AUTHORITY.token_endpoint
        return
    assert 200 <= status < 300
    assert response.token.token
    assert isinstance(response.token.token, str)
    assert response.token.expires_on == NOW + response.expires_in
    assert response.token.scopes == SCOPES


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
@pytest.mark.parametrize("field", ["expires_in", "refresh_in"])
def test_non_finite_numbers_in_a_token_answer_are_not_a_crash(literal: bytes, field: str) -> None:
    # Python's json module reads NaN/Infinity; int() of them raised ValueError/OverflowError.
    body = b'{"access_token": "a.b.c", "expires_in": 3599, "' + field.encode() + b'": ' + literal
    body += b"}"
    try:
        response = parse_token_response(200, body, scopes=SCOPES, now=NOW, context=CONTEXT)
    except AuthorityUnreachableError:
        assert field == "expires_in"
    else:
        assert field == "refresh_in"
        assert response.refresh_in is None


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@FUZZ
@given(answers=st.lists(st.tuples(statuses, token_bodies, retry_afters), min_size=2, max_size=2))
def test_token_client_gets_a_token_or_a_documented_error(
    answers: list[tuple[int, bytes, str | None]],
) -> None:
    posts: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        status, body, retry_after = answers[len(posts)]
        posts.append(request)
        # As bytes off the wire: a latin-1 "²" is what a server can really send.
        headers = {} if retry_after is None else {"Retry-After": retry_after.encode("latin-1")}
        return httpx.Response(status, content=body, headers=headers)

    sleeps = Sleeps()
    client = TokenClient(
        client_id=CALC.client_id,
        client_secret="s3cret-value",
        tenant_id=AUTHORITY.tenant_id,
        authority_host=AUTHORITY.host,
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
        clock=lambda: float(NOW),
        max_retries=1,
        sleep=sleeps,
    )
    try:
        token = client.get_token(API.default_scope)
    except (TokenRequestError, AuthorityUnreachableError) as exc:
        assert "s3cret-value" not in str(exc)
    else:
        assert isinstance(token, AccessToken)
        assert token.token
    assert 1 <= len(posts) <= 2
    assert len(sleeps) == len(posts) - 1
    assert all(0 <= s <= 30 for s in sleeps)


def test_configuration_error_is_not_what_a_document_raises() -> None:
    # The discovery parser wraps the URL checks: a ConfigurationError would be a 500 upstream.
    with pytest.raises(DiscoveryError):
        parse_discovery({"issuer": AUTHORITY.issuer, "jwks_uri": "http://evil.test/keys"})
    assert issubclass(DiscoveryError, ValueError)
    assert not issubclass(DiscoveryError, ConfigurationError)
