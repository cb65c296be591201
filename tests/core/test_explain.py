"""The explain core: claim meanings, unverified decoding and times relative to an injected now."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from tests.support import deeply_nested_payload_token

from ccflow._core.explain import (
    CLAIM_MEANINGS,
    HEADER_MEANINGS,
    decode_unverified,
    explain_claims,
    explain_header,
    explain_time,
    humanize_seconds,
)
from ccflow.errors import InvalidTokenError

NOW = 1_700_000_000  # 2023-11-14 22:13:20 UTC
NOT_UTF8 = b"\xff\xfe"
NAN_EXP = b'{"exp": NaN}'
MINUS_INFINITY_EXP = b'{"exp": -Infinity}'
INFINITY_ALG = b'{"alg": Infinity}'


def _seg(value: Any) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _jwt(header: Any, claims: Any) -> str:
    return f"{_seg(header)}.{_seg(claims)}.c2ln"


@pytest.mark.parametrize(
    "name",
    [
        "aud", "iss", "azp", "azpacr", "appid", "appidacr", "roles", "scp", "tid", "oid",
        "sub", "ver", "uti", "rh", "aio", "idp", "iat", "nbf", "exp",
    ],
)  # fmt: skip
def test_every_well_known_claim_has_a_one_line_meaning(name: str) -> None:
    meaning = CLAIM_MEANINGS[name]
    assert meaning
    assert "\n" not in meaning


@pytest.mark.parametrize("name", ["typ", "alg", "kid", "x5t"])
def test_every_header_field_has_a_one_line_meaning(name: str) -> None:
    assert HEADER_MEANINGS[name]
    assert "\n" not in HEADER_MEANINGS[name]


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0 s"),
        (59, "59 s"),
        (60, "1 min"),
        (3599, "59 min"),
        (-180, "3 min"),
        (7199, "119 min"),
        (7200, "2 h"),
        (5 * 3600 + 3 * 60 + 59, "5 h 3 min"),
        (48 * 3600, "2 days"),
    ],
)
def test_humanize_seconds_rounds_down(seconds: float, expected: str) -> None:
    assert humanize_seconds(seconds) == expected


@pytest.mark.parametrize(
    ("claim", "timestamp", "expected"),
    [
        ("exp", NOW + 3599, "2023-11-14 23:13:19 UTC (in 59 min)"),
        ("exp", NOW - 180, "2023-11-14 22:10:20 UTC (expired 3 min ago)"),
        ("exp", NOW, "2023-11-14 22:13:20 UTC (expired 0 s ago)"),
        ("nbf", NOW - 300, "2023-11-14 22:08:20 UTC (became valid 5 min ago)"),
        ("nbf", NOW + 120, "2023-11-14 22:15:20 UTC (not valid for another 2 min)"),
        ("iat", NOW - 60, "2023-11-14 22:12:20 UTC (1 min ago)"),
        ("iat", NOW + 90, "2023-11-14 22:14:50 UTC (in 1 min, in the future)"),
        ("exp", float(NOW + 30), "2023-11-14 22:13:50 UTC (in 30 s)"),
    ],
)
def test_explain_time_gives_utc_date_and_relative_time(
    claim: str, timestamp: float, expected: str
) -> None:
    assert explain_time(timestamp, now=NOW, claim=claim) == expected


@pytest.mark.parametrize("value", ["1700000000", None, True, [1], 10**30])
def test_explain_time_gives_none_for_values_that_are_not_dates(value: Any) -> None:
    assert explain_time(value, now=NOW) is None


def test_explain_claims_keeps_order_and_adds_times_only_to_time_claims() -> None:
    fields = explain_claims({"aud": "api://calc", "exp": NOW + 3599, "custom": 1}, now=NOW)
    assert [f.name for f in fields] == ["aud", "exp", "custom"]
    assert fields[0].meaning == CLAIM_MEANINGS["aud"]
    assert fields[0].when is None
    assert fields[1].when == "2023-11-14 23:13:19 UTC (in 59 min)"
    assert fields[2].meaning is None


def test_explain_header_gives_meanings() -> None:
    fields = explain_header({"alg": "RS256", "zip": "DEF"})
    assert [(f.name, f.meaning) for f in fields] == [
        ("alg", HEADER_MEANINGS["alg"]),
        ("zip", None),
    ]


def test_decode_unverified_returns_header_and_claims() -> None:
    decoded = decode_unverified(_jwt({"alg": "RS256"}, {"aud": "x", "roles": ["r"]}))
    assert decoded.header == {"alg": "RS256"}
    assert decoded.claims == {"aud": "x", "roles": ["r"]}


@pytest.mark.parametrize("prefix", ["Bearer ", "bearer ", "  ", "BEARER   "])
def test_decode_unverified_accepts_a_bearer_prefix_and_whitespace(prefix: str) -> None:
    assert decode_unverified(prefix + _jwt({"a": 1}, {"b": 2}) + "\n").claims == {"b": 2}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no token"),
        ("abc", "3 dot-separated parts, this text has 1"),
        ("a.b.c.d.e", "encrypted JWE"),
        (f"{_seg({'a': 1})}.%%%.sig", "payload is not base64url"),
        (f"{_seg({'a': 1})}.e30=.sig", "payload is not base64url"),
        (f"{_seg({'a': 1})}.A.sig", "payload is not base64url"),
        (f".{_seg({})}.sig", "header is not base64url"),
        (f"{_seg(b'not json')}.{_seg({})}.sig", "header is not JSON"),
        (f"{_seg({})}.{_seg(NOT_UTF8)}.sig", "payload is not JSON"),
        (f"{_seg([1, 2])}.{_seg({})}.sig", "header is not a JSON object"),
        # Python's json reads these, but they are not JSON (RFC 8259), and `ccflow decode
        # --json` wrote them back out as NaN, which no JSON parser reads.
        (f"{_seg({})}.{_seg(NAN_EXP)}.sig", "payload is not JSON"),
        (f"{_seg({})}.{_seg(MINUS_INFINITY_EXP)}.sig", "payload is not JSON"),
        (f"{_seg(INFINITY_ALG)}.{_seg({})}.sig", "header is not JSON"),
        ("a." + "b" * 70_000 + ".c", "longer than"),
    ],
)
def test_decode_unverified_refuses_what_is_not_a_jwt(text: str, message: str) -> None:
    with pytest.raises(InvalidTokenError, match=message) as info:
        decode_unverified(text)
    assert info.value.reason == "malformed"


def test_decode_error_never_quotes_the_token() -> None:
    secret_looking = f"{_seg({'a': 1})}.Zm9vYmFyc2VjcmV0.sig"
    with pytest.raises(InvalidTokenError) as info:
        decode_unverified(secret_looking)
    assert "Zm9vYmFyc2VjcmV0" not in str(info.value)


def test_decode_unverified_refuses_a_deeply_nested_payload_as_malformed() -> None:
    # json raised RecursionError, which escaped decode_unverified().
    with pytest.raises(InvalidTokenError, match="not JSON") as info:
        decode_unverified(deeply_nested_payload_token())
    assert info.value.reason == "malformed"
