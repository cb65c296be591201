"""``TokenClient`` and ``AsyncTokenClient``: the two IO faces over ``ccflow._core``.

Every decision (request shape, retries, refresh timing, serving a still-valid token when a
refresh fails) is made by the generator in :mod:`ccflow._core.flow`; the shared, IO-free part
of a client is :class:`ccflow._client_base.BaseTokenClient`. The faces only perform the steps
(call the credential, POST with httpx, sleep) and keep callers in single flight: for one cache
key at most one POST is in flight, the other threads (or tasks) wait for it and share its token
or its error, and other keys are never blocked.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping
from typing import Any, Self

import httpx

from ccflow._azure_core import TokenInfo, TokenOptions, options_from_mapping
from ccflow._client_base import NO_AUTH, BaseTokenClient, Need, credential_arguments, reentered
from ccflow._core.cache import CacheEntry, RefreshPolicy, TokenState
from ccflow._core.flow import (
    Failure,
    FetchOutcome,
    Prepare,
    Prepared,
    Reply,
    Send,
    Step,
    StepReply,
    Unprepared,
)
from ccflow._core.steps import Done, advance
from ccflow._core.tokens import AccessToken, TokenRequest
from ccflow._http import new_async_client, new_client
from ccflow._token_cache import AsyncTokenCache, TokenCache, TokenKey
from ccflow.credentials import AsyncCredential
from ccflow.errors import CCFlowError
from ccflow.httpx_auth import AsyncBearerAuth, BearerAuth

__all__ = ["AsyncTokenClient", "TokenClient"]

logger = logging.getLogger("ccflow")
#: The INFO line logged before each retry wait (``ccflow token`` shows it on stderr).
RETRY_MESSAGE = "retrying in %s s after %s"


class TokenClient(BaseTokenClient[httpx.Client, Callable[[float], None], TokenCache]):
    """Client-credentials tokens for threads and plain code, cached and refreshed.

    ::

        with TokenClient(client_id="...", client_secret="...", tenant_id="contoso.com") as client:
            token = client.get_token("api://calc-api")          # -> api://calc-api/.default
            httpx.get(url, auth=client.auth("api://calc-api"))

    Keywords: ``client_id``; ``client_secret`` or ``credential``; ``tenant_id`` (with
    ``authority_host``, default ``AZURE_AUTHORITY_HOST`` else
    ``https://login.microsoftonline.com``) or ``token_endpoint`` for any OAuth 2.0 server;
    ``auth_method`` (``"client_secret_post"`` or ``"client_secret_basic"``); ``http_client``
    (an ``httpx.Client``, not closed by us); ``refresh_margin`` (s, 300); ``max_retries`` (3);
    ``timeout`` (s or ``httpx.Timeout``, 10); ``clock`` (Unix seconds, ``time.time``);
    ``sleep`` (how backoff waits, ``time.sleep``; inject one in tests); ``cache`` (a
    :class:`ccflow.TokenCache`, default a :class:`ccflow.MemoryTokenCache` of its own;
    ``ccflow.FileTokenCache``, ``ccflow.redis.RedisTokenCache``), then ``client.cache``;
    ``additionally_allowed_tenants`` (tenants ``get_token(tenant_id=...)`` may name, ``["*"]``
    for any). ``credential=ManagedIdentity()`` needs no ``client_id`` and no tenant.
    Thread-safe; the constructor does no network IO. Usable as an azure-core credential
    (:meth:`get_token`, :meth:`get_token_info`).
    """

    _HTTP_CLASS = httpx.Client
    _HTTP_MISMATCH = (
        "http_client must be an httpx.Client (use AsyncTokenClient for httpx.AsyncClient)"
    )
    _CACHE_PROTOCOL = ("ccflow.TokenCache", ("get", "put", "discard", "forget", "refill"))
    _flights: dict[TokenKey, _Flight]

    def _new_http(self, timeout: float | httpx.Timeout) -> httpx.Client:
        """An ``httpx.Client`` of our own."""
        return new_client(timeout)

    def _default_sleep(self) -> Callable[[float], None]:
        """``time.sleep``."""
        return time.sleep

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        """A valid token for ``scopes`` from the cache, fetching it when needed.

        For Azure AD a bare resource is completed: ``get_token("api://calc-api")`` asks for
        ``api://calc-api/.default``. Raises :class:`ccflow.TokenRequestError` when the
        authority refuses, :class:`ccflow.AuthorityUnreachableError` when it cannot be reached
        after the retries.

        The keywords are azure-core's, so the client serves wherever an Azure SDK takes a
        credential: ``claims`` (a CAE claims challenge) fetches a new token instead of serving
        the cached one; ``tenant_id`` other than the client's own needs
        ``additionally_allowed_tenants``; other keywords are ignored, as azure-identity does.
        """
        return self._get(scopes, self._options(claims, tenant_id, enable_cae))[1]

    def get_token_info(self, *scopes: str, options: Mapping[str, Any] | None = None) -> TokenInfo:
        """azure-core's ``SupportsTokenInfo``: :meth:`get_token` with ``options`` (``claims``,
        ``tenant_id``, ``enable_cae``), answered with ``token``, ``expires_on``,
        ``token_type`` and ``refresh_on`` (when ccflow will refresh it)."""
        key, token = self._get(scopes, self._options(**options_from_mapping(options)))
        return self._token_info(key, token)

    def _get(self, scopes: tuple[str, ...], options: TokenOptions) -> tuple[TokenKey, AccessToken]:
        """The cache key and a valid token for ``scopes`` under ``options``."""
        key = self._key(scopes, options)
        token = None if options.fresh else self._fresh(key)
        return key, token if token is not None else self._acquire(scopes, key, options)

    def _fresh(self, key: TokenKey) -> AccessToken | None:
        """The local cache's token for ``key`` while fresh, read without the lock (a hit takes
        no lock; on a miss ``_acquire`` reads again under it)."""
        entry = self.cache.get(key)
        if entry is not None and RefreshPolicy.state(entry, self._clock()) is TokenState.FRESH:
            return entry.token
        return None

    def invalidate(self, token: AccessToken, *scopes: str) -> None:
        """Forget ``token`` for ``scopes`` because an API refused it (a 401), so that the next
        :meth:`get_token` fetches another.

        A newer token already cached in its place is kept. The cached token is dropped at most
        once every 30 s per scopes: within that time it *is* the freshly fetched one, so an API
        that refuses every token (wrong audience, missing role) cannot turn each request into a
        token endpoint POST. :class:`ccflow.httpx_auth.BearerAuth` calls it on a 401::

            token = client.get_token("api://calc-api")
            if api_said_401:
                client.invalidate(token, "api://calc-api")
        """
        key = self._key(scopes)
        with self._lock:  # two threads holding one refused token decide one after the other
            dropped = self._may_invalidate(token, key)
            if dropped:
                self.cache.discard(key, token)
        if dropped:
            self.cache.forget(key, token)  # outside the lock: a shared cache does IO

    def auth(self, *scopes: str) -> BearerAuth:
        """An ``httpx.Auth`` that sends ``Authorization: Bearer <token for scopes>`` and, on a
        401, invalidates the token and retries the request once with a fresh one::

            httpx.get("https://calc.example/add", auth=client.auth("api://calc-api"))
        """
        self._key(scopes)  # fail at setup, not on the first request
        return BearerAuth(self, scopes)

    def _acquire(self, raw: tuple[str, ...], key: TokenKey, options: TokenOptions) -> AccessToken:
        """Serve ``key`` from the local cache, join its flight, or lead a fetch for it."""
        flight: _Flight | None = None
        try:  # before the flight is registered: an interrupt must still unregister it
            with self._lock:
                # Read again under the lock: another thread may have stored a token meanwhile.
                need = self._need(raw, key, options)
                if need.state is TokenState.FRESH:
                    assert need.cached is not None
                    return need.cached.token
                # A claims challenge never joins a flight: its token was asked without it.
                waiting = None if options.fresh else self._flights.get(key)
                if waiting is None:
                    flight = _Flight()
                    if not options.fresh:  # nor does anyone join its own
                        self._flights[key] = flight
            if flight is None:
                assert waiting is not None
                if need.state is TokenState.STALE:
                    assert need.cached is not None
                    return need.cached.token  # someone is refreshing it; still valid meanwhile
                return waiting.wait()
            started = time.perf_counter()
            outcome, fetched = self._refill(need)
            with self._lock:
                self._settle(need, outcome)
                if self._flights.get(key) is flight:
                    del self._flights[key]
        except Exception as exc:
            if flight is not None:
                self._abandon(key, flight, exc)
            raise
        except BaseException:
            if flight is not None:
                interrupted = CCFlowError("the token request was interrupted; try again")
                self._abandon(key, flight, interrupted)
            raise
        flight.finish(outcome.entry.token)
        self._log(key, outcome, started, fetched=fetched)
        return outcome.entry.token

    def _refill(self, need: Need) -> tuple[FetchOutcome, bool]:
        """The cache's entry for ``need`` (another process's), or this process's fetch; and
        whether it was fetched here. A claims challenge is never answered from the cache."""
        fetched: list[FetchOutcome] = []

        def fetch() -> CacheEntry:
            fetched.append(self._drive(self._flow(need)))
            return fetched[-1].entry

        entry = fetch() if need.options.fresh else self.cache.refill(need.key, need.now, fetch)
        return (fetched[-1], True) if fetched else (FetchOutcome(entry), False)

    def _abandon(self, key: TokenKey, flight: _Flight, error: BaseException) -> None:
        """End a flight that failed: unregister it and hand its waiters ``error``."""
        with self._lock:
            if self._flights.get(key) is flight:
                del self._flights[key]
        flight.fail(error)

    def _drive(self, flow: Generator[Step, StepReply, FetchOutcome]) -> FetchOutcome:
        """Perform the flow's steps: ask the credential, POST, sleep."""
        reply: StepReply = None
        try:
            while not isinstance(step := advance(flow, reply), Done):
                if isinstance(step, Prepare):
                    reply = self._request_fields(step)
                elif isinstance(step, Send):
                    reply = self._send(step.request)
                else:
                    logger.info(RETRY_MESSAGE, _seconds(step.seconds), step.reason)
                    self._sleep(step.seconds)
                    reply = self._clock()
        finally:
            flow.close()
        return step.value

    def _send(self, request: TokenRequest) -> Reply | Failure:
        """POST the token request: never with the http client's auth, never redirected."""
        try:
            response = self._http.send(self._post(request), auth=NO_AUTH, follow_redirects=False)
        except (httpx.RequestError, httpx.HTTPStatusError) as exc:
            outcome = self._outcome(exc)
        else:
            return self._reply(response)
        # Returned outside the except block: the httpx error, whose request holds the secret,
        # must not become the __context__ of an error raised later.
        return outcome

    def close(self) -> None:
        """Close the HTTP client if this client created it, and the Redis cache
        ``from_env()`` made."""
        if self._owns_http:
            self._http.close()
        if self._owned_cache is not None:
            self._owned_cache.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncTokenClient(
    BaseTokenClient[httpx.AsyncClient, Callable[[float], Awaitable[None]], AsyncTokenCache]
):
    """The asyncio face of :class:`TokenClient`: same constructor, awaited methods.

    ::

        async with AsyncTokenClient(client_id="...", client_secret="...", tenant_id="...") as c:
            token = await c.get_token("api://calc-api/.default")
            async with httpx.AsyncClient(auth=c.auth("api://calc-api")) as http:
                await http.get(url)

    ``http_client`` is an ``httpx.AsyncClient`` (not closed by us); ``sleep`` is awaited for
    backoff waits (``asyncio.sleep``); ``cache`` is a :class:`ccflow.AsyncTokenCache`. Use one
    instance per event loop; concurrent tasks asking for the same scopes share one POST.
    """

    _HTTP_CLASS = httpx.AsyncClient
    _HTTP_MISMATCH = "http_client must be an httpx.AsyncClient (use TokenClient for httpx.Client)"
    _CACHE_PROTOCOL = ("ccflow.AsyncTokenCache", ("get", "put", "discard", "aforget", "arefill"))
    _flights: dict[TokenKey, asyncio.Future[CacheEntry]]

    def _new_http(self, timeout: float | httpx.Timeout) -> httpx.AsyncClient:
        """An ``httpx.AsyncClient`` of our own."""
        return new_async_client(timeout)

    def _default_sleep(self) -> Callable[[float], Awaitable[None]]:
        """``asyncio.sleep``."""
        return asyncio.sleep

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        """A valid token for ``scopes``; see :meth:`TokenClient.get_token`."""
        return (await self._get(scopes, self._options(claims, tenant_id, enable_cae)))[1]

    async def get_token_info(
        self, *scopes: str, options: Mapping[str, Any] | None = None
    ) -> TokenInfo:
        """azure-core's ``AsyncSupportsTokenInfo``; see :meth:`TokenClient.get_token_info`."""
        key, token = await self._get(scopes, self._options(**options_from_mapping(options)))
        return self._token_info(key, token)

    async def _get(
        self, scopes: tuple[str, ...], options: TokenOptions
    ) -> tuple[TokenKey, AccessToken]:
        """The cache key and a valid token for ``scopes`` under ``options``."""
        # No lock: nothing awaits between this read and the flight _acquire registers.
        need = self._need(scopes, self._key(scopes, options), options)
        if need.state is TokenState.FRESH:
            assert need.cached is not None
            return need.key, need.cached.token
        return need.key, await self._acquire(need)

    def invalidate(self, token: AccessToken, *scopes: str) -> None:
        """Forget ``token`` for ``scopes`` (an API refused it); see
        :meth:`TokenClient.invalidate`. Not awaited: a shared cache forgets it in a task."""
        key = self._key(scopes)
        if self._may_invalidate(token, key):
            self.cache.discard(key, token)
            self._in_background(self.cache.aforget(key, token))

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` as a task of the running loop (none running: skip it)."""
        try:
            task = asyncio.get_running_loop().create_task(work)
        except RuntimeError:
            work.close()
            return
        self._background.add(task)  # a task nobody references may be collected mid-way
        task.add_done_callback(self._background.discard)

    def auth(self, *scopes: str) -> AsyncBearerAuth:
        """An ``httpx.Auth`` for ``httpx.AsyncClient``; see :meth:`TokenClient.auth`."""
        self._key(scopes)  # fail at setup, not on the first request
        return AsyncBearerAuth(self, scopes)

    async def _acquire(self, need: Need) -> AccessToken:
        """Join the flight for ``need``'s key, or start a fetch for it: the local cache's
        entry is stale, expired or missing."""
        key = need.key
        # A claims challenge never joins a flight: its token was asked without it.
        flight = None if need.options.fresh else self._flights.get(key)
        if flight is not None and flight.done():
            # A fetch removes itself when it ends: a finished one still here was cancelled
            # before it started, and awaiting it would raise CancelledError for ever.
            del self._flights[key]
            flight = None
        if flight is None:
            # Its own task, so a cancelled caller does not cancel it for the others.
            flight = asyncio.ensure_future(self._fetch(need))
            flight.add_done_callback(_consume)
            if not need.options.fresh:  # nor does anyone join its own
                self._flights[key] = flight
        elif need.state is TokenState.STALE:
            assert need.cached is not None
            return need.cached.token
        elif flight is asyncio.current_task():
            raise reentered()
        entry = await asyncio.shield(flight)  # each waiter's cancellation stays its own
        return entry.token

    async def _fetch(self, need: Need) -> CacheEntry:
        """One fetch for ``need`` (or another process's entry), run as the flight every waiter
        shares. A claims challenge is never answered from the cache."""
        started = time.perf_counter()
        key, now = need.key, need.now
        fetched: list[FetchOutcome] = []

        async def fetch() -> CacheEntry:
            fetched.append(await self._drive(self._flow(need)))
            return fetched[-1].entry

        try:
            entry = await (fetch() if need.options.fresh else self.cache.arefill(key, now, fetch))
            outcome = fetched[-1] if fetched else FetchOutcome(entry)
            self._settle(need, outcome)
        finally:
            if self._flights.get(key) is asyncio.current_task():  # this fetch's own entry
                del self._flights[key]
        self._log(key, outcome, started, fetched=bool(fetched))
        return outcome.entry

    async def _drive(self, flow: Generator[Step, StepReply, FetchOutcome]) -> FetchOutcome:
        """Perform the flow's steps: ask the credential, POST, sleep (all awaited)."""
        reply: StepReply = None
        try:
            while not isinstance(step := advance(flow, reply), Done):
                if isinstance(step, Prepare):
                    reply = await self._arequest_fields(step)
                elif isinstance(step, Send):
                    reply = await self._send(step.request)
                else:
                    logger.info(RETRY_MESSAGE, _seconds(step.seconds), step.reason)
                    await self._sleep(step.seconds)
                    reply = self._clock()
        finally:
            flow.close()
        return step.value

    async def _arequest_fields(self, step: Prepare) -> Prepared | Unprepared:
        """Ask the credential for its fields, awaiting an ``AsyncCredential``."""
        credential = self._config.credential
        if not isinstance(credential, AsyncCredential):
            return self._request_fields(step)
        now = self._clock()
        try:
            fields = await credential.arequest_fields(**credential_arguments(step, now))
        except Exception as exc:
            return self._unprepared(exc, now)
        return Prepared(fields, now)

    async def _send(self, request: TokenRequest) -> Reply | Failure:
        """POST the token request; see :meth:`TokenClient._send`."""
        try:
            response = await self._http.send(
                self._post(request), auth=NO_AUTH, follow_redirects=False
            )
        except (httpx.RequestError, httpx.HTTPStatusError) as exc:
            outcome = self._outcome(exc)
        else:
            return self._reply(response)
        return outcome

    async def aclose(self) -> None:
        """Close the HTTP client if this client created it, and the Redis cache
        ``from_env()`` made."""
        if self._owns_http:
            await self._http.aclose()
        if self._owned_cache is not None:
            await self._owned_cache.aclose()
            self._owned_cache.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class _Flight:
    """One in-flight fetch that waiting threads share."""

    __slots__ = ("done", "error", "owner", "token")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.owner = threading.get_ident()  # the leader, which performs the fetch
        self.token: AccessToken | None = None
        self.error: BaseException | None = None

    def finish(self, token: AccessToken) -> None:
        """Hand every waiter ``token``."""
        self.token = token
        self.done.set()

    def fail(self, error: BaseException) -> None:
        """Hand every waiter ``error``."""
        self.error = error
        self.done.set()

    def wait(self) -> AccessToken:
        """The leader's token, or its error raised in this thread."""
        if self.owner == threading.get_ident():
            raise reentered()
        self.done.wait()
        if self.error is not None:
            raise _own_copy(self.error)
        assert self.token is not None
        return self.token


def _own_copy(error: BaseException) -> BaseException:
    """``error`` as a new object for one more thread, so tracebacks do not pile up."""
    try:
        twin = copy.copy(error)
    except Exception:
        return error
    if type(twin) is not type(error) or twin is error:
        return error
    twin.__cause__ = error.__cause__
    twin.__suppress_context__ = error.__suppress_context__
    return twin.with_traceback(None)


def _consume(task: asyncio.Future[CacheEntry]) -> None:
    """Mark the outcome as retrieved, so asyncio logs no error nobody was left to see."""
    if not task.cancelled():
        task.exception()


def _seconds(seconds: float) -> str:
    """A wait as the retry line says it: ``2``, ``0.6``, ``12``."""
    return f"{seconds:.0f}" if seconds >= 10 else f"{seconds:.2g}"
