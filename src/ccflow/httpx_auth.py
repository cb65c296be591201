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
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from typing import Protocol

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

    def __init__(self, source: TokenSource, scopes: tuple[str, ...]) -> None:
        self._source = source
        self._scopes = scopes

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

    Made by :meth:`ccflow.AsyncTokenClient.auth`.
    """

    requires_request_body = True

    def __init__(self, source: AsyncTokenSource, scopes: tuple[str, ...]) -> None:
        self._source = source
        self._scopes = scopes

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
