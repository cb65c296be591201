"""A token cache a fleet shares on Redis: one token request per scopes per token lifetime,
however many processes ask. Needs the ``redis`` extra (``pip install 'ccflow-oauth[redis]'``)::

    from ccflow.redis import RedisTokenCache

    client = TokenClient(..., cache=RedisTokenCache("rediss://cache.internal:6380/0"))

Each process keeps its tokens in memory in front (a hit does no IO); Redis is asked only on a
local miss or refresh. On a shared miss one process takes a lock (``SET NX PX`` with a random
value, released by compare-and-delete), fetches and stores; the others poll for its entry, and
take over when the lock expires. Entries expire in Redis when their token stops being usable.
With ``encryption_key=`` (or ``CCFLOW_TOKEN_CACHE_KEY``) entries are Fernet-encrypted and
authenticated. Redis down, slow or answering garbage never fails a caller: one WARNING per
outage, tokens are fetched directly, Redis is used again once it answers. See
``docs/scaling.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio
from cryptography.fernet import Fernet, MultiFernet
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

import redis
from ccflow._config import CACHE_VARIABLES
from ccflow._core.cache import CacheEntry
from ccflow._core.numbers import is_seconds
from ccflow._core.shared_cache import (
    Fetch,
    FillStep,
    Lock,
    Outage,
    Read,
    Store,
    decode_entry,
    encode_entry,
    entry_ttl_ms,
    fill_flow,
    lock_key,
)
from ccflow._core.steps import Done, advance
from ccflow._core.tokens import AccessToken
from ccflow._token_cache import MemoryTokenCache, TokenKey
from ccflow.errors import ConfigurationError

__all__ = ["RedisTokenCache"]

logger = logging.getLogger("ccflow")

# Deletes KEYS[1] only while it still holds ARGV[1]: a lock this process took, an entry it read.
_COMPARE_AND_DELETE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


class _Unavailable(Exception):
    """Redis did not answer usefully (down, slow, not Redis)."""


@dataclass(slots=True)
class _Fill:
    """One refill as a face performs it: the entry's name, the core's flow, this process's
    lock value, whether it holds the lock, and the entry it fetched (if it did)."""

    name: str
    flow: Generator[FillStep, Any, CacheEntry] = field(repr=False)
    lock_value: str = field(repr=False)  # releases the lock: never in a repr
    locked: bool = False
    fetched: CacheEntry | None = None


class RedisTokenCache:
    """A :class:`ccflow.TokenCache` (and :class:`ccflow.AsyncTokenCache`) on Redis.

    ``url``: ``redis://``, ``rediss://`` (TLS) or ``unix://``, with an ACL user and password
    in it if the server wants them. ``encryption_key``: one or more Fernet keys, comma
    separated (the first encrypts, all decrypt); ``None`` reads ``CCFLOW_TOKEN_CACHE_KEY``,
    and without either, entries are stored in clear. ``lock_timeout``: how long a fetch may
    hold the lock before another process takes over (s); ``wait_timeout``: how long a process
    waits for another's fetch before fetching itself; ``poll_interval``: how often it looks;
    ``socket_timeout``: the longest a Redis call may take; ``retry_after``: how long Redis is
    left alone after it failed. One instance may serve many clients, sync and async.
    """

    def __init__(
        self,
        url: str,
        *,
        encryption_key: str | bytes | None = None,
        lock_timeout: float = 10.0,
        wait_timeout: float = 10.0,
        poll_interval: float = 0.05,
        socket_timeout: float = 1.0,
        retry_after: float = 5.0,
    ) -> None:
        for name, value in (
            ("lock_timeout", lock_timeout),
            ("wait_timeout", wait_timeout),
            ("poll_interval", poll_interval),
            ("socket_timeout", socket_timeout),
            ("retry_after", retry_after),
        ):
            if not is_seconds(value) or value <= 0:
                raise ConfigurationError(f"{name} must be seconds > 0", setting=name)
        options: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_timeout,
        }
        try:
            # No retries inside redis-py: a failure is handled here, at once.
            self._sync = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **options)
            self._async = redis.asyncio.Redis.from_url(
                url, retry=AsyncRetry(NoBackoff(), 0), **options
            )
        except ValueError:
            # redis-py's message may quote part of the password: never repeat it.
            raise ConfigurationError(
                "url is not a Redis URL (redis://, rediss:// or unix://; percent-encode"
                " / # ? @ in a password)",
                setting="url",
            ) from None
        self._host = _describe(self._sync)
        self._fernet = _fernet(encryption_key)
        self._compare_and_delete = self._sync.register_script(_COMPARE_AND_DELETE)
        self._acompare_and_delete = self._async.register_script(_COMPARE_AND_DELETE)
        self.lock_timeout = float(lock_timeout)
        self.wait_timeout = float(wait_timeout)
        self.poll_interval = float(poll_interval)
        self._memory = MemoryTokenCache()
        self._outage = Outage(retry_after=float(retry_after))
        self._outage_lock = threading.Lock()
        # Tokens an API refused here: never taken back from Redis (a removal may be in flight).
        self._refused: dict[TokenKey, AccessToken] = {}

    def __repr__(self) -> str:
        encrypted = self._fernet is not None
        return f"RedisTokenCache(server={self._host!r}, encrypted={encrypted})"

    def __len__(self) -> int:
        """How many tokens this process holds in memory."""
        return len(self._memory)

    # -- the local level --

    def get(self, key: TokenKey) -> CacheEntry | None:
        """The entry held in this process."""
        return self._memory.get(key)

    def put(self, key: TokenKey, entry: CacheEntry, now: float) -> None:
        """Hold ``entry`` in this process."""
        self._memory.put(key, entry, now)
        if self._refused.get(key) not in (None, entry.token):
            self._refused.pop(key, None)

    def discard(self, key: TokenKey, token: AccessToken) -> None:
        """Forget ``token`` in this process, and never take it back from Redis."""
        self._memory.discard(key, token)
        self._refused[key] = token

    # -- sync face --

    def refill(self, key: TokenKey, now: float, fetch: Callable[[], CacheEntry]) -> CacheEntry:
        """Another process's entry for ``key``, or ``fetch()``'s, shared (see the module)."""
        if not self._should_try():
            return fetch()
        fill = self._fill(key, now)
        reply: Any = None
        try:
            while not isinstance(step := advance(fill.flow, reply), Done):
                if isinstance(step, Read):
                    reply = self._read(fill.name)
                elif isinstance(step, Lock):
                    fill.locked = self._lock(fill.name, fill.lock_value)
                    reply = (fill.locked, time.monotonic())
                elif isinstance(step, Fetch):
                    reply = fill.fetched = fetch()
                elif isinstance(step, Store):
                    self._quietly(self._store, fill.name, step.entry, now)
                    reply = None
                else:
                    time.sleep(step.seconds)
                    reply = time.monotonic()
        except _Unavailable:
            return fill.fetched if fill.fetched is not None else fetch()
        finally:
            if fill.locked:
                self._quietly(self._release, lock_key(fill.name), fill.lock_value)
        return step.value

    def forget(self, key: TokenKey, token: AccessToken) -> None:
        """Remove ``token``'s entry from Redis (kept if another token replaced it)."""
        if self._should_try():
            self._quietly(self._remove, key.shared(), token)

    # -- asyncio face --

    async def aforget(self, key: TokenKey, token: AccessToken) -> None:
        """Remove ``token``'s entry from Redis (kept if another token replaced it)."""
        if self._should_try():
            await self._aquietly(self._aremove(key.shared(), token))

    async def arefill(
        self, key: TokenKey, now: float, fetch: Callable[[], Awaitable[CacheEntry]]
    ) -> CacheEntry:
        """See :meth:`refill`."""
        if not self._should_try():
            return await fetch()
        fill = self._fill(key, now)
        reply: Any = None
        try:
            while not isinstance(step := advance(fill.flow, reply), Done):
                if isinstance(step, Read):
                    reply = await self._guard(self._aread(fill.name))
                elif isinstance(step, Lock):
                    fill.locked = await self._guard(self._alock(fill.name, fill.lock_value))
                    reply = (fill.locked, time.monotonic())
                elif isinstance(step, Fetch):
                    reply = fill.fetched = await fetch()
                elif isinstance(step, Store):
                    await self._aquietly(self._astore(fill.name, step.entry, now))
                    reply = None
                else:
                    await asyncio.sleep(step.seconds)
                    reply = time.monotonic()
        except _Unavailable:
            return fill.fetched if fill.fetched is not None else await fetch()
        finally:
            if fill.locked:
                await self._aquietly(self._arelease(lock_key(fill.name), fill.lock_value))
        return step.value

    async def aclose(self) -> None:
        """Close the asyncio connections (the sync ones close with ``close``)."""
        await self._async.aclose()

    def close(self) -> None:
        """Close the sync connections."""
        self._sync.close()

    # -- helpers --

    def _fill(self, key: TokenKey, now: float) -> _Fill:
        """A refill of ``key``: the core's single flight for it, and a new lock value."""
        deadline = time.monotonic() + self.wait_timeout
        flow = fill_flow(now, deadline, self.poll_interval, self._refused.get(key))
        return _Fill(key.shared(), flow, secrets.token_hex(16))

    def _decode(self, name: str, raw: object) -> CacheEntry | None:
        """The entry in ``raw``; a foreign or corrupt one reads as missing (and is replaced)."""
        decrypt = self._fernet.decrypt if self._fernet is not None else None
        return decode_entry(name, raw, decrypt)

    def _encode(self, name: str, entry: CacheEntry) -> bytes:
        """``entry`` as stored (encrypted when a key is configured)."""
        return encode_entry(name, entry, self._fernet.encrypt if self._fernet else None)

    def _get(self, name: str) -> object:
        """GET ``name``'s raw value; a key of another type reads as missing."""
        try:
            return self._call(self._sync.get, name)
        except _WrongType:
            return None

    async def _aget(self, name: str) -> object:
        """GET ``name``'s raw value, awaited; a key of another type reads as missing."""
        try:
            return await self._async.get(name)
        except redis.ResponseError as exc:
            if _wrong_type(exc):
                return None
            raise

    def _read(self, name: str) -> CacheEntry | None:
        """GET the entry."""
        return self._decode(name, self._get(name))

    async def _aread(self, name: str) -> CacheEntry | None:
        """GET the entry, awaited."""
        return self._decode(name, await self._aget(name))

    def _lock(self, name: str, value: str) -> bool:
        """``SET lock value NX PX lock_timeout``: whether this process now holds it."""
        ms = int(self.lock_timeout * 1000)
        return bool(self._call(self._sync.set, lock_key(name), value, nx=True, px=ms))

    async def _alock(self, name: str, value: str) -> bool:
        """``SET lock value NX PX``, awaited."""
        ms = int(self.lock_timeout * 1000)
        return bool(await self._async.set(lock_key(name), value, nx=True, px=ms))

    def _store(self, name: str, entry: CacheEntry, now: float) -> None:
        """SET the entry until its token expires (``now``: the token clock that dated it, so
        the TTL is right however far that clock is from Redis's)."""
        ttl = entry_ttl_ms(entry, now)
        if ttl is not None:
            self._call(self._sync.set, name, self._encode(name, entry), px=ttl)

    async def _astore(self, name: str, entry: CacheEntry, now: float) -> None:
        """SET the entry, awaited."""
        ttl = entry_ttl_ms(entry, now)
        if ttl is not None:
            await self._async.set(name, self._encode(name, entry), px=ttl)

    def _release(self, lock: str, value: str) -> None:
        """Delete the lock if this process still holds it."""
        self._call(self._compare_and_delete, keys=[lock], args=[value])

    async def _arelease(self, lock: str, value: str) -> None:
        """Delete the lock if this process still holds it, awaited."""
        await self._acompare_and_delete(keys=[lock], args=[value])

    def _remove(self, name: str, token: AccessToken) -> None:
        """Delete the entry while it still holds ``token``."""
        raw = self._get(name)
        found = self._decode(name, raw)
        if found is not None and found.token.token == token.token:
            self._call(self._compare_and_delete, keys=[name], args=[raw])

    async def _aremove(self, name: str, token: AccessToken) -> None:
        """Delete the entry while it still holds ``token``, awaited."""
        raw = await self._aget(name)
        found = self._decode(name, raw)
        if found is not None and found.token.token == token.token:
            assert isinstance(raw, bytes)  # decoded, so bytes
            await self._acompare_and_delete(keys=[name], args=[raw])

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One Redis call; any failure becomes ``_Unavailable`` (and starts an outage)."""
        try:
            result = method(*args, **kwargs)
        except redis.ResponseError as exc:
            if _wrong_type(exc):
                raise _WrongType from None
            self._failed(exc)
            raise _Unavailable from None
        except Exception as exc:
            self._failed(exc)
            raise _Unavailable from None
        self._answered()
        return result

    async def _guard(self, call: Awaitable[Any]) -> Any:
        """An awaited Redis call; any failure becomes ``_Unavailable``."""
        try:
            result = await call
        except Exception as exc:
            self._failed(exc)
            raise _Unavailable from None
        self._answered()
        return result

    def _quietly(self, method: Callable[..., Any], *args: Any) -> None:
        """A Redis call whose failure only counts toward the outage."""
        with contextlib.suppress(_Unavailable, _WrongType):
            method(*args)

    async def _aquietly(self, call: Awaitable[Any]) -> None:
        """An awaited Redis call whose failure only counts toward the outage."""
        with contextlib.suppress(_Unavailable):
            await self._guard(call)

    def _should_try(self) -> bool:
        """Whether Redis is asked now (after a failure it is left alone for a while)."""
        with self._outage_lock:
            return self._outage.should_try(time.monotonic())

    def _failed(self, exc: BaseException) -> None:
        """Count a failure; the first of an outage is logged (type only: URLs hold passwords)."""
        with self._outage_lock:
            starts = self._outage.failed(time.monotonic())
        if starts:
            logger.warning(
                "token cache %s unavailable (%s); fetching tokens directly until it answers",
                self._host,
                type(exc).__name__,
            )

    def _answered(self) -> None:
        """Count an answer; the end of an outage is logged."""
        with self._outage_lock:
            ended = self._outage.answered()
        if ended:
            logger.info("token cache %s answers again", self._host)


class _WrongType(Exception):
    """The key holds another Redis type: treated as a missing entry, overwritten by SET."""


def _wrong_type(exc: redis.ResponseError) -> bool:
    """Whether Redis refused a command because the key holds another type."""
    return "WRONGTYPE" in str(exc)


def _fernet(given: str | bytes | None) -> MultiFernet | None:
    """The cipher for ``given`` (else ``CCFLOW_TOKEN_CACHE_KEY``); ``None``: entries in clear."""
    if given is None:
        given = os.environ.get(CACHE_VARIABLES["encryption_key"], "").strip() or None
        if given is None:
            return None
    text = given.decode() if isinstance(given, bytes) else given
    try:
        return MultiFernet([Fernet(k.strip()) for k in text.split(",") if k.strip()])
    except (ValueError, TypeError):
        raise ConfigurationError(
            "encryption_key must be one or more Fernet keys, comma separated (make one with "
            "`python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'`)",
            setting="encryption_key",
        ) from None


def _describe(client: redis.Redis) -> str:
    """``host:port/db`` or the socket path, for logs (never the password)."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return str(kwargs["path"])
    return f"{kwargs.get('host')}:{kwargs.get('port')}/{kwargs.get('db', 0)}"
