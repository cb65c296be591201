"""The compact JWS parser and signature check: strict, allow-listed, kid-only key choice."""

from __future__ import annotations

import pytest
from tests.support import b64, b64json, ec_key, make_token, rsa_key

from ccflow._core.jws import (
    SUPPORTED_ALGORITHMS,
    check_algorithms,
    parse_compact,
    verify_signature,
)
from ccflow.errors import ConfigurationError, InvalidTokenError

CLAIMS = {"iss": "https://issuer.test", "aud": "api://calc", "exp": 2_000_000_000}
HEADER = {"alg": "RS256", "kid": "k1", "typ": "JWT"}
RS256 = frozenset({"RS256"})


def _token_with_header(header: object, claims: object = CLAIMS) -> str:
    return f"{b64json(header)}.{b64json(claims)}.{b64(b'x' * 256)}"


def test_parse_returns_header_claims_alg_kid_and_signing_input() -> None:
    token = make_token(CLAIMS)
    parsed = parse_compact(token)
    assert parsed.claims == CLAIMS
    assert parsed.alg == "RS256"
    assert parsed.kid == "k1"
    assert parsed.signing_input == token.rsplit(".", 1)[0].encode()


def test_valid_signature_verifies() -> None:
    parsed = parse_compact(make_token(CLAIMS))
    verify_signature(parsed, rsa_key().public_key())


def test_signature_from_another_key_fails() -> None:
    parsed = parse_compact(make_token(CLAIMS, key=rsa_key("other")))
    with pytest.raises(InvalidTokenError) as info:
        verify_signature(parsed, rsa_key().public_key())
    assert info.value.reason == "signature"


@pytest.mark.parametrize("alg", sorted(SUPPORTED_ALGORITHMS))
def test_every_supported_algorithm_verifies_when_allowed(alg: str) -> None:
    crv = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}.get(alg)
    key = ec_key("a", crv) if crv else rsa_key()
    token = make_token(CLAIMS, key=key, alg=alg)
    parsed = parse_compact(token, algorithms=frozenset({alg}))
    verify_signature(parsed, key.public_key())


@pytest.mark.parametrize(
    ("alg", "key_alg"),
    [("ES256", "RS256"), ("RS256", "ES256")],
)
def test_algorithm_that_does_not_fit_the_key_type_is_refused(alg: str, key_alg: str) -> None:
    key = ec_key() if key_alg.startswith("ES") else rsa_key()
    signer = ec_key() if alg.startswith("ES") else rsa_key()
    parsed = parse_compact(make_token(CLAIMS, key=signer, alg=alg), algorithms=frozenset({alg}))
    with pytest.raises(InvalidTokenError) as info:
        verify_signature(parsed, key.public_key())
    assert info.value.reason == "algorithm"


def test_ecdsa_signature_of_wrong_length_fails() -> None:
    token = make_token(CLAIMS, key=ec_key(), alg="ES256")
    head, body, _ = token.split(".")
    short = b64(bytes(63))
    parsed = parse_compact(f"{head}.{body}.{short}", algorithms=frozenset({"ES256"}))
    with pytest.raises(InvalidTokenError) as info:
        verify_signature(parsed, ec_key().public_key())
    assert info.value.reason == "signature"


NOT_UTF8 = b'{"a":"\xff"}'
MALFORMED = {
    "empty": "",
    "one segment": "abc",
    "two segments": "abc.def",
    "four segments": "a.b.c.d",
    "empty segments": "..",
    "not base64 header": "!!!!.e30.AAAA",
    "base64 with standard alphabet": "e30+.e30.AAAA",
    "impossible length": "e30AA.e30.AAAA",
    "excess padding": "e30===.e30.AAAA",
    "padding on unaligned segment": "e30A=.e30.AAAA",
    "non-canonical trailing bits": "e31.e30.AAAA",
    "whitespace": "e30 .e30.AAAA",
    "non-ascii": "e30\u00e9.e30.AAAA",
    "header not JSON": f"{b64(b'{nope')}.e30.AAAA",
    "header JSON array": f"{b64json([1])}.e30.AAAA",
    "header JSON string": f"{b64json('RS256')}.e30.AAAA",
    "claims not JSON": f"{b64json(HEADER)}.{b64(b'nope')}.AAAA",
    "claims JSON array": f"{b64json(HEADER)}.{b64json([CLAIMS])}.AAAA",
    "claims null": f"{b64json(HEADER)}.{b64json(None)}.AAAA",
    "claims not UTF-8": f"{b64json(HEADER)}.{b64(NOT_UTF8)}.AAAA",
    "crit header": _token_with_header({**HEADER, "crit": ["exp"], "exp": 1}),
    "unencoded payload": _token_with_header({**HEADER, "b64": False, "crit": ["b64"]}),
    "deeply nested JSON": f"{b64(b'[' * 5000)}.e30.AAAA",
}


@pytest.mark.parametrize("token", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(InvalidTokenError) as info:
        parse_compact(token)
    assert info.value.reason == "malformed"


def test_padded_segments_are_accepted_like_pyjwt() -> None:
    head, body, sig = make_token(CLAIMS).split(".")
    padded = [s + "=" * (-len(s) % 4) for s in (head, body, sig)]
    assert parse_compact(".".join(padded)).claims == CLAIMS


def test_token_over_the_size_cap_is_refused_before_parsing() -> None:
    token = "A" * 20_000  # not even a JWS: the size check must come first
    with pytest.raises(InvalidTokenError, match="limit") as info:
        parse_compact(token)
    assert info.value.reason == "malformed"


def test_size_cap_is_configurable() -> None:
    token = make_token(CLAIMS)
    with pytest.raises(InvalidTokenError):
        parse_compact(token, max_size=len(token) - 1)
    assert parse_compact(token, max_size=len(token)).kid == "k1"


def test_non_string_token_is_refused() -> None:
    with pytest.raises(InvalidTokenError) as info:
        parse_compact(b"a.b.c")  # type: ignore[arg-type]
    assert info.value.reason == "malformed"


ALGORITHM_ATTACKS = {
    "none": {"alg": "none", "kid": "k1"},
    "None": {"alg": "None", "kid": "k1"},
    "empty alg": {"alg": "", "kid": "k1"},
    "missing alg": {"kid": "k1"},
    "alg not a string": {"alg": ["RS256"], "kid": "k1"},
    "alg null": {"alg": None, "kid": "k1"},
    "HS256": {"alg": "HS256", "kid": "k1"},
    "HS512": {"alg": "HS512", "kid": "k1"},
    "RS384 not allowed": {"alg": "RS384", "kid": "k1"},
    "PS256 not allowed": {"alg": "PS256", "kid": "k1"},
    "ES256 not allowed": {"alg": "ES256", "kid": "k1"},
    "lower-case rs256": {"alg": "rs256", "kid": "k1"},
    "unknown alg": {"alg": "RS1", "kid": "k1"},
}


@pytest.mark.parametrize("header", ALGORITHM_ATTACKS.values(), ids=ALGORITHM_ATTACKS.keys())
def test_algorithms_outside_the_allow_list_are_refused(header: dict[str, object]) -> None:
    with pytest.raises(InvalidTokenError) as info:
        parse_compact(_token_with_header(header), algorithms=RS256)
    assert info.value.reason == "algorithm"


def test_none_alg_with_empty_signature_is_refused() -> None:
    token = f"{b64json({'alg': 'none', 'kid': 'k1'})}.{b64json(CLAIMS)}."
    with pytest.raises(InvalidTokenError) as info:
        parse_compact(token)
    assert info.value.reason == "algorithm"


def test_hs256_keyed_with_the_rsa_public_key_is_refused() -> None:
    import hashlib
    import hmac

    from cryptography.hazmat.primitives import serialization

    pem = (
        rsa_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    signing_input = f"{b64json({'alg': 'HS256', 'kid': 'k1'})}.{b64json(CLAIMS)}"
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(InvalidTokenError) as info:
        parse_compact(f"{signing_input}.{b64(mac)}")
    assert info.value.reason == "algorithm"


KID_CASES = {
    "kid missing": {"alg": "RS256"},
    "kid empty": {"alg": "RS256", "kid": ""},
    "kid a number": {"alg": "RS256", "kid": 1},
    "kid a list": {"alg": "RS256", "kid": ["k1"]},
    "kid null": {"alg": "RS256", "kid": None},
}


@pytest.mark.parametrize("header", KID_CASES.values(), ids=KID_CASES.keys())
def test_kid_must_be_a_non_empty_string(header: dict[str, object]) -> None:
    with pytest.raises(InvalidTokenError) as info:
        parse_compact(_token_with_header(header))
    assert info.value.reason == "key"


SEVERAL_FAULTS = {
    "claims not JSON, kid a number": ({"alg": "RS256", "kid": 5}, b"not json", "malformed"),
    "HS256, kid a number": ({"alg": "HS256", "kid": 5}, CLAIMS, "algorithm"),
    "HS256, no kid": ({"alg": "HS256"}, CLAIMS, "algorithm"),
    "claims not JSON, no kid": ({"alg": "RS256"}, b"not json", "malformed"),
}


@pytest.mark.parametrize(
    ("header", "claims", "reason"), SEVERAL_FAULTS.values(), ids=SEVERAL_FAULTS.keys()
)
def test_a_token_with_several_faults_gets_the_first_listed_reason(
    header: dict[str, object], claims: object, reason: str
) -> None:
    # malformed, then algorithm, then key: whichever field the fault is in.
    payload = b64(claims) if isinstance(claims, bytes) else b64json(claims)
    with pytest.raises(InvalidTokenError) as info:
        parse_compact(f"{b64json(header)}.{payload}.{b64(b'x' * 256)}")
    assert info.value.reason == reason


@pytest.mark.parametrize("name", ["jku", "x5u", "jwk", "x5c"])
def test_key_bearing_headers_are_ignored_not_trusted(name: str) -> None:
    attacker = rsa_key("attacker")
    value: object = {"kty": "RSA"} if name == "jwk" else "https://evil.test/keys"
    if name == "x5c":
        value = ["MIIB"]
    token = make_token(CLAIMS, key=attacker, header={**HEADER, name: value})
    parsed = parse_compact(token)
    # The kid picks our key; the attacker's signature cannot verify with it.
    with pytest.raises(InvalidTokenError) as info:
        verify_signature(parsed, rsa_key().public_key())
    assert info.value.reason == "signature"


def test_errors_never_contain_the_token() -> None:
    token = make_token({**CLAIMS, "secret": "s3cr3t-claim"}, header={"alg": "HS256", "kid": "k"})
    with pytest.raises(InvalidTokenError) as info:
        parse_compact(token)
    for part in token.split("."):
        assert part not in str(info.value)


@pytest.mark.parametrize(
    "algorithms",
    [["none"], ["HS256"], ["hs512"], ["RS256", "HS256"], [], "NONE", [1], ["RS1"], None],
)
def test_configuring_unsafe_or_unknown_algorithms_fails(algorithms: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        check_algorithms(algorithms)
    assert info.value.setting == "algorithms"


def test_configured_algorithms_become_a_frozenset() -> None:
    assert check_algorithms(["RS256", "PS256", "RS256"]) == frozenset({"RS256", "PS256"})
    assert check_algorithms("ES256") == frozenset({"ES256"})


# --- the same header in many tokens: each parse judges it afresh -------------------------------


def test_a_cached_header_still_meets_each_calls_algorithm_allow_list() -> None:
    token = _token_with_header({"alg": "RS256", "kid": "allow-list"})
    parse_compact(token)
    with pytest.raises(InvalidTokenError) as caught:
        parse_compact(token, algorithms=frozenset({"ES256"}))
    assert caught.value.reason == "algorithm"


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "RS256"},
        {"alg": "RS256", "kid": 7},
        {"alg": "RS256", "kid": ""},
        {"kid": "k1"},
        {"alg": "RS256", "kid": "k1", "crit": ["exp"]},
        {"alg": "RS256", "kid": "k1", "b64": False},
    ],
    ids=["no kid", "kid not a string", "empty kid", "no alg", "crit", "b64 false"],
)
def test_refused_headers_are_not_cached_and_refused_every_time(header: dict[str, object]) -> None:
    token = _token_with_header(header)
    answers = []
    for _ in range(2):
        with pytest.raises(InvalidTokenError) as caught:
            parse_compact(token)
        answers.append((caught.value.reason, str(caught.value)))
    assert answers[0] == answers[1]


def test_a_bad_claims_or_signature_segment_behind_a_cached_header_is_still_refused() -> None:
    header = b64json({"alg": "RS256", "kid": "k-segments"})
    parse_compact(f"{header}.{b64json(CLAIMS)}.{b64(b'x' * 256)}")
    for token, reason in [
        (f"{header}.{b64json(CLAIMS)}!.{b64(b'x' * 256)}", "not valid base64url"),
        (f"{header}.{b64(b'[1]')}.{b64(b'x' * 256)}", "not a JSON object"),
        (f"{header}.{b64(b'{} x')}.{b64(b'x' * 256)}", "not valid JSON"),
        (f"{header}.{b64json(CLAIMS)}.{b64(b'x' * 256)}=", "padding"),
    ]:
        with pytest.raises(InvalidTokenError, match=reason):
            parse_compact(token)


# --- RSA verification: key.verify(), at the key's exact signature length ---------------------


def test_rsa_pkcs1_verdicts_equal_cryptographys_verify_on_mutated_signatures() -> None:
    import random

    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from tests.support import sign

    rng = random.Random("rsa-recover")
    key = rsa_key()
    public = key.public_key()
    hashes_by_alg = {"RS256": hashes.SHA256(), "RS384": hashes.SHA384(), "RS512": hashes.SHA512()}
    accepted = refused = 0
    for n in range(600):
        alg = rng.choice(sorted(hashes_by_alg))
        signing_input = f"{b64json({'alg': alg, 'kid': 'k1'})}.{b64json({'n': n})}".encode()
        signature = sign(signing_input, key, alg)
        match rng.randrange(7):
            case 0:
                pass
            case 1:
                i = rng.randrange(len(signature))
                signature = (
                    signature[:i]
                    + bytes([signature[i] ^ 1 << rng.randrange(8)])
                    + signature[i + 1 :]
                )
            case 2:
                signature = signature[: rng.randrange(len(signature))]
            case 3:
                signature = b"\x00" + signature
            case 4:
                signature = sign(signing_input + b"x", key, alg)
            case 5:  # the right key and input, another hash's DigestInfo
                signature = sign(signing_input, key, rng.choice(sorted(set(hashes_by_alg) - {alg})))
            case _:
                signature = sign(signing_input, rsa_key("other"), alg)
        parsed = parse_compact(
            f"{signing_input.decode()}.{b64(signature)}", algorithms=frozenset({alg})
        )
        try:
            public.verify(signature, signing_input, padding.PKCS1v15(), hashes_by_alg[alg])
            expected = True
        except InvalidSignature:
            expected = False
        reason = None
        try:
            verify_signature(parsed, public)
        except InvalidTokenError as exc:
            reason = exc.reason
        assert (reason is None) == expected, (n, alg)
        assert reason in (None, "signature")
        accepted += expected
        refused += not expected
    assert accepted > 50
    assert refused > 300


@pytest.mark.parametrize("alg", ["RS256", "PS256"])
def test_an_rsa_signature_one_byte_short_is_refused(alg: str) -> None:
    # OpenSSL reads a shorter signature as if zero-padded: a valid signature whose first
    # byte is 0 would have a second, shorter spelling that verifies.
    import base64

    key = rsa_key("short")
    for n in range(5000):
        token = make_token({**CLAIMS, "n": n}, key=key, alg=alg)
        head, body, sig = token.split(".")
        raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
        if raw[0] == 0:
            break
    else:
        pytest.fail("no signature with a leading zero byte in 5000 tokens")
    verify_signature(parse_compact(token, algorithms=frozenset({alg})), key.public_key())
    short = parse_compact(f"{head}.{body}.{b64(raw[1:])}", algorithms=frozenset({alg}))
    with pytest.raises(InvalidTokenError) as caught:
        verify_signature(short, key.public_key())
    assert caught.value.reason == "signature"


def test_a_header_holding_a_list_is_parsed_but_not_shared_between_tokens() -> None:
    header = {"alg": "RS256", "kid": "k-x5c", "x5c": ["A"]}
    first = parse_compact(_token_with_header(header))
    first.header["x5c"].append("changed")
    assert parse_compact(_token_with_header(header)).header["x5c"] == ["A"]


@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"])
def test_rsa_refuses_junk_and_borrowed_signatures(alg: str) -> None:
    key = rsa_key("a")
    public = key.public_key()
    n = public.public_numbers().n
    good = make_token({"a": 1}, key=key, alg=alg)
    head, body, _ = good.split(".")
    verify_signature(parse_compact(good, algorithms=frozenset({alg})), public)
    other = make_token({"a": 2}, key=key, alg=alg).split(".")[2]
    for junk in (
        b"",
        b"\x01",
        bytes(256),
        (1).to_bytes(256, "big"),
        n.to_bytes(256, "big"),
        b"\xff" * 256,
        b"\x00" + b"\x01" * 256,
        b"\x01" * 512,
    ):
        for candidate in (b64(junk), other):
            parsed = parse_compact(f"{head}.{body}.{candidate}", algorithms=frozenset({alg}))
            with pytest.raises(InvalidTokenError) as info:
                verify_signature(parsed, public)
            assert info.value.reason == "signature"
