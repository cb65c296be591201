"""Where a token client keeps its tokens: the :class:`TokenCache` protocol, the in-memory cache
every client has by default, and :class:`FileTokenCache` for short-lived processes (the CLI).

A cache has two levels. The local one (``get``/``put``/``discard``) is asked on every
``get_token()`` and does no IO. The shared one is asked only by the one thread (or task) of a
process that found no fresh local token: ``refill`` returns a token another process stored,
or calls ``fetch`` (the client's POST) and shares what it returns. Redis is in
:mod:`ccflow.redis`; writing another store (a database, memcached) means writing ``refill``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import stat
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import NamedTuple, Protocol

from ccflow._core.cache import CacheEntry
from ccflow._core.shared_cache import decode_entry, encode_entry, shared_key, usable
from ccflow._core.tokens import AccessToken

__all__ = [
    "DEFAULT_MAX_ENTRIES",
    "AsyncTokenCache",
    "CacheEntry",
    "FileTokenCache",
    "LocalLevel",
    "MemoryTokenCache",
    "TokenCache",
    "TokenKey",
    "default_cache_path",
]

logger = logging.getLogger("ccflow")

DEFAULT_MAX_ENTRIES = 1024
"""Cached tokens (one per distinct key) beyond which expired ones are swept out."""


class TokenKey(NamedTuple):
    """What a cached token is for: one client at one token endpoint (which names the tenant),
    and the normalised scopes. Holds no secret. (A named tuple: one is built per
    ``get_token()``, cheaply.)"""

    token_endpoint: str
    client_id: str
    scopes: tuple[str, ...]

    def shared(self) -> str:
        """The key in a shared store: versioned and hashed (see ccflow._core.shared_cache)."""
        return shared_key(self.token_endpoint, self.client_id, self.scopes)


class LocalLevel(Protocol):
    """The level of a cache in this process, shared by both protocols: called under a
    client's lock and on every ``get_token()``, it must not block."""

    def get(self, key: TokenKey) -> CacheEntry | None:
        """The entry held in this process, if any."""
        ...

    def put(self, key: TokenKey, entry: CacheEntry, now: float) -> None:
        """Hold ``entry`` in this process (``now``: the client's clock)."""
        ...

    def discard(self, key: TokenKey, token: AccessToken) -> None:
        """Forget ``token`` (an API refused it) in this process, unless a newer one replaced
        it; a shared level must not hand it back either."""
        ...


class TokenCache(LocalLevel, Protocol):
    """A token cache for :class:`ccflow.TokenClient` (``cache=``).

    ``get``, ``put`` and ``discard`` are the local level. ``refill`` is called on a local miss
    or refresh by one thread per key and may do IO; it returns an entry usable at ``now`` from
    the shared level, or ``fetch()``'s, which it shares. Exceptions from ``fetch`` must
    propagate. ``forget`` removes a refused token from the shared level.
    """

    def forget(self, key: TokenKey, token: AccessToken) -> None:
        """Remove ``token`` from the shared level (kept if another token replaced it)."""
        ...

    def refill(self, key: TokenKey, now: float, fetch: Callable[[], CacheEntry]) -> CacheEntry:
        """A usable entry for ``key``: a shared one, or ``fetch()``'s, then shared."""
        ...


class AsyncTokenCache(LocalLevel, Protocol):
    """The asyncio form of :class:`TokenCache`, for :class:`ccflow.AsyncTokenClient`: the
    same local level, and ``arefill``/``aforget`` awaited."""

    async def aforget(self, key: TokenKey, token: AccessToken) -> None:
        """See :meth:`TokenCache.forget`."""
        ...

    async def arefill(
        self, key: TokenKey, now: float, fetch: Callable[[], Awaitable[CacheEntry]]
    ) -> CacheEntry:
        """See :meth:`TokenCache.refill`."""
        ...


class MemoryTokenCache:
    """The cache of one process, the default: a dict with a bound on expired entries.

    Once ``max_entries`` tokens are held, storing a new key first sweeps out the expired ones
    (valid tokens are always kept). ``len(cache)`` is how many are held::

        cache = MemoryTokenCache()
        client = TokenClient(..., cache=cache)
        client.get_token("api://calc-api")
        assert len(cache) == 1
    """

    def __init__(self, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: dict[TokenKey, CacheEntry] = {}
        self._lock = threading.Lock()  # one cache may serve several clients and threads

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"MemoryTokenCache(entries={len(self)}, max_entries={self.max_entries})"

    def get(self, key: TokenKey) -> CacheEntry | None:
        """The entry for ``key``, if held."""
        return self._entries.get(key)

    def put(self, key: TokenKey, entry: CacheEntry, now: float) -> None:
        """Hold ``entry``, first sweeping out expired tokens once ``max_entries`` are held."""
        with self._lock:
            entries = self._entries
            if len(entries) >= self.max_entries and key not in entries:
                for old in [k for k, e in entries.items() if e.token.expires_on <= now]:
                    del entries[old]
            entries[key] = entry

    def discard(self, key: TokenKey, token: AccessToken) -> None:
        """Forget ``token`` unless a newer one replaced it."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.token == token:
                del self._entries[key]

    def refill(self, key: TokenKey, now: float, fetch: Callable[[], CacheEntry]) -> CacheEntry:
        """No shared level: fetch."""
        return fetch()

    def forget(self, key: TokenKey, token: AccessToken) -> None:
        """No shared level: nothing to forget there."""

    async def aforget(self, key: TokenKey, token: AccessToken) -> None:
        """No shared level: nothing to forget there."""

    async def arefill(
        self, key: TokenKey, now: float, fetch: Callable[[], Awaitable[CacheEntry]]
    ) -> CacheEntry:
        """No shared level: fetch."""
        return await fetch()


def default_cache_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/ccflow/tokens.json``, else ``~/.cache/ccflow/tokens.json``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME", "").strip()
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".cache"
    return root / "ccflow" / "tokens.json"


class FileTokenCache:
    """Tokens kept in a file between runs of short-lived processes (``ccflow token`` uses it).

    The file (default :func:`default_cache_path`) is written atomically (a temporary file,
    then ``os.replace``) with mode 0600 in a directory it makes with mode 0700 (an existing
    directory is left as it is, and refused if other users may write to it), under an ``fcntl`` lock
    that also makes concurrent runs wait for one fetch. Tokens sit on disk in clear, readable
    by the user only. A file that cannot be read or written is logged once and skipped.
    ``partition`` keeps entries apart from those written with another one: ``ccflow token``
    passes a digest of the credential, so a wrong secret is never answered from the cache::

        client = TokenClient.from_env(cache=FileTokenCache())
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, partition: str = "") -> None:
        self.path = Path(path) if path is not None else default_cache_path()
        self._suffix = ":" + hashlib.sha256(partition.encode()).hexdigest() if partition else ""
        self._memory = MemoryTokenCache()
        self._warned = False

    def __repr__(self) -> str:
        return f"FileTokenCache(path={str(self.path)!r})"

    def __len__(self) -> int:
        """How many tokens the file holds (0 when it cannot be read)."""
        try:
            with self._locked():
                return len(self._read())
        except OSError:
            return 0

    def get(self, key: TokenKey) -> CacheEntry | None:
        """The entry read or fetched by this process, if any."""
        return self._memory.get(key)

    def put(self, key: TokenKey, entry: CacheEntry, now: float) -> None:
        """Hold ``entry`` in this process."""
        self._memory.put(key, entry, now)

    def discard(self, key: TokenKey, token: AccessToken) -> None:
        """Forget ``token`` in this process."""
        self._memory.discard(key, token)

    def forget(self, key: TokenKey, token: AccessToken) -> None:
        """Remove ``token`` from the file (kept if another token replaced it)."""
        name = key.shared() + self._suffix
        try:
            with self._locked():
                entries = self._read()
                current = decode_entry(name, entries.get(name, "").encode())
                if current is not None and current.token.token == token.token:
                    del entries[name]
                    self._write(entries)
        except OSError as exc:
            self._warn(exc)

    def refill(self, key: TokenKey, now: float, fetch: Callable[[], CacheEntry]) -> CacheEntry:
        """The file's entry if fresh; else ``fetch()``'s, written to the file (under the lock,
        so a concurrent run waits and reads it)."""
        name = key.shared() + self._suffix
        try:
            with self._locked():
                entries = self._read()
                found = decode_entry(name, entries.get(name, "").encode())
                if usable(found, now):
                    assert found is not None
                    return found
                entry = fetch()
                entries[name] = encode_entry(name, entry).decode()
                self._write(_unexpired(entries, now))
                return entry
        except OSError as exc:
            self._warn(exc)
            return fetch()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the exclusive lock on the cache's lock file (created 0600; the directory, when
        created here, 0700; an existing one is used only if no other user may write to it)."""
        directory = self.path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        status = directory.stat()
        if status.st_uid != os.geteuid():  # another user's (or a link to it)
            raise PermissionError(f"{directory} belongs to another user")
        if status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise PermissionError(f"{directory} is writable by other users")
        fd = os.open(directory / (self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _read(self) -> dict[str, str]:
        """The file's entries; a missing or unreadable file holds none."""
        try:
            with open(self.path, "rb") as file:
                if os.fstat(file.fileno()).st_uid != os.geteuid():
                    return {}  # planted by another user: replaced on the next write
                data = json.loads(file.read())
        except FileNotFoundError:
            return {}
        except ValueError:
            return {}  # corrupt: replaced on the next write
        if not isinstance(data, dict):
            return {}
        return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}

    def _write(self, entries: dict[str, str]) -> None:
        """Replace the file atomically with ``entries`` (mode 0600)."""
        fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=".tokens-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(entries, out)
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

    def _warn(self, exc: OSError) -> None:
        """One warning per cache object: the file cannot be used, tokens are fetched."""
        if not self._warned:
            self._warned = True
            logger.warning(
                "token cache file %s cannot be used, fetching directly: %s: %s",
                self.path,
                type(exc).__name__,
                exc.strerror or exc,  # why, in the OS's words or ours; never a token
            )


def _unexpired(entries: dict[str, str], now: float) -> dict[str, str]:
    """``entries`` without those whose token has expired (or that cannot be read)."""
    kept: dict[str, str] = {}
    for name, value in entries.items():
        entry = decode_entry(name, value.encode())
        if entry is not None and entry.token.expires_on > now:
            kept[name] = value
    return kept
