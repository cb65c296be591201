"""The authority as an ASGI application (``Authority.asgi``), for uvicorn and ASGI test clients."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httpx

from ccflow.authority._handlers import MAX_BODY, Outcome

__all__ = ["ASGIApp", "AuthorityApp"]

ASGIScope = Mapping[str, Any]
ASGIReceive = Callable[[], Any]
ASGISend = Callable[[Mapping[str, Any]], Any]
ASGIApp = Callable[[ASGIScope, ASGIReceive, ASGISend], Any]


class AuthorityApp:
    """An ASGI app onto ``serve`` (:meth:`Authority.serve`), which answers for ``host``."""

    def __init__(self, serve: Callable[[httpx.Request], Outcome], host: str) -> None:
        self._serve = serve
        self._host = host

    async def __call__(self, scope: ASGIScope, receive: ASGIReceive, send: ASGISend) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif scope["type"] == "websocket":
            # No WebSocket endpoints: refuse the handshake rather than leave it hanging.
            if (await receive())["type"] == "websocket.connect":
                await send({"type": "websocket.close", "code": 1008})
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _http(self, scope: ASGIScope, receive: ASGIReceive, send: ASGISend) -> None:
        """Read the body (bounded), serve the request, and send the outcome once it is due."""
        import anyio

        body = await _body(receive)
        if body is None:
            # As the HTTP server does: a bounded read, whatever Content-Length claimed.
            text = f"request body over {MAX_BODY} bytes".encode()
            await _send(send, 413, [(b"content-type", b"text/plain; charset=utf-8")], text)
            return
        query = scope.get("query_string", b"").decode("latin-1")
        url = f"{self._host}{scope['path']}" + (f"?{query}" if query else "")
        # As bytes: httpx insists on ASCII for str header values, ASGI's may be any bytes.
        headers = [(bytes(k), bytes(v)) for k, v in scope["headers"]]
        outcome = self._serve(httpx.Request(scope["method"], url, headers=headers, content=body))
        if outcome.wait:
            await anyio.sleep(outcome.wait)
        if outcome.drop or outcome.response is None:
            # ASGI has no way to close a connection silently; failing before the response
            # starts makes the server abort it.
            raise ConnectionAbortedError("connection dropped (fault)")
        response = outcome.response
        raw = [
            (k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.multi_items()
        ]
        await _send(send, response.status_code, raw, response.content)


async def _lifespan(receive: ASGIReceive, send: ASGISend) -> None:
    """Acknowledge start-up and shutdown; the authority holds nothing to open or close."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _body(receive: ASGIReceive) -> bytes | None:
    """The request body, or ``None`` once it grows past :data:`MAX_BODY`."""
    chunks = bytearray()
    while True:
        message = await receive()
        chunks += message.get("body", b"")
        if len(chunks) > MAX_BODY:
            return None
        if not message.get("more_body"):
            return bytes(chunks)


async def _send(
    send: ASGISend, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    """Send one whole response."""
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
