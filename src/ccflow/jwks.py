"""Fetching signing keys: discovery and JWKS over HTTP, cached, single flight.

:class:`AsyncJWKSCache` serves :class:`~ccflow.TokenValidator`: :meth:`~AsyncJWKSCache.get_key`
waits with an ``httpx.AsyncClient`` (the CLI's ``ccflow verify`` drives it with
``asyncio.run``), :meth:`~AsyncJWKSCache.get_key_sync` blocks its thread with an
``httpx.Client`` (WSGI: Flask, Django). Both faces share one cache state and only wait: which
URL to fetch and what the answer means is a generator (``_refresh_flow``), and every policy
decision (TTL, unknown-``kid`` cooldown, failure backoff, max-stale) lives in
:mod:`ccflow._core.jwks`.

However many requests wait, at most one discovery or JWKS fetch is in flight per face: the
first request fetches under a lock (an ``asyncio.Lock``, or a ``threading.Lock`` for
threads), the others re-decide once it is done. While a fetch is in flight, a request whose
``kid`` is cached (and within ``max_stale``) does not wait for it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Final

import httpx

from ccflow._core.claims import IssuerRule
from ccflow._core.discovery import DiscoveryError, parse_discovery
from ccflow._core.jwks import (
    JWKSError,
    KeyAction,
    KeyCache,
    RefreshPolicy,
    SigningKey,
    decide,
    parse_jwks,
)
from ccflow._core.steps import Done, advance
from ccflow._core.urls import require_secure_url
from ccflow._http import new_async_client, new_client, untrusted_certificate
from ccflow.errors import ConfigurationError, InvalidTokenError, KeysUnavailableError

__all__ = ["AsyncJWKSCache", "DiscoverySource", "KeySourcePlan"]

logger = logging.getLogger("ccflow.jwks")

_MAX_DOCUMENT_BYTES: Final = 1024 * 1024
_MAX_REDIRECTS: Final = 5
_DEFAULT_TIMEOUT: Final = 10.0


@dataclass(frozen=True, slots=True)
class DiscoverySource:
    """One discovery document to read, and what its issuer must look like."""

    url: str
    version: str | None = None
    """The token version its issuer is for (Azure AD ``"2.0"``/``"1.0"``), else ``None``."""
    expected_issuer: str | None = None
    multi_tenant: bool | None = None


@dataclass(frozen=True, slots=True)
class KeySourcePlan:
    """Where issuers and keys come from: discovery documents, a ``jwks_uri`` override, and
    issuers known without discovery. The JWKS comes from ``jwks_uri`` if set, else from the
    first discovery document."""

    discoveries: tuple[DiscoverySource, ...] = ()
    jwks_uri: str | None = None
    static_issuers: tuple[IssuerRule, ...] = ()


@dataclass(frozen=True, slots=True)
class _Metadata:
    """What discovery told us: the issuers and where the keys are."""

    issuers: tuple[IssuerRule, ...]
    jwks_uri: str


@dataclass(frozen=True, slots=True)
class _Answer:
    """An HTTP answer, reduced to what the flow needs (``None`` stands for no answer)."""

    status: int
    body: bytes
    retry_after: float | None


class _FetchFailed(Exception):
    """A discovery or JWKS fetch that gave no usable document."""

    def __init__(self, why: str, retry_after: float | None = None) -> None:
        super().__init__(why)
        self.retry_after = retry_after


def _retry_after(response: httpx.Response) -> float | None:
    """The answer's ``Retry-After`` in seconds, if it is a number."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _secure(url: httpx.URL) -> bool:
    """Whether a redirect target is https (or loopback http)."""
    try:
        require_secure_url(str(url), setting="redirect")
    except ConfigurationError:
        return False
    return True


def _redirect(response: httpx.Response, url: str) -> str | None:
    """Where a redirect answer points (an ``https://`` or loopback URL), ``""`` for a redirect
    not to follow, ``None`` for an answer that is no redirect."""
    target = response.next_request
    if not (response.has_redirect_location and target is not None):
        return None
    if not _secure(target.url):
        logger.warning("GET %s redirects to a plain http:// URL; not followed", url)
        return ""
    return str(target.url)


class _Get:
    """One document GET without the IO: which URL to request next (up to a few redirects,
    each to an ``https://`` or loopback ``http://`` URL checked before it is requested) and
    the body read so far (only up to one byte past the size limit)."""

    def __init__(self, url: str) -> None:
        self.url: str | None = url
        self._first = url
        self._redirects = 0
        self._body = bytearray()

    def redirected(self, response: httpx.Response) -> bool:
        """Whether ``response`` is a redirect; ``url`` is then where to go, or ``None``."""
        assert self.url is not None
        target = _redirect(response, self.url)
        if target is None:
            return False
        self._redirects += 1
        if target and self._redirects > _MAX_REDIRECTS:
            logger.warning("GET %s: more than %d redirects", self._first, _MAX_REDIRECTS)
            target = ""
        self.url = target or None
        return True

    def full(self, chunk: bytes) -> bool:
        """Add ``chunk``; whether enough is read to know the document is too large."""
        self._body += chunk
        return len(self._body) > _MAX_DOCUMENT_BYTES

    def answer(self, response: httpx.Response) -> _Answer:
        """The answer: status, the body read, ``Retry-After``."""
        return _Answer(response.status_code, bytes(self._body), _retry_after(response))


async def _get(client: httpx.AsyncClient, url: str) -> _Answer | None:
    """GET a discovery or JWKS document (see :class:`_Get`); ``None``: no answer to use."""
    get = _Get(url)
    while get.url is not None:
        async with client.stream("GET", get.url, follow_redirects=False) as response:
            if get.redirected(response):
                continue
            async for chunk in response.aiter_bytes():
                if get.full(chunk):
                    break
            return get.answer(response)
    return None


def _get_sync(client: httpx.Client, url: str) -> _Answer | None:
    """:func:`_get` for a blocking ``httpx.Client``."""
    get = _Get(url)
    while get.url is not None:
        with client.stream("GET", get.url, follow_redirects=False) as response:
            if get.redirected(response):
                continue
            for chunk in response.iter_bytes():
                if get.full(chunk):
                    break
            return get.answer(response)
    return None


def _log_failure(url: str, exc: Exception) -> None:
    """Log a GET that raised; the caller takes it for no answer (503 with backoff, never 401)."""
    # Whatever the HTTP client raises means no keys: a 401 would make clients drop good tokens.
    level, why = _fetch_failure(exc)
    logger.log(level, "GET %s %s", url, why)


def _fetch_failure(exc: Exception) -> tuple[int, str]:
    """How a failed GET is logged: level and words (never the exception's text, which may be
    long, except for RuntimeError's, httpx's "the client has been closed")."""
    if untrusted_certificate(exc):
        return logging.WARNING, (
            "failed: its TLS certificate did not verify; if the authority uses a private CA, "
            "trust it with SSL_CERT_FILE"
        )
    # InvalidURL is not an HTTPError, nor is the idna.IDNAError (a UnicodeError) httpx lets
    # out for a host such as "xn--zz.example": a jwks_uri httpx cannot use.
    if isinstance(exc, httpx.HTTPError | httpx.InvalidURL | UnicodeError):
        return logging.WARNING, f"failed: {type(exc).__name__}"
    if isinstance(exc, RuntimeError):
        # A caller's http_client closed too early, or a connection of a closed event loop.
        return logging.WARNING, f"failed: {type(exc).__name__}: {exc}"
    # Anything else: a caller's client misconfigured (verify= given a Path), a transport bug.
    return logging.ERROR, f"failed unexpectedly: {type(exc).__name__}"


class AsyncJWKSCache:
    """Signing keys, single flight: awaited (``httpx.AsyncClient``) or, from threads, blocking
    (``httpx.Client``), both faces over one cache state.

    ::

        cache = AsyncJWKSCache(plan, algorithms=frozenset({"RS256"}))
        key = await cache.get_key(kid)   # InvalidTokenError("key") / KeysUnavailableError
        key = cache.get_key_sync(kid)    # the same, from a WSGI worker thread
        await cache.aclose()             # and cache.close() for the blocking client
    """

    def __init__(
        self,
        plan: KeySourcePlan,
        *,
        algorithms: frozenset[str],
        policy: RefreshPolicy | None = None,
        clock: Callable[[], float] = time.time,
        http_client: httpx.AsyncClient | None = None,
        sync_http_client: httpx.Client | None = None,
    ) -> None:
        self._plan = plan
        self._algorithms = algorithms
        self._policy = policy or RefreshPolicy()
        self._clock = clock
        self._state = KeyCache()
        self._meta: _Metadata | None = None
        if not plan.discoveries:
            if plan.jwks_uri is None:
                raise ValueError("a KeySourcePlan needs discovery documents or a jwks_uri")
            self._meta = _Metadata(plan.static_issuers, plan.jwks_uri)
        self._owns_client = http_client is None
        # Made now, so a bad SSL_CERT_FILE fails at startup, not on the first request.
        self._client: httpx.AsyncClient | None = http_client or new_async_client(_DEFAULT_TIMEOUT)
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        # The blocking face: its client is made on first use (under the lock), since most
        # validators never block; its CA bundle was checked with the async client's.
        self._owns_sync_client = sync_http_client is None
        self._sync_client = sync_http_client
        self._thread_lock = threading.Lock()

    @property
    def issuers(self) -> tuple[IssuerRule, ...]:
        """The issuers known so far (from discovery); empty before the first fetch."""
        return self._meta.issuers if self._meta is not None else ()

    def holds(self, kid: str) -> bool:
        """Whether the keys of the last successful fetch include ``kid``: a key rotated out
        of the JWKS no longer vouches for the tokens it signed."""
        keys = self._state.keys
        return keys is not None and keys.get(kid) is not None

    @property
    def state(self) -> KeyCache:
        """The current cache state (a frozen value)."""
        return self._state

    def _look(self, kid: str, *, fetching: bool) -> SigningKey | KeyAction:
        """The key for ``kid`` when the policy says to use the one held, else what to do."""
        state = self._state
        action = decide(state, kid, self._clock(), self._policy, fetching=fetching)
        if action is KeyAction.USE:
            assert state.keys is not None
            return state.keys.keys[kid]
        return action

    def _decide(self, kid: str) -> KeyAction:
        """The policy's answer for ``kid`` now, once this request holds the fetch lock."""
        return decide(self._state, kid, self._clock(), self._policy)

    def _final(self, kid: str) -> SigningKey:
        """The key for ``kid`` after any fetch, or the refusal: 401 unknown, 503 unavailable."""
        now = self._clock()
        action = decide(self._state, kid, now, self._policy, may_fetch=False)
        if action is KeyAction.USE:
            assert self._state.keys is not None
            key = self._state.keys.get(kid)
            assert key is not None
            return key
        if action is KeyAction.UNAVAILABLE:
            raise KeysUnavailableError(
                "the API cannot get the authority's signing keys right now",
                retry_after=self._state.retry_after(now, self._policy),
            )
        raise InvalidTokenError("the token's signing key (kid) is not known", reason="key")

    def _body(self, answer: _Answer | None, what: str) -> bytes:
        """The body of a 200 answer within the size limit, else ``_FetchFailed``."""
        if answer is None:
            raise _FetchFailed(f"{what}: no answer")
        if answer.status != 200:
            raise _FetchFailed(f"{what}: HTTP {answer.status}", answer.retry_after)
        if len(answer.body) > _MAX_DOCUMENT_BYTES:
            raise _FetchFailed(f"{what}: document too large")
        return answer.body

    def _refresh_flow(self) -> Generator[str, _Answer | None, None]:
        """Yield URLs to GET, receive their answers; update the state. Never raises."""
        now = self._clock()
        try:
            meta = self._meta
            if meta is None:
                issuers: list[IssuerRule] = list(self._plan.static_issuers)
                jwks_uri = self._plan.jwks_uri
                for source in self._plan.discoveries:
                    body = self._body((yield source.url), "discovery")
                    try:
                        found = parse_discovery(
                            body,
                            expected_issuer=source.expected_issuer,
                            multi_tenant=source.multi_tenant,
                        )
                    except DiscoveryError as exc:
                        raise _FetchFailed(f"discovery: {exc}") from None
                    issuers.append(IssuerRule(found.issuer, source.version))
                    jwks_uri = jwks_uri or found.jwks_uri
                assert jwks_uri is not None
                meta = self._meta = _Metadata(tuple(issuers), jwks_uri)
            body = self._body((yield meta.jwks_uri), "jwks")
            try:
                keys = parse_jwks(body, algorithms=self._algorithms)
            except JWKSError as exc:
                raise _FetchFailed(f"jwks: {exc}") from None
            if not keys.keys:
                raise _FetchFailed("jwks: no usable signing keys in the document")
        except _FetchFailed as exc:
            logger.warning("signing key refresh failed (%s); keeping any cached keys", exc)
            self._state = self._state.failed(now, self._policy, exc.retry_after)
            return
        if keys.skipped:
            logger.debug("JWKS: %d key(s) not usable and skipped", keys.skipped)
        self._state = self._state.fetched(keys, now)

    async def get_key(self, kid: str) -> SigningKey:
        """The key for ``kid``, fetching first if the policy says so."""
        lock = self._flight_lock()
        found = self._look(kid, fetching=lock.locked())
        if isinstance(found, SigningKey):
            return found
        if found is KeyAction.FETCH:
            async with lock:
                # Whoever held the lock before us may have fetched already: decide again.
                if self._decide(kid) is KeyAction.FETCH:
                    await self._run()
        return self._final(kid)

    async def refresh(self) -> None:
        """Fetch now (single flight), whatever the policy says; failures only log."""
        async with self._flight_lock():
            await self._run()

    async def _run(self) -> None:
        """Drive ``_refresh_flow`` with real GETs; every failure becomes no answer."""
        flow = self._refresh_flow()
        answer: _Answer | None = None
        while not isinstance(url := advance(flow, answer), Done):
            try:
                answer = await _get(self._http(), url)
            except Exception as exc:
                _log_failure(url, exc)
                answer = None

    def get_key_sync(self, kid: str) -> SigningKey:
        """:meth:`get_key` for threads: blocks while the one fetch of this face runs."""
        lock = self._thread_lock
        found = self._look(kid, fetching=lock.locked())
        if isinstance(found, SigningKey):
            return found
        if found is KeyAction.FETCH:
            with lock:
                # Whoever held the lock before us may have fetched already: decide again.
                if self._decide(kid) is KeyAction.FETCH:
                    self._run_sync()
        return self._final(kid)

    def refresh_sync(self) -> None:
        """:meth:`refresh` for threads."""
        with self._thread_lock:
            self._run_sync()

    def _run_sync(self) -> None:
        """:meth:`_run` with blocking GETs (called under the thread lock)."""
        if self._sync_client is None:
            self._sync_client = new_client(_DEFAULT_TIMEOUT)
        flow = self._refresh_flow()
        answer: _Answer | None = None
        while not isinstance(url := advance(flow, answer), Done):
            try:
                answer = _get_sync(self._sync_client, url)
            except Exception as exc:
                _log_failure(url, exc)
                answer = None

    def _flight_lock(self) -> asyncio.Lock:
        """The single-flight lock of the running event loop."""
        # A lock belongs to the loop it first waited in: one per loop in turn (Starlette's
        # TestClient runs one per request); two loops at once are not supported.
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._lock = asyncio.Lock()
        return self._lock

    def _http(self) -> httpx.AsyncClient:
        """The HTTP client, made again if ``aclose()`` closed it."""
        if self._client is None:  # closed by aclose(), used again
            self._client = new_async_client(_DEFAULT_TIMEOUT)
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP clients this cache created."""
        self.close()
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    def close(self) -> None:
        """Close the blocking HTTP client if this cache created it (made again if used)."""
        with self._thread_lock:
            if self._owns_sync_client and self._sync_client is not None:
                self._sync_client.close()
                self._sync_client = None
