"""A token cache shared between processes (Redis, a file), without the IO: keys, the entry
format, the single-flight decisions and when to try a store that failed.

The faces (:mod:`ccflow.redis`, :mod:`ccflow._token_cache`) read and write bytes; every rule
about what those bytes may contain and what to do next is here, with ``now`` passed in:

- :func:`shared_key` names a token by endpoint (which holds the tenant), client id and
  normalised scopes, hashed so no secret and no scope list is readable in a key listing;
- :func:`encode_entry` / :func:`decode_entry` write and read one entry; anything else (another
  version's format, another key's entry, a value that fails to decrypt) reads as ``None``;
- :func:`fill_flow` is the single flight between processes, as steps the face performs
  (read, lock, wait, fetch, store), in the shape of :func:`ccflow._core.flow.fetch_flow`;
- :class:`Outage` says when a store that failed is tried again and when to log.

::

    >>> key = shared_key("https://idp.example/token", "client", ("api://x/.default",))
    >>> key.startswith("ccflow:v1:token:"), lock_key(key).endswith(":lock")
    (True, True)
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from ccflow._core.cache import CacheEntry
from ccflow._core.tokens import AccessToken

__all__ = [
    "ENTRY_PREFIX",
    "KEY_PREFIX",
    "Fetch",
    "FillStep",
    "Lock",
    "Outage",
    "Read",
    "Store",
    "Wait",
    "decode_entry",
    "encode_entry",
    "entry_ttl_ms",
    "fill_flow",
    "lock_key",
    "shared_key",
    "usable",
]

KEY_PREFIX = "ccflow:v1:token:"
"""Every key this version writes starts so; a new entry format gets a new prefix."""
ENTRY_PREFIX = b"ccflow-entry-v1:"
"""Every value this version writes starts so (plain JSON or a Fernet token follows)."""

Cipher = Callable[[bytes], bytes]


def shared_key(token_endpoint: str, client_id: str, scopes: tuple[str, ...]) -> str:
    """The store key of one client's token for ``scopes`` at ``token_endpoint``."""
    material = json.dumps([token_endpoint, client_id, sorted(scopes)], separators=(",", ":"))
    return KEY_PREFIX + hashlib.sha256(material.encode()).hexdigest()


def lock_key(key: str) -> str:
    """The key of the single-flight lock for ``key``."""
    return key + ":lock"


def encode_entry(key: str, entry: CacheEntry, encrypt: Cipher | None = None) -> bytes:
    """``entry`` as the bytes stored under ``key`` (encrypted and authenticated when
    ``encrypt`` is given). The key is inside, so an entry copied to another key is refused."""
    token = entry.token
    body = json.dumps(
        {
            "key": key,
            "token": token.token,
            "token_type": token.token_type,
            "expires_on": token.expires_on,
            "refresh_at": entry.refresh_at,
            "scopes": list(token.scopes),
        },
        separators=(",", ":"),
    ).encode()
    return ENTRY_PREFIX + (encrypt(body) if encrypt is not None else body)


def decode_entry(key: str, raw: object, decrypt: Cipher | None = None) -> CacheEntry | None:
    """The entry in ``raw`` if it is one this version wrote for ``key``; else ``None``.

    ``decrypt`` raises on a value it did not encrypt (a foreign key, a plain entry, bit rot):
    that reads as ``None`` too, as does a plain entry when a key is configured.
    """
    if not isinstance(raw, bytes) or not raw.startswith(ENTRY_PREFIX):
        return None
    body = raw[len(ENTRY_PREFIX) :]
    if decrypt is not None:
        try:
            body = decrypt(body)
        except Exception:
            return None
    try:
        fields = json.loads(body)
    except ValueError:
        return None
    return _entry_from(key, fields)


def _entry_from(key: str, fields: Any) -> CacheEntry | None:
    """The entry described by decoded JSON ``fields``, checked field by field."""
    if not isinstance(fields, dict) or fields.get("key") != key:
        return None
    token, token_type = fields.get("token"), fields.get("token_type")
    expires_on, refresh_at = fields.get("expires_on"), fields.get("refresh_at")
    scopes = fields.get("scopes")
    if not (isinstance(token, str) and token and isinstance(token_type, str)):
        return None
    if not isinstance(expires_on, int) or isinstance(expires_on, bool):
        return None
    if not isinstance(refresh_at, int | float) or isinstance(refresh_at, bool):
        return None
    if not (math.isfinite(refresh_at) and refresh_at <= expires_on):
        return None
    if not (isinstance(scopes, list) and all(isinstance(s, str) for s in scopes)):
        return None
    access = AccessToken(token, expires_on, token_type=token_type, scopes=tuple(scopes))
    return CacheEntry(access, float(refresh_at))


def entry_ttl_ms(entry: CacheEntry, now: float) -> int | None:
    """How long the store keeps ``entry``: until its token stops being usable (``None``: it
    already has, so it is not stored)."""
    ms = math.floor((entry.token.expires_on - now) * 1000)
    return ms if ms > 0 else None


@dataclass(frozen=True, slots=True)
class Read:
    """Step: read the entry (reply: the decoded entry or ``None``)."""


@dataclass(frozen=True, slots=True)
class Lock:
    """Step: ``SET lock NX PX`` (reply: ``(taken, monotonic now)``)."""


@dataclass(frozen=True, slots=True)
class Wait:
    """Step: sleep ``seconds`` (reply: monotonic now)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Fetch:
    """Step: ask the authority (reply: the fetched entry; its errors propagate)."""


@dataclass(frozen=True, slots=True)
class Store:
    """Step: write ``entry`` for every process (reply: ``None``; a failure is not fatal)."""

    entry: CacheEntry


FillStep = Read | Lock | Wait | Fetch | Store


def usable(entry: CacheEntry | None, now: float, refused: AccessToken | None = None) -> bool:
    """Whether ``entry`` may be served without fetching: fresh at ``now`` (the reader's clock)
    and not the token an API just refused."""
    if entry is None or now >= entry.refresh_at:
        return False
    return refused is None or entry.token.token != refused.token


def fill_flow(
    now: float, deadline: float, poll: float, refused: AccessToken | None = None
) -> Generator[FillStep, Any, CacheEntry]:
    """A fleet's single flight for one key, seen from one process; returns the entry to serve.

    Read; a usable entry is served. Otherwise take the lock: the holder reads once more (the
    previous holder may have stored just before releasing), fetches and stores; the face
    releases the lock (compare-and-delete) whatever happens. A process that finds the lock
    taken reads again every ``poll`` seconds until ``deadline`` (monotonic), then fetches
    alone. A holder that died leaves a lock that expires in the store, after which a waiter's
    ``Lock`` succeeds: that is the take-over. ``now`` is the token clock, for freshness.
    """
    while True:
        found = yield Read()
        if usable(found, now, refused):
            return found  # type: ignore[no-any-return]
        taken, at = yield Lock()
        if taken:
            found = yield Read()
            if usable(found, now, refused):
                return found  # type: ignore[no-any-return]
            break
        if at >= deadline:
            break
        yield Wait(poll)
    entry: CacheEntry = yield Fetch()
    yield Store(entry)
    return entry


@dataclass(slots=True)
class Outage:
    """When a store that failed is asked again, and which failures and recoveries to log.

    After a failure the store is skipped for ``retry_after`` seconds (callers fetch directly
    meanwhile, at no extra wait); one warning per outage, one line when it answers again.
    """

    retry_after: float = 5.0
    down_since: float | None = None
    next_try: float = 0.0

    def should_try(self, at: float) -> bool:
        """Whether to ask the store at monotonic time ``at``."""
        return self.down_since is None or at >= self.next_try

    def failed(self, at: float) -> bool:
        """Record a failure; ``True`` when it starts an outage (log a warning)."""
        starts = self.down_since is None
        if starts:
            self.down_since = at
        self.next_try = at + self.retry_after
        return starts

    def answered(self) -> bool:
        """Record an answer; ``True`` when it ends an outage (log the recovery)."""
        ended = self.down_since is not None
        self.down_since = None
        return ended
