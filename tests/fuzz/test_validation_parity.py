"""Our own JWS parse path gives the same verdict as PyJWT on 10,000+ mutated tokens.

ccflow parses compact JWS itself (PyJWT 2.15's decode is several times slower because of a
pure-Python base64 check), so this test holds it to PyJWT's verdict: a seeded mutator flips,
inserts and deletes bytes, swaps, duplicates and drops segments, changes padding, transplants
headers and signatures, and starts from tokens re-signed with altered ``alg``/``kid``/header
fields and claims. Accept or reject must agree on every one.

Deliberate differences, which the mutator therefore does not generate: ccflow refuses any
``crit`` header and ``b64`` other than ``true`` (PyJWT accepts ``crit: ["b64"]``), and time
claims that are strings or booleans (PyJWT applies ``int()`` to them). Both are covered by the
parser and claim tests instead.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

import jwt
import pytest
from tests.support import (
    b64,
    b64json,
    make_token,
    rsa_jwk,
    rsa_key,
    sign,
)

from ccflow._core.claims import ClaimRules, IssuerRule, check_claims
from ccflow._core.jwks import parse_jwks
from ccflow._core.jws import parse_compact, verify_signature
from ccflow.errors import CCFlowError

ISS = "https://login.example/tenant/v2.0"
AUD = "api://calc"
RULES = ClaimRules(issuers=(IssuerRule(ISS, "2.0"),), audiences=frozenset({AUD}))
KEYS = parse_jwks(
    {"keys": [rsa_jwk(rsa_key("a"), "ka"), rsa_jwk(rsa_key("b"), "kb")]},
    algorithms=frozenset({"RS256"}),
)
PUBLIC = {kid: key.public_key for kid, key in KEYS.keys.items()}
COUNT = 10_000
# PyJWT reads the real clock; every time in these tokens sits >= 1000 s from a boundary.
NOW_FOR_POOL = [time.time()]
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
ODD = ".=+/ \t!%~\u00e9"


def ours(token: str, now: float) -> bool:
    try:
        parsed = parse_compact(token, algorithms=frozenset({"RS256"}))
        key = KEYS.get(parsed.kid)
        if key is None:
            return False
        verify_signature(parsed, key.public_key)
        check_claims(parsed.claims, RULES, now=now)
    except CCFlowError:
        return False
    return True


def pyjwts(token: str) -> bool:
    try:
        kid = jwt.get_unverified_header(token).get("kid")
        key = PUBLIC.get(kid) if isinstance(kid, str) else None
        if key is None:
            return False
        jwt.decode(
            token,
            key,
            algorithms=["RS256"],
            audience=[AUD],
            issuer=ISS,
            leeway=60,
            options={"require": ["exp", "iss", "aud"]},
        )
    except jwt.PyJWTError:
        return False
    return True


def _claims(now: float, **changes: Any) -> dict[str, Any]:
    claims = {
        "aud": AUD,
        "iss": ISS,
        "iat": int(now) - 100,
        "nbf": int(now) - 100,
        "exp": int(now) + 3600,
        "azp": "client",
        "tid": "tenant",
        "ver": "2.0",
        "roles": ["invokeRole"],
    }
    claims.update(changes)
    return claims


def _pool(now: float) -> list[str]:
    """Signed starting points. Times sit far from every boundary: PyJWT reads the real clock."""
    a, b = rsa_key("a"), rsa_key("b")
    base = {"alg": "RS256", "typ": "JWT"}
    headers: list[tuple[dict[str, Any], Any]] = [
        ({**base, "kid": "ka"}, a),
        ({**base, "kid": "kb"}, b),
        ({**base, "kid": "kb"}, a),  # wrong key for a known kid
        ({**base, "kid": "kc"}, a),  # unknown kid
        ({"alg": "RS256"}, a),  # no kid
        ({**base, "kid": 1}, a),
        ({**base, "kid": None}, a),
        ({**base, "kid": ""}, a),
        ({"alg": "RS256", "kid": "ka", "typ": "at+jwt"}, a),
        ({**base, "kid": "ka", "jku": "https://evil.test/k"}, a),
        ({**base, "kid": "ka", "x5c": ["MIIB"]}, a),
        ({**base, "kid": "ka", "jwk": {"kty": "RSA"}}, b),
        ({**base, "kid": "ka", "x5u": "https://evil.test/c"}, a),
        ({"typ": "JWT", "kid": "ka"}, a),  # no alg
        ({"alg": "none", "kid": "ka"}, a),
        ({"alg": "HS256", "kid": "ka"}, a),
        ({"alg": "RS384", "kid": "ka"}, a),
        ({"alg": "rs256", "kid": "ka"}, a),
        ({"alg": ["RS256"], "kid": "ka"}, a),
        ({"alg": "", "kid": "ka"}, a),
    ]
    claim_sets = [
        _claims(now),
        _claims(now, aud=[AUD, "other"]),
        _claims(now, aud="api://other"),
        _claims(now, aud=[]),
        _claims(now, iss=ISS + "/"),
        _claims(now, exp=int(now) - 1000),
        _claims(now, exp=now + 1000.5),
        _claims(now, nbf=int(now) + 1000),
        _claims(now, iat=int(now) + 1000),
    ]
    tokens: list[str] = []
    for header, key in headers:
        tokens.append(make_token(claim_sets[0], key=key, header=header))
    for claims in claim_sets[1:]:
        tokens.append(make_token(claims, key=a, header={**base, "kid": "ka"}))
        tokens.append(make_token(claims, key=b, header={**base, "kid": "kb"}))
    return tokens


# Operation numbers for _mutate; re-signing (11) and signature padding (12) are weighted up so
# that plenty of mutated tokens are still valid and the "accept" verdict is exercised too.
OPS = (*range(11), 11, 11, 11, 12)


def _resigned(rng: random.Random) -> str:
    """A freshly signed token with randomly altered header and claims, JSON spelled variously;
    the choices lean towards valid so that both verdicts stay well represented."""
    now = int(NOW_FOR_POOL[0])

    def pick(good: Any, *bad: Any) -> Any:
        return good if rng.random() < 0.85 else rng.choice(bad)

    header: dict[str, Any] = {"alg": pick("RS256", "RS384", "none", "HS256", "rs256", "")}
    kid = pick(rng.choice(["ka", "kb"]), "kc", None, 1, "")
    if kid is not None:
        header["kid"] = kid
    header.update(
        rng.choice(
            [{}, {"typ": "JWT"}, {"typ": "at+jwt"}, {"jku": "https://evil.test"}, {"x5t": "abc"}]
        )
    )
    claims = _claims(
        now,
        exp=pick(rng.choice([now + 3600, now + 1000.5]), now - 1000, now - 1000.5),
        aud=pick(rng.choice([AUD, [AUD], ["x", AUD]]), "other", [], [AUD, 1], None),
        iss=pick(ISS, ISS + "/", ISS.upper(), None),
    )
    if rng.random() < 0.3:
        claims["nbf"] = pick(now - 1000, now + 1000)
    if rng.random() < 0.3:
        claims["iat"] = pick(now - 1000, now + 1000)
    separators = rng.choice([(",", ":"), (", ", ": ")])
    sort, ascii_only = rng.random() < 0.5, rng.random() < 0.5
    head = json.dumps(header, separators=separators, sort_keys=sort, ensure_ascii=ascii_only)
    body = json.dumps(claims, separators=separators, sort_keys=sort, ensure_ascii=ascii_only)
    signing_input = f"{b64(head.encode())}.{b64(body.encode())}"
    right = rsa_key("b") if kid == "kb" else rsa_key("a")
    key = pick(right, rsa_key("a"), rsa_key("b"))
    return f"{signing_input}.{b64(sign(signing_input.encode(), key, 'RS256'))}"


def _mutate(token: str, rng: random.Random, pool: list[str]) -> str:
    op = rng.choice(OPS)
    parts = token.split(".")
    if op == 0 and token:  # replace one character
        i = rng.randrange(len(token))
        c = rng.choice(ALPHABET + ODD)
        return token[:i] + c + token[i + 1 :]
    if op == 1 and token:  # delete one character
        i = rng.randrange(len(token))
        return token[:i] + token[i + 1 :]
    if op == 2:  # insert one character
        i = rng.randrange(len(token) + 1)
        return token[:i] + rng.choice(ALPHABET + ODD) + token[i:]
    if op == 3 and len(parts) >= 2:  # swap two segments
        i, j = rng.sample(range(len(parts)), 2)
        parts[i], parts[j] = parts[j], parts[i]
        return ".".join(parts)
    if op == 4:  # duplicate or drop a segment
        i = rng.randrange(len(parts))
        if rng.random() < 0.5:
            parts.insert(i, parts[i])
        elif len(parts) > 1:
            del parts[i]
        return ".".join(parts)
    if op == 5:  # add or strip padding
        i = rng.randrange(len(parts))
        if rng.random() < 0.6:
            parts[i] += "=" * rng.randint(1, 3)
        else:
            parts[i] = parts[i].rstrip("=")
        return ".".join(parts)
    if op == 6 and len(token) > 1:  # truncate
        return token[: rng.randrange(len(token))]
    if op == 7 and len(parts) == 3:  # a new header, not re-signed
        header = rng.choice(
            [
                {"alg": "RS256", "kid": "kb"},
                {"alg": "none", "kid": "ka"},
                {"alg": "HS256", "kid": "ka"},
                {"alg": "RS256"},
                {"alg": "RS256", "kid": "ka", "b64": True},
                [],
                "RS256",
            ]
        )
        parts[0] = b64json(header)
        return ".".join(parts)
    if op == 8 and len(parts) == 3:  # transplant a segment from another token
        other = rng.choice(pool).split(".")
        i = rng.randrange(3)
        parts[i] = other[i]
        return ".".join(parts)
    if op == 9 and token:  # change the case of a character
        i = rng.randrange(len(token))
        return token[:i] + token[i].swapcase() + token[i + 1 :]
    if op == 10 and len(parts) == 3:  # flip a bit in the last character of a segment
        i = rng.randrange(3)
        if parts[i]:
            last = parts[i][-1]
            if last in ALPHABET:
                parts[i] = parts[i][:-1] + ALPHABET[ALPHABET.index(last) ^ rng.choice([1, 2, 16])]
        return ".".join(parts)
    if op == 11:
        return _resigned(rng)
    if op == 12 and len(parts) == 3:  # canonical padding on the signature: still valid
        parts[2] += "=" * (-len(parts[2]) % 4)
        return ".".join(parts)
    return token


def _mutated_tokens(now: float, count: int) -> tuple[list[str], list[str]]:
    """The pool, and ``count`` distinct tokens each differing from the pool token it came
    from."""
    pool = _pool(now)
    rng = random.Random(20261128)
    seen: set[str] = set(pool)
    mutated: list[str] = []
    while len(mutated) < count:
        token = rng.choice(pool)
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            token = _mutate(token, rng, pool)
        if token not in seen:
            seen.add(token)
            mutated.append(token)
    return pool, mutated


@pytest.mark.parametrize(
    "count",
    [pytest.param(COUNT // 10, id="1000"), pytest.param(COUNT, id="10000", marks=pytest.mark.slow)],
)
def test_verdicts_equal_pyjwt_on_mutated_tokens(count: int) -> None:
    now = NOW_FOR_POOL[0]
    pool, mutated = _mutated_tokens(now, count)
    disagreements: list[tuple[int, bool, bool]] = []
    accepted = 0
    for i, token in enumerate(pool + mutated):
        mine, theirs = ours(token, now), pyjwts(token)
        if mine != theirs:
            disagreements.append((i, mine, theirs))
        accepted += mine
    assert disagreements == []
    assert len(mutated) == count
    # Both verdicts must be well represented, or the comparison proves little (at 10,000
    # tokens: at least 400 accepted and 5,000 refused).
    assert accepted >= 400 * count // COUNT
    assert len(pool) + count - accepted >= count // 2


def _raw_token(header: bytes, claims: bytes) -> str:
    from tests.support import b64, rsa_key, sign

    signing_input = f"{b64(header)}.{b64(claims)}"
    return f"{signing_input}.{b64(sign(signing_input.encode(), rsa_key('a'), 'RS256'))}"


def _raw_cases(now: float) -> list[tuple[str, bytes, bytes]]:
    good = (
        f'"aud":"api://calc","iss":"https://login.example/tenant/v2.0","exp":{int(now) + 3600},'
        f'"iat":{int(now) - 100},"azp":"client","tid":"tenant","ver":"2.0"'
    )
    header = b'{"alg":"RS256","kid":"ka"}'
    return [
        ("dup aud, good last", header, ('{"aud":"api://other",' + good + "}").encode()),
        ("dup aud, other last", header, ("{" + good + ',"aud":"api://other"}').encode()),
        ("dup iss, other last", header, ("{" + good + ',"iss":"https://evil/v2.0"}').encode()),
        ("dup exp, past last", header, ("{" + good + ',"exp":1}').encode()),
        ("dup exp, past first", header, ('{"exp":1,' + good + "}").encode()),
        (
            "dup alg, none last",
            b'{"alg":"RS256","kid":"ka","alg":"none"}',
            ("{" + good + "}").encode(),
        ),
        (
            "dup alg, RS256 last",
            b'{"alg":"none","kid":"ka","alg":"RS256"}',
            ("{" + good + "}").encode(),
        ),
        (
            "dup kid, unknown last",
            b'{"alg":"RS256","kid":"ka","kid":"kz"}',
            ("{" + good + "}").encode(),
        ),
        (
            "dup kid, good last",
            b'{"alg":"RS256","kid":"kz","kid":"ka"}',
            ("{" + good + "}").encode(),
        ),
        ("exp NaN", header, ("{" + good + ',"exp":NaN}').encode()),
        ("exp Infinity", header, ("{" + good + ',"exp":Infinity}').encode()),
        ("exp 1e400", header, ("{" + good + ',"exp":1e400}').encode()),
        ("claims BOM", header, b"\xef\xbb\xbf{" + good.encode() + b"}"),
        ("claims UTF-16", header, ("{" + good + "}").encode("utf-16-le")),
        (
            "header UTF-16",
            '{"alg":"RS256","kid":"ka"}'.encode("utf-16-le"),
            ("{" + good + "}").encode(),
        ),
        ("claims array", header, b"[{" + good.encode() + b"}]"),
        ("trailing garbage", header, ("{" + good + "}x").encode()),
        ("control good", header, ("{" + good + "}").encode()),
    ]


def test_duplicate_json_keys_and_json_oddities_get_pyjwts_verdict() -> None:
    # Our parse path and PyJWT must agree on which of two duplicate keys counts (the last),
    # so a token cannot mean one thing to ccflow and another to a PyJWT-based peer.
    import time

    from test_validation_parity import ours, pyjwts

    now = time.time()
    verdicts = {
        name: (ours(tok, now), pyjwts(tok))
        for name, h, c in _raw_cases(now)
        for tok in [_raw_token(h, c)]
    }
    assert all(a == b for a, b in verdicts.values()), verdicts
    assert verdicts["control good"] == (True, True)
    assert verdicts["dup aud, good last"] == (True, True)
    assert verdicts["dup alg, none last"] == (False, False)
