"""What ``TokenClient`` and ``AsyncTokenClient`` share: configuration, the token cache, and
turning the core's steps into httpx requests and back. No IO and no waiting here: the faces in
:mod:`ccflow.client` send, sleep and keep callers in single flight.

How the pieces fit (the why of each is in ``docs/caller.md``, "How the client works")::

    get_token(*scopes) -> key = normalize_scopes(scopes)
        cache[key] fresh?          -> its token
        else one fetch per key     -> ccflow._core.flow.fetch_flow, driven by the face
        _settle(key, outcome)      -> cache[key], or the refresh's error
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Generator, Mapping
from typing import Any, NoReturn, Self
from urllib.parse import urlsplit

import httpx

from ccflow._azure_core import DEFAULT_OPTIONS, TokenInfo, TokenOptions, token_options
from ccflow._client_config import ClientConfig, arguments_from_env, named_after_variable
from ccflow._core.cache import CacheEntry, RefreshPolicy, TokenState, may_force_refresh
from ccflow._core.flow import (
    Failure,
    FetchOutcome,
    Prepare,
    Prepared,
    Reply,
    Step,
    StepReply,
    Unprepared,
    fetch_flow,
)
from ccflow._core.tokens import (
    AccessToken,
    ErrorContext,
    RequestFields,
    TokenRequest,
    normalize_scopes,
)
from ccflow._http import untrusted_certificate
from ccflow._managed_identity import ManagedIdentity
from ccflow._version import __version__
from ccflow.errors import CCFlowError, ConfigurationError, CredentialError

__all__ = ["MAX_ENTRIES", "NO_AUTH", "BaseTokenClient", "credential_arguments", "reentered"]

logger = logging.getLogger("ccflow")

# Cached tokens (one per distinct scopes) beyond which expired ones are swept out.
MAX_ENTRIES = 1024
# httpx's base Auth sends the request unchanged: the token POST never uses the http client's
# own auth, which may be this client's BearerAuth.
NO_AUTH = httpx.Auth()
_USER_AGENT = f"ccflow/{__version__}"


class BaseTokenClient:
    """Configuration, the token cache and everything that does no IO, shared by both faces."""

    def __init__(self, config: ClientConfig) -> None:
        self.client_id = config.client_id
        self.token_endpoint = config.token_endpoint
        self.auth_method = config.auth_method
        self._config = config
        self._clock = config.clock
        self._timeout_extension = httpx.Timeout(config.timeout).as_dict()
        self._host = urlsplit(config.token_endpoint).netloc
        # Normalised scopes -> entry: the endpoint and client id are fixed per client, so
        # (token endpoint, client id, scopes) needs only the scopes here.
        self._cache: dict[tuple[str, ...], CacheEntry] = {}
        # Normalised scopes -> when a 401 last forced a refresh (see _invalidate).
        self._forced: dict[tuple[str, ...], float] = {}
        # Tenants get_token(tenant_id=...) may name besides the client's own (the faces set it).
        self._allowed_tenants: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(client_id={self.client_id!r}, "
            f"token_endpoint={self.token_endpoint!r})"
        )

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError(
            f"{type(self).__name__} holds a credential and connections and cannot be pickled; "
            "create one per process (e.g. with from_env())"
        )

    @classmethod
    def from_env(cls, *, environ: Mapping[str, str] | None = None, **options: Any) -> Self:
        """Build a client from the environment, as azure-identity's EnvironmentCredential does.

        Reads ``AZURE_CLIENT_ID``, ``AZURE_TENANT_ID``, ``AZURE_AUTHORITY_HOST``,
        ``CCFLOW_TOKEN_ENDPOINT`` (when set it wins over the tenant) and the credential, in
        azure-identity's order: ``AZURE_CLIENT_SECRET``, then ``AZURE_CLIENT_CERTIFICATE_PATH``
        (with ``AZURE_CLIENT_CERTIFICATE_PASSWORD``, ``AZURE_CLIENT_SEND_CERTIFICATE_CHAIN``),
        then ``AZURE_FEDERATED_TOKEN_FILE``, then, only when ``CCFLOW_MANAGED_IDENTITY=true``,
        the host's managed identity (see :func:`ccflow.credentials.credential_from_env`; the
        choice is logged at DEBUG). ``options`` are the other constructor keywords
        (``http_client``, ``clock``, ``sleep``, ...)::

            client = TokenClient.from_env(max_retries=5)
        """
        arguments = arguments_from_env(os.environ if environ is None else environ, options)
        try:
            return cls(**arguments, **options)
        except ConfigurationError as exc:
            renamed = named_after_variable(exc)
            if renamed is None:
                raise
            raise renamed from None

    # -- shared by both faces (no IO) --

    def _key(self, scopes: tuple[str, ...]) -> tuple[str, ...]:
        """The cache key of ``scopes``: checked and, for Azure AD, completed."""
        return normalize_scopes(scopes, azure=self._config.azure)

    def _fresh(self, key: tuple[str, ...]) -> AccessToken | None:
        """The cached token for ``key`` while it needs no refresh (no lock: one dict read)."""
        entry = self._cache.get(key)
        if entry is not None and RefreshPolicy.state(entry, self._clock()) is TokenState.FRESH:
            return entry.token
        return None

    def _invalidate(self, token: AccessToken, key: tuple[str, ...]) -> None:
        """Drop ``token`` for ``key`` unless a newer one replaced it or it was just forced."""
        entry = self._cache.get(key)
        if entry is None or entry.token != token:
            return
        now = self._clock()
        if may_force_refresh(self._forced.get(key), now):
            self._forced[key] = now
            del self._cache[key]

    def _put(self, key: tuple[str, ...], entry: CacheEntry) -> None:
        """Cache ``entry``, first sweeping out expired tokens once MAX_ENTRIES are held."""
        cache = self._cache
        if len(cache) >= MAX_ENTRIES and key not in cache:
            now = self._clock()
            for old in [k for k, e in cache.items() if e.token.expires_on <= now]:
                del cache[old]
                self._forced.pop(old, None)
        cache[key] = entry

    def _settle(self, key: tuple[str, ...], outcome: FetchOutcome) -> CacheEntry:
        """Cache what a fetch gave; a failed refresh of a token invalidated meanwhile raises."""
        if outcome.error is not None:
            current = self._cache.get(key)
            if current is None or current.token is not outcome.entry.token:
                raise outcome.error
        self._put(key, outcome.entry)
        return outcome.entry

    def _flow(
        self,
        raw: tuple[str, ...],
        key: tuple[str, ...],
        cached: CacheEntry | None,
        now: float,
        options: TokenOptions = DEFAULT_OPTIONS,
    ) -> Generator[Step, StepReply, FetchOutcome]:
        """The core's fetch for ``key``; errors mention the scopes as the caller wrote them."""
        fetch = self._config.fetch
        if options.token_endpoint is not None:
            fetch = dataclasses.replace(fetch, token_endpoint=options.token_endpoint)
        scopes = options.scopes(key)
        completed = tuple(s for s in raw if s not in scopes)
        context = ErrorContext(self.client_id, fetch.token_endpoint, scopes, completed)
        return fetch_flow(
            fetch, scopes, cached=cached, now=now, context=context, claims=options.claims
        )

    # -- azure-core's credential options (see ccflow._azure_core) --

    def _options(
        self, claims: Any = None, tenant_id: Any = None, enable_cae: Any = False
    ) -> TokenOptions:
        """``get_token``'s azure-core keywords, checked."""
        return token_options(
            claims=claims,
            tenant_id=tenant_id,
            enable_cae=enable_cae,
            token_endpoint=self.token_endpoint,
            allowed=self._allowed_tenants,
            tenants=not isinstance(self._config.credential, ManagedIdentity),
        )

    def _token_info(self, key: tuple[str, ...], token: AccessToken) -> TokenInfo:
        """``token`` as azure-core's ``AccessTokenInfo``, with when it will be refreshed."""
        entry = self._cache.get(key)
        refresh_on = int(entry.refresh_at) if entry is not None and entry.token == token else None
        return TokenInfo(token.token, token.expires_on, token.token_type, refresh_on)

    def _request_fields(self, step: Prepare) -> Prepared | Unprepared:
        """Ask the credential for its fields, or its whole request (the sync way)."""
        now = self._clock()
        credential = self._config.credential
        try:
            if isinstance(credential, ManagedIdentity):
                request = credential.token_request(scopes=step.scopes, now=now)
                return Prepared(RequestFields(), now, request)
            fields = credential.request_fields(**credential_arguments(step, now))
        except Exception as exc:
            return self._unprepared(exc, now)
        return Prepared(fields, now)

    def _unprepared(self, exc: Exception, now: float) -> Unprepared:
        """A credential's failure as a ``CredentialError`` naming only types (never its text)."""
        if isinstance(exc, CredentialError):
            return Unprepared(exc, now)
        if isinstance(exc, CCFlowError):
            raise exc  # a ConfigurationError: asking again cannot help
        error = CredentialError(
            f"credential {type(self._config.credential).__name__} failed: "
            f"{type(exc).__name__} (see __cause__)"
        )
        error.__cause__ = exc
        return Unprepared(error, now)

    def _post(self, request: TokenRequest) -> httpx.Request:
        """The token request (a POST, or a managed identity's GET), built here so no default
        of a shared http_client goes with it."""
        return httpx.Request(
            request.method,
            request.url,
            content=request.body,
            headers=(*request.headers, ("User-Agent", _USER_AGENT)),
            extensions={"timeout": self._timeout_extension},
        )

    def _reply(self, response: httpx.Response) -> Reply:
        """The answer for the flow; body ``None`` when a response hook left it unread."""
        try:
            body: bytes | None = response.content
        except httpx.ResponseNotRead:
            body = None
        return Reply(
            response.status_code,
            body,
            response.headers.get("retry-after"),
            self._clock(),
        )

    def _outcome(self, exc: httpx.RequestError | httpx.HTTPStatusError) -> Reply | Failure:
        """What a send that raised means: a hook's HTTPStatusError still holds the answer."""
        if isinstance(exc, httpx.HTTPStatusError):
            return self._reply(exc.response)
        return self._failure(exc)

    def _failure(self, exc: httpx.RequestError) -> Failure:
        """No answer, classified for the flow's retry decision and message."""
        if untrusted_certificate(exc):
            kind = "untrusted"
        elif isinstance(exc, httpx.TimeoutException):
            kind = "timeout"
        elif isinstance(exc, httpx.ReadError | httpx.WriteError | httpx.RemoteProtocolError):
            kind = "dropped"  # connected, then the connection broke or the answer was not HTTP
        elif isinstance(exc, httpx.TransportError):
            kind = "connect"
        else:
            kind = "unreadable"  # httpx.DecodingError: a body that cannot be decoded
        detail = type(exc).__name__ + (f": {exc}" if str(exc) else "")
        return Failure(kind, detail[:200], self._clock())

    def _log(self, key: tuple[str, ...], outcome: FetchOutcome, started: float) -> None:
        """One INFO line per fetch, or a WARNING when a cached token is served after a failure."""
        ms = (time.perf_counter() - started) * 1000.0
        if outcome.error is None:
            logger.info(
                "fetched token host=%s client_id=%s scopes=%s expires_in=%s duration_ms=%.1f",
                self._host,
                self.client_id,
                " ".join(key),
                outcome.expires_in,
                ms,
            )
        else:
            logger.warning(
                "token refresh failed, serving the cached token until it expires: host=%s "
                "client_id=%s scopes=%s error=%s duration_ms=%.1f",
                self._host,
                self.client_id,
                " ".join(key),
                outcome.error,
                ms,
            )


def credential_arguments(step: Prepare, now: float) -> dict[str, Any]:
    """The keyword arguments a credential's ``request_fields`` (or ``arequest_fields``) takes."""
    return {
        "client_id": step.client_id,
        "token_endpoint": step.token_endpoint,
        "auth_method": step.auth_method,
        "now": now,
    }


def reentered() -> CredentialError:
    """The error for a fetch that asked for its own token: it would wait for itself forever."""
    return CredentialError(
        "get_token() for these scopes was called from inside its own token request (by the "
        "credential?); it would wait for itself forever"
    )
