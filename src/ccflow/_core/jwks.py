"""JSON Web Key Sets: which keys are usable, which one a token picks, and when to refetch.

No IO and no clock: the faces in :mod:`ccflow.jwks` fetch documents and pass ``now`` in.

Usable keys (everything else in the document is skipped, never an error): ``kty`` ``RSA``
(at least 2048 bits) or ``EC`` (P-256/384/521), with a string ``kid``, not marked
``use: enc``, ``key_ops`` (if present) including ``verify``, and fitting at least one allowed
algorithm (the key's own ``alg`` when it names one).

The refetch policy (:class:`RefreshPolicy`, :func:`decide`) is a pure function of the cache
state, the wanted ``kid`` and ``now``:

- keys are fresh for ``ttl`` seconds after a successful fetch;
- an unknown ``kid`` triggers one refetch, at most once per ``cooldown`` seconds, so a key
  rotation is picked up quickly but a storm of made-up ``kid`` values costs one fetch;
- after a failed fetch, no new attempt for ``failure_backoff`` seconds (or the server's
  ``Retry-After``), and the old keys keep serving for up to ``max_stale`` seconds past their
  ``ttl``; until a fetch succeeds, a ``kid`` they do not hold is unavailable (503), not
  unknown (401), since the fetch that would tell failed.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ccflow._core.b64 import b64url_decode
from ccflow._core.json_object import json_object
from ccflow._core.jws import SUPPORTED_ALGORITHMS, PublicKey
from ccflow._core.numbers import is_seconds
from ccflow.errors import ConfigurationError

__all__ = [
    "MIN_RSA_BITS",
    "JWKSError",
    "KeyAction",
    "KeyCache",
    "KeySet",
    "RefreshPolicy",
    "SigningKey",
    "decide",
    "parse_jwks",
]

MIN_RSA_BITS: Final = 2048

_RSA_ALGS: Final = frozenset(a for a in SUPPORTED_ALGORITHMS if a[0] in "RP")
_EC_CURVES: Final[Mapping[str, tuple[ec.EllipticCurve, str]]] = {
    "P-256": (ec.SECP256R1(), "ES256"),
    "P-384": (ec.SECP384R1(), "ES384"),
    "P-521": (ec.SECP521R1(), "ES512"),
}


class JWKSError(ValueError):
    """A JWKS document that is not a JSON object with a ``keys`` list."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One usable verification key and the algorithms it may verify."""

    kid: str
    public_key: PublicKey = field(repr=False, compare=False)
    algorithms: frozenset[str]


@dataclass(frozen=True, slots=True)
class KeySet:
    """The usable keys of one JWKS document, by ``kid``."""

    keys: Mapping[str, SigningKey] = field(default_factory=dict)
    skipped: int = 0
    """How many entries of the document were not usable (for diagnostics)."""

    def get(self, kid: str) -> SigningKey | None:
        """The key with this ``kid``, or ``None``."""
        return self.keys.get(kid)


def _b64uint(value: object) -> int | None:
    """A base64url big-endian unsigned integer (``n``, ``e``), or ``None``."""
    if not isinstance(value, str) or not value:
        return None
    try:
        data = b64url_decode(value)
    except ValueError:
        return None
    return int.from_bytes(data, "big")


def _load_key(jwk: Mapping[str, Any], algorithms: frozenset[str]) -> SigningKey | None:
    """One JWK as a usable signing key, or ``None`` when it is not one."""
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        return None
    if jwk.get("use", "sig") != "sig":
        return None
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return None
    kty = jwk.get("kty")
    public_key: PublicKey
    if kty == "RSA":
        n, e = _b64uint(jwk.get("n")), _b64uint(jwk.get("e"))
        if n is None or e is None or n.bit_length() < MIN_RSA_BITS or e < 3 or e % 2 == 0:
            return None
        try:
            public_key = rsa.RSAPublicNumbers(e, n).public_key()
        except ValueError:
            return None
        fits = set(_RSA_ALGS)
    elif kty == "EC":
        crv = jwk.get("crv")
        # A list or object here would make the lookup itself raise (unhashable).
        curve_alg = _EC_CURVES.get(crv) if isinstance(crv, str) else None
        x, y = _b64uint(jwk.get("x")), _b64uint(jwk.get("y"))
        if curve_alg is None or x is None or y is None:
            return None
        try:
            public_key = ec.EllipticCurvePublicNumbers(x, y, curve_alg[0]).public_key()
        except ValueError:
            return None
        fits = {curve_alg[1]}
    else:
        return None
    alg = jwk.get("alg")
    if alg is not None:
        fits &= {alg} if isinstance(alg, str) else set()
    usable = frozenset(fits) & algorithms
    if not usable:
        return None
    return SigningKey(kid=kid, public_key=public_key, algorithms=usable)


def parse_jwks(document: bytes | str | Mapping[str, Any], *, algorithms: frozenset[str]) -> KeySet:
    """Parse a JWKS document into its usable keys. Raises :class:`JWKSError` only when the
    document itself is unusable; individual unusable keys are skipped and counted.

    When two usable keys share a ``kid`` the first one wins.
    """
    document = json_object(document, "the JWKS document", JWKSError)
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise JWKSError("the JWKS document has no 'keys' list")
    keys: dict[str, SigningKey] = {}
    skipped = 0
    for entry in entries:
        key = _load_key(entry, algorithms) if isinstance(entry, Mapping) else None
        if key is None or key.kid in keys:
            skipped += 1
            continue
        keys[key.kid] = key
    return KeySet(keys=keys, skipped=skipped)


@dataclass(frozen=True, slots=True)
class RefreshPolicy:
    """When to (re)fetch keys. All durations in seconds."""

    ttl: float = 3600.0
    """Keys are fresh this long after a successful fetch."""
    cooldown: float = 30.0
    """At most one refetch for an unknown ``kid`` per this many seconds."""
    failure_backoff: float = 5.0
    """No new attempt this long after a failed fetch (longer if the server said so)."""
    max_stale: float = 86400.0
    """Keys keep serving this long past ``ttl`` while refreshes fail."""

    def __post_init__(self) -> None:
        for name in ("ttl", "cooldown", "failure_backoff", "max_stale"):
            value = getattr(self, name)
            if not is_seconds(value) or value < 0:
                raise ConfigurationError(
                    f"{name} must be a non-negative number of seconds", setting=name
                )


class KeyAction(enum.Enum):
    """What to do for a wanted ``kid`` (see :func:`decide`)."""

    USE = "use"
    """The key is in the cache and may be used."""
    FETCH = "fetch"
    """Fetch the JWKS now, then look again with ``decide(..., may_fetch=False)``."""
    UNKNOWN = "unknown"
    """No such key and no fetch allowed now: reject the token (``reason="key"``)."""
    UNAVAILABLE = "unavailable"
    """No usable keys at all (cold start, or stale beyond ``max_stale``), or a ``kid`` that is
    not cached while the last fetch failed: answer 503."""


@dataclass(frozen=True, slots=True)
class KeyCache:
    """The state of one key cache; each transition returns a new value."""

    keys: KeySet | None = None
    fetched_at: float | None = None
    """When the last successful fetch happened."""
    attempted_at: float | None = None
    """When the last fetch attempt (successful or not) happened."""
    retry_at: float | None = None
    """After a failure: no attempt before this time."""

    def fetched(self, keys: KeySet, now: float) -> KeyCache:
        """The state after a successful fetch at ``now``."""
        return KeyCache(keys=keys, fetched_at=now, attempted_at=now, retry_at=None)

    def failed(
        self, now: float, policy: RefreshPolicy, retry_after: float | None = None
    ) -> KeyCache:
        """The state after a failed fetch at ``now`` (old keys kept)."""
        wait = policy.failure_backoff
        if retry_after is not None and math.isfinite(retry_after):
            # Honour the server's Retry-After, but never stop trying for more than the cooldown
            # window times ten: a wrong header must not lock an API out for hours.
            wait = min(max(wait, retry_after), max(policy.cooldown, 1.0) * 10)
        return replace(self, attempted_at=now, retry_at=now + wait)

    def fresh(self, now: float, policy: RefreshPolicy) -> bool:
        """Keys exist and are younger than ``ttl``."""
        return (
            self.keys is not None
            and self.fetched_at is not None
            and now - self.fetched_at < policy.ttl
        )

    def usable(self, now: float, policy: RefreshPolicy) -> bool:
        """Keys exist and are not older than ``ttl + max_stale``."""
        return (
            self.keys is not None
            and self.fetched_at is not None
            and now - self.fetched_at <= policy.ttl + policy.max_stale
        )

    def retry_after(self, now: float, policy: RefreshPolicy) -> int:
        """Whole seconds until a fetch may be attempted again (at least 1), for Retry-After."""
        until = self.retry_at if self.retry_at is not None else now + policy.failure_backoff
        if self.attempted_at is not None and self.fresh(now, policy):
            # Fresh keys: a kid they lack is refetched only once the cooldown since the last
            # attempt has passed (or the keys' ttl, if that comes first), whatever the backoff.
            assert self.fetched_at is not None
            until = max(
                until, min(self.attempted_at + policy.cooldown, self.fetched_at + policy.ttl)
            )
        return max(1, math.ceil(until - now))


def decide(
    state: KeyCache,
    kid: str,
    now: float,
    policy: RefreshPolicy,
    *,
    may_fetch: bool = True,
    fetching: bool = False,
) -> KeyAction:
    """Decide what to do for ``kid`` at ``now``. Pass ``may_fetch=False`` right after a fetch
    (or while another request's fetch is the one that counts) to get a final answer, and
    ``fetching=True`` while a fetch is in flight: a cached key that is still usable then
    serves at once instead of waiting for that fetch (an authority that hangs until the
    timeout must not stall requests it is not needed for).

    A ``now`` before the last attempt means the clock was stepped back (NTP): the backoff,
    cooldown and ttl measured from that attempt are over rather than stretched by the step
    (which kept an API answering 503, or 401 to a rotated key, for as long as the step); the
    fetch this allows records the new time, so it happens once per step."""
    stepped_back = state.attempted_at is not None and now < state.attempted_at
    if may_fetch and (stepped_back or not (state.retry_at is not None and now < state.retry_at)):
        if stepped_back or not state.fresh(now, policy):
            if (
                fetching
                and state.keys is not None
                and state.keys.get(kid) is not None
                and state.usable(now, policy)
            ):
                return KeyAction.USE
            return KeyAction.FETCH
        assert state.keys is not None
        if state.keys.get(kid) is not None:
            return KeyAction.USE
        if state.attempted_at is None or now - state.attempted_at >= policy.cooldown:
            return KeyAction.FETCH
        return _not_cached(state)
    if not state.usable(now, policy):
        return KeyAction.UNAVAILABLE
    assert state.keys is not None
    return KeyAction.USE if state.keys.get(kid) is not None else _not_cached(state)


def _not_cached(state: KeyCache) -> KeyAction:
    """A kid the keys lack: unknown, or unavailable after a failed fetch."""
    # After a failed fetch nobody knows whether this kid is real: not the token's fault.
    return KeyAction.UNAVAILABLE if state.retry_at is not None else KeyAction.UNKNOWN
