"""``BearerAuth``: an ``httpx.Auth`` that attaches a cached token and retries once on 401.

Get one from a client rather than building it::

    client = TokenClient.from_env()
    with httpx.Client(auth=client.auth("api://calc-api")) as http:
        http.get("https://calc.example/add?a=1&b=2")

The logic is one generator (:meth:`BearerAuth._flow`) that yields either "I need a token",
"drop this token" or a request to send; ``sync_auth_flow`` and ``async_auth_flow`` differ only
in how they obtain the token.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from ccflow._core.tokens import AccessToken
from ccflow.errors import ConfigurationError

if TYPE_CHECKING:
    from ccflow.client import AsyncTokenClient, TokenClient

__all__ = ["BearerAuth"]


@dataclass(frozen=True, slots=True)
class _NeedToken:
    pass


@dataclass(frozen=True, slots=True)
class _Drop:
    token: AccessToken


_NEED_TOKEN = _NeedToken()
_Step = _NeedToken | _Drop | httpx.Request
_Reply = AccessToken | httpx.Response | bool | None


class BearerAuth(httpx.Auth):
    """Sends ``Authorization: Bearer <token>`` for ``scopes``; on a 401 the cached token is
    dropped and the request is sent once more with a freshly fetched token. A token is
    force-refreshed at most once every 30 s per scopes: a 401 within that time for the token
    just fetched is returned as it is, so an API that refuses every token (wrong audience,
    missing role) cannot turn each request into a token endpoint POST.

    Made by :meth:`ccflow.TokenClient.auth` (for ``httpx.Client``) and
    :meth:`ccflow.AsyncTokenClient.auth` (for ``httpx.AsyncClient``).
    """

    # The request may be sent twice, so its body must be replayable.
    requires_request_body = True

    def __init__(self, client: TokenClient | AsyncTokenClient, scopes: tuple[str, ...]) -> None:
        self._client = client
        self._scopes = scopes

    def __repr__(self) -> str:
        return f"BearerAuth({self._client!r}, scopes={self._scopes!r})"

    @staticmethod
    def _flow(request: httpx.Request) -> Generator[_Step, _Reply, None]:
        token = yield _NEED_TOKEN
        assert isinstance(token, AccessToken)
        request.headers["Authorization"] = f"Bearer {token.token}"
        response = yield request
        assert isinstance(response, httpx.Response)
        if response.status_code != 401:
            return
        retry = yield _Drop(token)
        if not retry:
            return  # the token was force-refreshed moments ago: this 401 is the API's answer
        fresh = yield _NEED_TOKEN
        assert isinstance(fresh, AccessToken)
        request.headers["Authorization"] = f"Bearer {fresh.token}"
        yield request

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """Drive :meth:`_flow` with a :class:`ccflow.TokenClient`."""
        from ccflow.client import TokenClient

        client = self._client
        if not isinstance(client, TokenClient):
            raise ConfigurationError(
                "an AsyncTokenClient's auth() works with httpx.AsyncClient; "
                "use TokenClient.auth() with httpx.Client",
                setting="auth",
            )
        request.read()
        flow = self._flow(request)
        reply: _Reply = None
        while True:
            try:
                step = flow.send(reply)
            except StopIteration:
                return
            if isinstance(step, _NeedToken):
                reply = client.get_token(*self._scopes)
            elif isinstance(step, _Drop):
                reply = client._drop(self._scopes, step.token)
            else:
                reply = yield step

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Drive :meth:`_flow` with an :class:`ccflow.AsyncTokenClient` (a ``TokenClient``
        works too, but blocks the event loop while it fetches)."""
        from ccflow.client import AsyncTokenClient

        client = self._client
        await request.aread()
        flow = self._flow(request)
        reply: _Reply = None
        while True:
            try:
                step = flow.send(reply)
            except StopIteration:
                return
            if isinstance(step, _NeedToken):
                if isinstance(client, AsyncTokenClient):
                    reply = await client.get_token(*self._scopes)
                else:
                    reply = client.get_token(*self._scopes)
            elif isinstance(step, _Drop):
                reply = client._drop(self._scopes, step.token)
            else:
                reply = yield step
