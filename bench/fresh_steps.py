"""Where a fresh token's cost goes: each step of the miss path, alone and in place.

For a token the validator has not seen, ``RequireRole`` takes a SHA-256 of it (the cache key,
which misses), parses it (split, header, base64url, JSON), checks the RS256 signature, checks
the claims and inserts the verdict into the verified-token cache. This bench measures each of
those steps two ways:

- tight loop: the step's own function, called over pre-made inputs (a different token each
  call), best of ROUNDS;
- in place: the calc API (``examples.calc_api``, ``bench/middleware.py``'s driver) with fresh
  tokens, against a copy of it in which that one step is replaced by a lookup of its result,
  computed before the clock starts. The difference is what the step costs inside a real
  request. Every variant takes its turn in every round (interleaved) and the best round of
  each counts, as in ``bench/middleware.py``; a few microseconds are this kind of measurement's
  noise, so read the column to about +-3 us.

    .venv/bin/python bench/fresh_steps.py
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from middleware import ASGIApp, calc_validator, drive, each

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.calc_api.app import create_app

from ccflow import TokenValidator, ValidatedToken, validation
from ccflow._core.jwt import ParsedToken
from ccflow.authority import Authority

ROUNDS = 6
REQUESTS = 1000  # per round per variant
STEPS = ("RSA check", "parse", "claim checks", "SHA-256 cache key", "cache insert")
_real = {
    "parse_ascii": validation.parse_ascii,
    "verify_signature": validation.verify_signature,
    "check_claims": validation.check_claims,
    "_sha256": validation._sha256,
}


class _NoInsert(dict[bytes, ValidatedToken]):
    """A verified-token cache that keeps nothing (its mirror stays empty: every probe misses)."""

    def __setitem__(self, key: bytes, value: ValidatedToken) -> None:
        pass


class _Cheap:
    """A stand-in for hashlib's object: the token's last 32 bytes (its signature's end)."""

    __slots__ = ("_d",)

    def __init__(self, data: bytes) -> None:
        self._d = data[-32:]

    def digest(self) -> bytes:
        return self._d


def _patch(step: str | None, validator: TokenValidator, tokens: list[bytes]) -> None:
    """Restore the real steps, then replace ``step`` by a lookup over ``tokens``."""
    for name, function in _real.items():
        setattr(validation, name, function)
    if step == "parse":
        parsed = {t[-32:]: _real["parse_ascii"](t, validator._algorithms) for t in tokens}
        validation.parse_ascii = lambda raw, algorithms: parsed[raw[-32:]]  # type: ignore[assignment]
    elif step == "RSA check":
        validation.verify_signature = lambda parsed, key: None  # type: ignore[assignment]
    elif step == "claim checks":
        rules = validator._rules
        verdicts = {}
        for t in tokens:
            claims = _real["parse_ascii"](t, validator._algorithms).claims
            verdicts[claims["uti"]] = _real["check_claims"](
                claims, rules, now=time.time(), owned=True
            )
        validation.check_claims = lambda claims, rules, now, owned: verdicts[claims["uti"]]  # type: ignore[assignment]
    elif step == "SHA-256 cache key":
        validation._sha256 = _Cheap  # type: ignore[assignment]


def _tight(function: Callable[[Any], object], inputs: list[Any]) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for item in inputs:
            function(item)
        best = min(best, (time.perf_counter() - start) / len(inputs))
    return best


async def main() -> None:
    authority = Authority()
    http = httpx.AsyncClient(transport=authority.transport())

    # Tight loops over 2000 distinct tokens.
    validator = calc_validator(authority, http)
    await validator.validate(authority.mint())  # keys and issuer rules
    raws = [authority.mint().encode() for _ in range(2000)]
    algorithms = validator._algorithms
    parsed: list[ParsedToken] = [_real["parse_ascii"](raw, algorithms) for raw in raws]
    key = validator._keys.ready(parsed[0].kid)
    assert key is not None
    rules = validator._rules
    assert rules is not None
    now = time.time()
    verdicts = [_real["check_claims"](dict(p.claims), rules, now=now, owned=True) for p in parsed]
    digests = [hashlib.sha256(raw).digest() for raw in raws]
    sha = hashlib.sha256

    def insert_all(pairs: Iterator[tuple[bytes, ValidatedToken]]) -> None:
        cache = validation._VerifiedTokens(len(raws) // 2)  # full after half: evictions
        for digest, verdict in pairs:
            cache[digest] = verdict

    pairs = list(zip(digests, verdicts, strict=True))
    start = time.perf_counter()
    insert_all(iter(pairs))
    insert = (time.perf_counter() - start) / len(pairs)
    tight = {
        "RSA check": _tight(lambda p: _real["verify_signature"](p, key.public_key), parsed),
        "parse": _tight(lambda raw: _real["parse_ascii"](raw, algorithms), raws),
        "claim checks": _tight(
            lambda p: _real["check_claims"](p.claims, rules, now=now, owned=True), parsed
        ),
        "SHA-256 cache key": _tight(lambda raw: sha(raw).digest(), raws),
        "cache insert": insert,
    }
    await validator.aclose()

    # In place: one calc API per variant, each with its own validator.
    variants: dict[str, tuple[TokenValidator, ASGIApp]] = {}
    for name in ("real", *STEPS):
        v = calc_validator(authority, http)
        await v.validate(authority.mint())
        if name == "cache insert":
            v._cache = _NoInsert()  # type: ignore[assignment]
            v._entries = _NoInsert()  # type: ignore[assignment]
        variants[name] = (v, create_app(v))
    for name, (v, app) in variants.items():
        tokens = [authority.mint() for _ in range(200)]
        _patch(None if name == "real" else name, v, [t.encode() for t in tokens])
        await drive(app, each(tokens))  # warm up
    best = {name: float("inf") for name in variants}
    for _ in range(ROUNDS):
        for name, (v, app) in variants.items():
            tokens = [authority.mint() for _ in range(REQUESTS)]
            _patch(None if name == "real" else name, v, [t.encode() for t in tokens])
            best[name] = min(best[name], await drive(app, each(tokens)))
    _patch(None, validator, [])
    await http.aclose()

    print(f"fresh token through the calc API: {best['real'] * 1e6:.1f} us per request")
    print(f"{'step':<22} {'tight loop':>11} {'in place':>9}")
    for step in STEPS:
        in_place = best["real"] - best[step]
        print(f"{step:<22} {tight[step] * 1e6:>8.1f} us {in_place * 1e6:>6.1f} us")


if __name__ == "__main__":
    asyncio.run(main())
