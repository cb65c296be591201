"""``BearerAuth`` and ``AsyncBearerAuth``: httpx auth that attaches a token and retries once
on 401.

Get one from a client rather than building it::

    client = TokenClient.from_env()
    with httpx.Client(auth=client.auth("api://calc-api")) as http:
        http.get("https://calc.example/add?a=1&b=2")

Both work with any *token source*: an object with ``get_token(*scopes)`` and
``invalidate(token, *scopes)`` (:class:`TokenSource`; :class:`AsyncTokenSource` when
``get_token`` is awaited). :class:`ccflow.TokenClient` and :class:`ccflow.AsyncTokenClient` are
the token sources ccflow ships; this module imports neither.

On a 401 the refused token is invalidated and the request is sent once more, but only when
the source then has a *different* token: a source that keeps the token (it was force-refreshed
moments ago) means the 401 is the API's answer, and it is returned as it is.

Any azure-core credential serves too (an object with ``get_token(*scopes)`` returning
``.token`` and ``.expires_on``, or ``get_token_info``), such as azure-identity's
``DefaultAzureCredential``; it keeps its own cache, so a 401 is returned as it is::

    auth = BearerAuth(DefaultAzureCredential(), ("api://calc-api/.default",))
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncGenerator, Generator
from typing import Any, Protocol

import httpx

from ccflow._core.tokens import AccessToken
from ccflow.errors import ConfigurationError

__all__ = ["AsyncBearerAuth", "AsyncTokenSource", "BearerAuth", "TokenSource"]


class TokenSource(Protocol):
    """What :class:`BearerAuth` needs: tokens for scopes, and a way to refuse one."""

    def get_token(self, *scopes: str) -> AccessToken:
        """A valid token for ``scopes``."""
        ...

    def invalidate(self, token: AccessToken, *scopes: str) -> None:
        """Forget ``token`` for ``scopes``: an API refused it."""
        ...


class AsyncTokenSource(Protocol):
    """:class:`TokenSource` whose ``get_token`` is awaited (``invalidate`` does no IO)."""

    async def get_token(self, *scopes: str) -> AccessToken:
        """A valid token for ``scopes``."""
        ...

    def invalidate(self, token: AccessToken, *scopes: str) -> None:
        """Forget ``token`` for ``scopes``: an API refused it."""
        ...


class BearerAuth(httpx.Auth):
    """Sends ``Authorization: Bearer <token>`` for ``scopes``; on a 401 the token is
    invalidated and the request is sent once more with the source's next token.

    :class:`ccflow.TokenClient` force-refreshes a token at most once every 30 s per scopes: a
    401 within that time for the token just fetched is returned as it is, so an API that
    refuses every token (wrong audience, missing role) cannot turn each request into a token
    endpoint POST. Works in ``httpx.Client`` and (blocking the event loop while it fetches) in
    ``httpx.AsyncClient``. Made by :meth:`ccflow.TokenClient.auth`.
    """

    # The request may be sent twice, so its body must be replayable.
    requires_request_body = True

    def __init__(self, source: TokenSource | Any, scopes: tuple[str, ...] | str) -> None:
        self._scopes = _checked_scopes(scopes)
        if _is_source(source) and inspect.iscoroutinefunction(source.get_token):
            raise ConfigurationError(
                f"{type(source).__name__}.get_token is awaited: use AsyncBearerAuth (an "
                "AsyncTokenClient's auth()) with httpx.AsyncClient",
                setting="auth",
            )
        self._source: TokenSource = source if _is_source(source) else _AzureCredential(source)

    def __repr__(self) -> str:
        return f"BearerAuth({self._source!r}, scopes={self._scopes!r})"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Send ``request`` with a token; after a 401, once more with a different one."""
        token = self._source.get_token(*self._scopes)
        response = yield _authorized(request, token)
        if response.status_code != 401:
            return
        self._source.invalidate(token, *self._scopes)
        fresh = self._source.get_token(*self._scopes)
        if fresh.token != token.token:
            yield _authorized(request, fresh)


class AsyncBearerAuth(httpx.Auth):
    """:class:`BearerAuth` for an :class:`AsyncTokenSource`, in ``httpx.AsyncClient`` only.

    An azure-core credential may be async (``azure.identity.aio``) or sync; a sync one is asked
    in a worker thread (``asyncio.to_thread``), so it does not block the event loop.

    Made by :meth:`ccflow.AsyncTokenClient.auth`.
    """

    requires_request_body = True

    def __init__(self, source: AsyncTokenSource | Any, scopes: tuple[str, ...] | str) -> None:
        self._scopes = _checked_scopes(scopes)
        if _is_source(source) and not inspect.iscoroutinefunction(source.get_token):
            raise ConfigurationError(
                f"{type(source).__name__}.get_token is not awaited: use an AsyncTokenClient, "
                "or a TokenClient's auth() (BearerAuth, which also works in httpx.AsyncClient)",
                setting="auth",
            )
        self._source: AsyncTokenSource = (
            source if _is_source(source) else _AsyncAzureCredential(source)
        )

    def __repr__(self) -> str:
        return f"AsyncBearerAuth({self._source!r}, scopes={self._scopes!r})"

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """Refuse: an awaited token source cannot serve a blocking client."""
        raise ConfigurationError(
            "an AsyncTokenClient's auth() works with httpx.AsyncClient; "
            "use TokenClient.auth() with httpx.Client",
            setting="auth",
        )

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Send ``request`` with a token; after a 401, once more with a different one."""
        await request.aread()
        token = await self._source.get_token(*self._scopes)
        response = yield _authorized(request, token)
        if response.status_code != 401:
            return
        self._source.invalidate(token, *self._scopes)
        fresh = await self._source.get_token(*self._scopes)
        if fresh.token != token.token:
            yield _authorized(request, fresh)


def _authorized(request: httpx.Request, token: AccessToken) -> httpx.Request:
    """``request`` carrying ``token`` in its Authorization header."""
    request.headers["Authorization"] = f"Bearer {token.token}"
    return request


def _is_source(source: object) -> bool:
    """Whether ``source`` is a token source (it can ``invalidate``), not an azure credential."""
    return callable(getattr(source, "invalidate", None)) and callable(
        getattr(source, "get_token", None)
    )


def _checked_scopes(scopes: tuple[str, ...] | str) -> tuple[str, ...]:
    """``scopes`` as a tuple: one scope may be given as a string."""
    checked = (scopes,) if isinstance(scopes, str) else tuple(scopes)
    if not checked or not all(isinstance(s, str) and s for s in checked):
        raise ConfigurationError(
            f"scopes must be one or more non-empty strings, got {scopes!r}", setting="scopes"
        )
    return checked


def _token_method(credential: object) -> Any:
    """The credential's ``get_token_info`` or ``get_token`` (azure-core's two protocols)."""
    for name in ("get_token_info", "get_token"):
        method = getattr(credential, name, None)
        if callable(method):
            return method
    raise ConfigurationError(
        f"{type(credential).__name__} is not a token source: expected a ccflow TokenClient or "
        "an azure-core credential (get_token or get_token_info)",
        setting="credential",
    )


def _converted(result: object, credential: object, scopes: tuple[str, ...]) -> AccessToken:
    """An azure-core ``AccessToken`` or ``AccessTokenInfo`` as ccflow's :class:`AccessToken`."""
    token = getattr(result, "token", None)
    expires_on = getattr(result, "expires_on", None)
    if (
        not isinstance(token, str)
        or not token
        or isinstance(expires_on, bool)
        or not isinstance(expires_on, int | float)
    ):
        raise ConfigurationError(
            f"{type(credential).__name__}.get_token returned {type(result).__name__}, not an "
            "access token (with .token and .expires_on)",
            setting="credential",
        )
    token_type = getattr(result, "token_type", "Bearer")
    return AccessToken(
        token,
        int(expires_on),
        token_type if isinstance(token_type, str) and token_type else "Bearer",
        scopes,
    )


class _HeldCredential:
    """An azure-core credential held as a token source (it caches; nothing to invalidate)."""

    __slots__ = ("_credential", "_get")

    def __init__(self, credential: object) -> None:
        self._credential = credential
        self._get = _token_method(credential)

    def __repr__(self) -> str:
        return repr(self._credential)

    def invalidate(self, token: AccessToken, *scopes: str) -> None:
        """Nothing: the credential decides when its cached token is renewed."""


class _AzureCredential(_HeldCredential):
    """An azure-core credential as a :class:`TokenSource`."""

    __slots__ = ()

    def get_token(self, *scopes: str) -> AccessToken:
        """The credential's token, converted."""
        result = self._get(*scopes)
        if inspect.isawaitable(result):
            _close(result)
            raise ConfigurationError(
                f"{type(self._credential).__name__} is an async credential; use it with "
                "AsyncBearerAuth and httpx.AsyncClient",
                setting="credential",
            )
        return _converted(result, self._credential, scopes)


class _AsyncAzureCredential(_HeldCredential):
    """An azure-core credential (``azure.identity.aio`` or sync) as an
    :class:`AsyncTokenSource`."""

    __slots__ = ()

    async def get_token(self, *scopes: str) -> AccessToken:
        """The credential's token (awaited when the credential is async, else asked in a
        worker thread: a sync credential may block for seconds), converted."""
        if inspect.iscoroutinefunction(self._get):
            result = self._get(*scopes)
        else:
            result = await asyncio.to_thread(self._get, *scopes)
        if inspect.isawaitable(result):
            result = await result
        return _converted(result, self._credential, scopes)


def _close(awaitable: object) -> None:
    """Close a coroutine that will never be awaited (no RuntimeWarning left behind)."""
    close = getattr(awaitable, "close", None)
    if callable(close):
        close()
