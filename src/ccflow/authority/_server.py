"""The local authority as a real HTTP(S) server on 127.0.0.1.

Built on the standard library (``ThreadingHTTPServer`` + ``ssl``) around the synchronous
:meth:`Authority.serve`, not on uvicorn: ``ccflow authority serve`` then works with ccflow's
runtime dependencies alone, and a handful of test clients needs no event loop. (The same
server is available as an ASGI app, ``Authority.asgi``, for whoever prefers uvicorn.)
"""

from __future__ import annotations

import contextlib
import http.server
import shutil
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from ccflow._core.urls import normalize_authority_host
from ccflow.authority._authority import Authority
from ccflow.authority._handlers import MAX_BODY
from ccflow.authority._registrations import Registrations
from ccflow.authority._routes import Endpoints
from ccflow.authority._tls import TlsFiles, subject_alt_name, write_tls_files

__all__ = ["AuthorityServer"]

_IDLE_TIMEOUT = 60.0


class _Handler(http.server.BaseHTTPRequestHandler):
    """Hands each HTTP request to the authority and writes its answer."""

    protocol_version = "HTTP/1.1"  # keep-alive, as real clients expect
    server: _HTTPServer

    def setup(self) -> None:
        """Track the connection, then run the TLS handshake (if any) in this thread."""
        self.request.settimeout(_IDLE_TIMEOUT)
        context = self.server.ssl_context
        if context is not None:
            # Wrapped without a handshake, so that the connection is tracked (and stop() wakes
            # a client stalled in the handshake) before the handshake waits for the client.
            self.request = context.wrap_socket(
                self.request, server_side=True, do_handshake_on_connect=False
            )
        self.server.track(self.request, add=True)
        if self.server.stopping.is_set():
            # stop() came while this connection was being set up: close it as stop() would.
            with contextlib.suppress(OSError):
                self.request.shutdown(socket.SHUT_RDWR)
        if isinstance(self.request, ssl.SSLSocket):
            # The handshake runs here, in the connection's thread, so that a slow or failing
            # client never blocks the accept loop.
            try:
                self.request.do_handshake()
            except BaseException:
                self.server.track(self.request, add=False)
                self.request.close()
                raise
        super().setup()

    def finish(self) -> None:
        """Stop tracking the connection and close it."""
        with contextlib.suppress(OSError):
            super().finish()
        self.server.track(self.request, add=False)
        if isinstance(self.request, ssl.SSLSocket):
            # The server closes the raw socket it accepted, which wrapping detached.
            with contextlib.suppress(OSError):
                self.request.close()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the authority logs nothing (request lines may carry ids, never needed)."""

    def _dispatch(self) -> None:
        """Read one request, let the authority serve it, and send (or hold, or drop) the answer."""
        request = self._request()
        if request is None:
            return
        outcome = self.server.authority.serve(request)
        held = bool(outcome.wait)
        if held:
            self.server.stopping.wait(outcome.wait)
        # A held-back answer that stop() woke is not sent: the server is gone, and a client
        # must see what a stopped server gives (no answer), not the answer early.
        if outcome.drop or outcome.response is None or (held and self.server.stopping.is_set()):
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        response = outcome.response
        self.send_response(response.status_code)
        for name, value in response.headers.multi_items():
            if name.lower() not in ("content-length", "connection"):
                self.send_header(name, value)
        content = b"" if self.command == "HEAD" else response.content
        self.send_header("Content-Length", str(len(response.content)))
        self.end_headers()
        self.wfile.write(content)

    def _request(self) -> httpx.Request | None:
        """The request read off the connection, or ``None`` once a plain error answered it."""
        if self.headers.get_all("Transfer-Encoding"):
            # Any transfer coding ("chunked", "gzip, chunked", ...): reading the body as empty
            # would leave it on the connection, to be parsed as the next request.
            self._plain(411, b"chunked bodies are not supported; send Content-Length")
            return None
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length > MAX_BODY:
            self._plain(413, f"request body over {MAX_BODY} bytes".encode())
            return None
        if length < 0:
            self._plain(400, b"bad Content-Length")
            return None
        body = self.rfile.read(length) if length else b""
        target = self.path
        if target[:7].lower() == "http://" or target[:8].lower() == "https://":
            # The absolute form (RFC 9112 3.2.2), which a server must accept: keep its path.
            parts = urllib.parse.urlsplit(target)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if not target.startswith("/"):
            self._plain(400, b"bad request target")
            return None
        return httpx.Request(
            self.command,
            self.server.authority.host + target,
            # http.server decoded the header bytes as latin-1: hand httpx the same bytes (as
            # str it insists on ASCII, and a non-ASCII value would drop the connection).
            headers=[
                (k.encode("latin-1"), v.encode("latin-1"))
                for k, v in self.headers.items()
                if k.lower() != "host"
            ],
            content=body,
        )

    def _plain(self, status: int, text: bytes) -> None:
        """Answer ``status`` with ``text`` and close the connection."""
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(text)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(text)
        self.close_connection = True

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _dispatch


class _HTTPServer(http.server.ThreadingHTTPServer):
    """A threading HTTP server that knows its authority."""

    daemon_threads = True
    allow_reuse_address = True
    authority: Authority
    ssl_context: ssl.SSLContext | None

    def __init__(self, address: tuple[str, int]) -> None:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.address_family = family
        super().__init__(address, _Handler)
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        self.ssl_context = None

    def track(self, conn: socket.socket, *, add: bool) -> None:
        """Add ``conn`` to the open connections (or remove it)."""
        with self._conn_lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def connection_count(self) -> int:
        """How many connections are open now."""
        with self._conn_lock:
            return len(self._connections)

    def close_connections(self) -> None:
        """Wake every handler blocked on an idle keep-alive connection."""
        with self._conn_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: clients that hang up or fail the TLS handshake are not the server's error."""


class AuthorityServer:
    """The local authority served on ``host:port`` (``port=0``: a free one), HTTP or HTTPS.

    ::

        with AuthorityServer(tls=True) as server:
            server.authority.token_endpoint   # https://127.0.0.1:PORT/<tenant>/oauth2/v2.0/token
            server.ca_file                    # trust this CA

    The server runs in a background thread; :meth:`stop` (or leaving the ``with`` block) closes
    the listening socket and every open connection, idle keep-alive ones included.

    ``public_url`` (``https://authority:8443``) is the address clients use when it is not the
    bound one (behind docker-compose, a proxy, or bound to ``0.0.0.0``): the issuer, discovery,
    JWKS and token endpoint advertise it. ``san`` adds host names or IP addresses to the TLS
    certificate (the public URL's host is added by itself).
    """

    def __init__(
        self,
        registrations: Registrations | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: bool = False,
        tls_dir: str | Path | None = None,
        token_lifetime: int = 3599,
        authority_factory: Callable[[str], Authority] | None = None,
        public_url: str | None = None,
        san: Sequence[str] = (),
    ) -> None:
        bracketed = f"[{host}]" if ":" in host else host
        origin = f"{'https' if tls else 'http'}://{bracketed}"
        # Refuse plain http off loopback (and bad certificate names) before binding anything.
        if public_url is not None:
            public_url = normalize_authority_host(public_url, setting="public_url")
        else:
            normalize_authority_host(origin, setting="host")
        names = tuple(san)
        if public_url is not None and tls:
            names += (str(httpx.URL(public_url).host),)
        for name in names:
            subject_alt_name(name)
        self._httpd = _HTTPServer((host, port))
        try:
            self.port: int = self._httpd.server_address[1]
            self.tls: TlsFiles | None = None
            # A directory we made is ours to remove on stop (it holds the server's private key).
            self._owned_tls_dir: Path | None = None
            if tls:
                self._configure_tls(tls_dir, names)
            self.url = public_url or f"{origin}:{self.port}"
            if authority_factory is not None:
                self.authority = authority_factory(self.url)
            else:
                self.authority = Authority(
                    registrations, host=self.url, token_lifetime=token_lifetime
                )
            self._httpd.authority = self.authority
        except BaseException:
            self._httpd.server_close()
            raise
        self._thread: threading.Thread | None = None

    def _configure_tls(self, tls_dir: str | Path | None, names: tuple[str, ...]) -> None:
        """Write the CA and a certificate for loopback and ``names``; serve HTTPS with them."""
        self.tls = write_tls_files(tls_dir, names)
        if tls_dir is None:
            self._owned_tls_dir = self.tls.ca_file.parent
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.tls.cert_file, self.tls.key_file)
        self._httpd.ssl_context = context

    @property
    def open_connections(self) -> int:
        """How many client connections are open now (idle keep-alive ones included)."""
        return self._httpd.connection_count()

    @property
    def ca_file(self) -> Path | None:
        """The CA certificate to trust (``None`` without TLS)."""
        return self.tls.ca_file if self.tls is not None else None

    def start(self) -> AuthorityServer:
        """Start serving in a background thread (the socket already listens)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.1},
                name=f"ccflow-authority-{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close every connection, wait (bounded) for the thread, and remove the
        TLS files if this server wrote them into a temporary directory of its own."""
        self._httpd.stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()
        self._httpd.close_connections()
        if self._owned_tls_dir is not None:
            shutil.rmtree(self._owned_tls_dir, ignore_errors=True)
            self._owned_tls_dir = None

    def __enter__(self) -> AuthorityServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"AuthorityServer(url={self.url!r})"

    def info(self) -> dict[str, Any]:
        """What ``ccflow authority serve --json`` prints: addresses and registrations, secrets
        included (they are the local authority's fixed test secrets)."""
        authority = self.authority
        regs = authority.registrations
        home = authority.endpoints()
        return {
            "issuer": home.issuer,
            "authority_host": authority.host,
            "tenant_id": authority.tenant_id,
            "token_endpoint": home.token_endpoint,
            "jwks_uri": home.jwks_uri,
            "ca_file": str(self.ca_file) if self.ca_file is not None else None,
            # Every tenant served, the first (tenant_id above) included.
            "tenants": [_addresses(authority.endpoints(tenant=t)) for t in authority.tenant_ids],
            "apis": [
                {
                    "name": api.name,
                    "client_id": api.client_id,
                    "identifier_uri": api.identifier_uri,
                    "roles": list(api.roles),
                }
                for api in regs.apis
            ],
            "clients": [
                {
                    "name": client.name,
                    "client_id": client.client_id,
                    "secret": client.secret,
                    "roles": list(client.all_roles),
                    "tenant_id": regs.tenant_of(client),
                }
                for client in regs.clients
            ],
        }


def _addresses(urls: Endpoints) -> dict[str, str]:
    """One tenant's entry in :meth:`AuthorityServer.info`."""
    return {
        "tenant_id": urls.tenant,
        "issuer": urls.issuer,
        "token_endpoint": urls.token_endpoint,
        "jwks_uri": urls.jwks_uri,
    }
