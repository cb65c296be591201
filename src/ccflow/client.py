"""``TokenClient`` and ``AsyncTokenClient``: the two IO faces over ``ccflow._core``.

Every decision (request shape, retries, refresh timing, serving a still-valid token when a
refresh fails) is made by the generator in :mod:`ccflow._core.flow`; the faces only perform
its steps (call the credential, POST with httpx, sleep) and keep callers in single flight:
for one cache key at most one POST is in flight, the other threads (or tasks) wait for it and
share its token or its error, and other keys are never blocked.

A cache hit is a dict lookup keyed by the raw ``scopes`` tuple plus one clock read: no lock,
no logging, no normalisation (that happens once per distinct tuple on the slow path).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Generator, Mapping
from typing import TYPE_CHECKING, Any, NoReturn, Self
from urllib.parse import urlsplit

import httpx

from ccflow._core.cache import CacheEntry, RefreshPolicy, TokenState, may_force_refresh
from ccflow._core.flow import (
    Failure,
    FetchConfig,
    FetchOutcome,
    Prepare,
    Prepared,
    Reply,
    Send,
    Step,
    StepReply,
    Unprepared,
    fetch_flow,
)
from ccflow._core.retry import RetryPolicy
from ccflow._core.tokens import (
    AccessToken,
    ErrorContext,
    TokenRequest,
    is_azure_token_endpoint,
    normalize_scopes,
)
from ccflow._core.urls import (
    DEFAULT_AUTHORITY_HOST,
    normalize_authority_host,
    reject_tenant_in_host,
    require_secure_url,
    token_endpoint_for,
)
from ccflow._http import new_async_client, new_client, untrusted_certificate
from ccflow._version import __version__
from ccflow.credentials import (
    AUTH_METHODS,
    CREDENTIAL_VARIABLES,
    AsyncCredential,
    ClientSecret,
    Credential,
    credential_from_env,
)
from ccflow.errors import CCFlowError, ConfigurationError, CredentialError

if TYPE_CHECKING:
    from ccflow.httpx_auth import BearerAuth

__all__ = ["AsyncTokenClient", "TokenClient"]

logger = logging.getLogger("ccflow")

DEFAULT_TIMEOUT = 10.0
# Distinct raw scope tuples remembered for the fast path; beyond this the table is reset
# rather than grown without bound by callers that build scope strings dynamically.
_MAX_ALIASES = 256
# Cached tokens (one per distinct scopes) beyond which expired ones are swept out.
_MAX_ENTRIES = 1024
# Constructor keywords that from_env() takes from the environment, not from its **options.
_FROM_ENV_SETTINGS = frozenset(
    {"client_id", "client_secret", "credential", "tenant_id", "authority_host", "token_endpoint"}
)

# httpx's base Auth sends the request unchanged: the token POST must not use the http
# client's default auth (see _send).
_NO_AUTH = httpx.Auth()
_USER_AGENT = f"ccflow/{__version__}"
# Constructor settings from_env() fills from a variable, for naming that variable in errors.
_ENV_VARIABLES = {"client_id": "AZURE_CLIENT_ID", "tenant_id": "AZURE_TENANT_ID"}


class _ClientBase:
    """Configuration, the cache tables and everything that does no IO, shared by both faces."""

    _http: httpx.Client | httpx.AsyncClient

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str | None = None,
        credential: Credential | None = None,
        tenant_id: str | None = None,
        authority_host: str | None = None,
        token_endpoint: str | None = None,
        auth_method: str = "client_secret_post",
        refresh_margin: float = 300.0,
        max_retries: int = 3,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(client_id, str):
            raise ConfigurationError(
                f"client_id must be a string (the app's Application ID), got "
                f"{type(client_id).__name__}",
                setting="client_id",
            )
        if not client_id.strip():
            raise ConfigurationError("client_id is required (AZURE_CLIENT_ID)", setting="client_id")
        if (client_secret is None) == (credential is None):
            raise ConfigurationError(
                "pass exactly one of client_secret=... or credential=...", setting="credential"
            )
        if credential is None:
            assert client_secret is not None
            credential = ClientSecret(client_secret)
        if isinstance(credential, type):
            raise ConfigurationError(
                f"credential must be an instance, got the class {credential.__name__}; e.g. "
                "credential=ClientSecret('...')",
                setting="credential",
            )
        if not callable(getattr(credential, "request_fields", None)):
            raise ConfigurationError(
                f"credential must implement ccflow.credentials.Credential, got "
                f"{type(credential).__name__}",
                setting="credential",
            )
        if auth_method not in AUTH_METHODS:
            raise ConfigurationError(
                f"auth_method must be one of {', '.join(AUTH_METHODS)}, got {auth_method!r}",
                setting="auth_method",
            )
        if isinstance(credential, ClientSecret) and auth_method == "private_key_jwt":
            # Found here rather than on the first get_token(): the constructor does no IO but
            # should still refuse a combination that can never work.
            raise ConfigurationError(
                "auth_method 'private_key_jwt' needs a certificate or assertion credential; a "
                "client secret is sent with 'client_secret_post' or 'client_secret_basic'",
                setting="auth_method",
            )
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigurationError("max_retries must be an int >= 0", setting="max_retries")
        if (
            isinstance(refresh_margin, bool)
            or not isinstance(refresh_margin, int | float)
            or not math.isfinite(refresh_margin)
            or refresh_margin < 0
        ):
            # NaN compared false to everything: every get_token() became a POST.
            raise ConfigurationError(
                "refresh_margin must be a finite number of seconds >= 0", setting="refresh_margin"
            )
        if not isinstance(timeout, httpx.Timeout) and (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise ConfigurationError(
                f"timeout must be seconds > 0 or an httpx.Timeout, got {timeout!r}",
                setting="timeout",
            )
        if not callable(clock):
            raise ConfigurationError(
                "clock must be a callable returning Unix seconds (like time.time)", setting="clock"
            )
        if token_endpoint is not None:
            if tenant_id is not None or authority_host is not None:
                raise ConfigurationError(
                    "token_endpoint replaces tenant_id and authority_host; pass one or the other",
                    setting="token_endpoint",
                )
            endpoint = require_secure_url(token_endpoint, setting="token_endpoint")
            azure = is_azure_token_endpoint(endpoint)
        else:
            if not tenant_id:
                raise ConfigurationError(
                    "tenant_id is required (AZURE_TENANT_ID), or pass token_endpoint=... for a "
                    "non-Azure OAuth 2.0 server",
                    setting="tenant_id",
                )
            # Name the setting the value came from, so a bad AZURE_AUTHORITY_HOST is not
            # reported as an authority_host argument the caller never passed.
            host_setting = "authority_host"
            if authority_host is not None:
                host = normalize_authority_host(authority_host)
            elif os.environ.get("AZURE_AUTHORITY_HOST"):
                host_setting = "AZURE_AUTHORITY_HOST"
                host = normalize_authority_host(
                    os.environ["AZURE_AUTHORITY_HOST"], setting=host_setting
                )
            else:
                host = DEFAULT_AUTHORITY_HOST
            endpoint = token_endpoint_for(host, tenant_id)
            reject_tenant_in_host(host, tenant_id, setting=host_setting)
            azure = True
        self.client_id = client_id
        self.token_endpoint = endpoint
        self.auth_method = auth_method
        self._credential: Credential = credential
        self._azure = azure
        self._clock = clock
        self._timeout = timeout
        self._timeout_extension = httpx.Timeout(timeout).as_dict()
        self._config = FetchConfig(
            token_endpoint=endpoint,
            client_id=client_id,
            auth_method=auth_method,
            retry=RetryPolicy(max_retries=max_retries),
            refresh=RefreshPolicy(margin=float(refresh_margin)),
        )
        self._host = urlsplit(endpoint).netloc
        # Raw scopes tuple -> entry: the lock-free fast path. Written only on the slow path.
        self._hits: dict[tuple[str, ...], CacheEntry] = {}
        # Normalised scopes -> entry: the cache proper. The endpoint and client id are fixed
        # per client, so (token endpoint, client id, scopes) needs only the scopes here.
        self._store: dict[tuple[str, ...], CacheEntry] = {}
        self._keys: dict[tuple[str, ...], tuple[str, ...]] = {}
        # Normalised scopes -> when a 401 last forced a refresh (see _drop).
        self._forced: dict[tuple[str, ...], float] = {}

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
        then ``AZURE_FEDERATED_TOKEN_FILE`` (see :func:`ccflow.credentials.credential_from_env`;
        the choice is logged at DEBUG). ``options`` are the other constructor keywords
        (``http_client``, ``clock``, ...)::

            client = TokenClient.from_env(max_retries=5)
        """
        from_environment = set(options) & _FROM_ENV_SETTINGS
        if from_environment:
            names = ", ".join(sorted(from_environment))
            raise ConfigurationError(
                f"from_env() reads {names} from the environment; set the variable, or call the "
                "constructor with every setting instead",
                setting=sorted(from_environment)[0],
            )
        env = os.environ if environ is None else environ
        # Stripped, as `ccflow token` does: a value read from a file (a Kubernetes secret)
        # often ends in a newline, which Azure AD would answer with misleading advice.
        given_id = env.get("AZURE_CLIENT_ID")
        client_id = (given_id or "").strip()
        endpoint = env.get("CCFLOW_TOKEN_ENDPOINT")
        tenant_id = env.get("AZURE_TENANT_ID")
        # Every missing variable in one message, so a bare environment is fixed in one go.
        missing: list[ConfigurationError] = []
        if not client_id:
            missing.append(
                ConfigurationError(
                    f"AZURE_CLIENT_ID is {'blank' if given_id else 'not set'}",
                    setting="AZURE_CLIENT_ID",
                )
            )
        if not endpoint and not tenant_id:
            missing.append(
                ConfigurationError(
                    "AZURE_TENANT_ID is not set (or set CCFLOW_TOKEN_ENDPOINT for another server)",
                    setting="AZURE_TENANT_ID",
                )
            )
        if missing and not any(env.get(name) for name in CREDENTIAL_VARIABLES):
            try:
                credential_from_env(env)
            except ConfigurationError as exc:
                missing.append(exc)
        if len(missing) == 1:
            raise missing[0]
        if missing:
            raise ConfigurationError(
                "; ".join(str(exc) for exc in missing), setting=missing[0].setting
            )
        assert client_id is not None
        credential = credential_from_env(env)
        if endpoint:
            require_secure_url(endpoint, setting="CCFLOW_TOKEN_ENDPOINT")
            settings: dict[str, Any] = {"token_endpoint": endpoint}
        else:
            assert tenant_id is not None
            host = env.get("AZURE_AUTHORITY_HOST") or DEFAULT_AUTHORITY_HOST
            settings = {
                "tenant_id": tenant_id,
                "authority_host": normalize_authority_host(host, setting="AZURE_AUTHORITY_HOST"),
            }
        try:
            return cls(client_id=client_id, credential=credential, **settings, **options)
        except ConfigurationError as exc:
            # A bad value read from a variable is reported under the variable's name.
            variable = _ENV_VARIABLES.get(exc.setting or "")
            if variable is None:
                raise
            raise ConfigurationError(f"{variable}: {exc}", setting=variable) from None

    def auth(self, *scopes: str) -> BearerAuth:
        """An ``httpx.Auth`` that sends ``Authorization: Bearer <token for scopes>`` and, on a
        401, drops the cached token and retries the request once with a fresh one::

            httpx.get("https://calc.example/add", auth=client.auth("api://calc-api"))
        """
        from ccflow.httpx_auth import BearerAuth

        normalize_scopes(scopes, azure=self._azure)  # fail at setup, not on the first request
        assert isinstance(self, TokenClient | AsyncTokenClient)
        return BearerAuth(self, scopes)

    # -- slow-path helpers shared by both faces (no IO) --

    def _key(self, raw: tuple[str, ...]) -> tuple[str, ...]:
        key = self._keys.get(raw)
        if key is None:
            key = normalize_scopes(raw, azure=self._azure)
            if len(self._keys) >= _MAX_ALIASES:
                self._keys.clear()
            self._keys[raw] = key
        return key

    def _put(self, key: tuple[str, ...], entry: CacheEntry) -> None:
        """Cache ``entry``; past _MAX_ENTRIES keys, expired tokens are swept out first, so a
        caller cycling through many scopes does not keep every token it ever had."""
        store = self._store
        if len(store) >= _MAX_ENTRIES and key not in store:
            now = self._clock()
            for old in [k for k, e in store.items() if e.token.expires_on <= now]:
                del store[old]
                self._forced.pop(old, None)
        store[key] = entry

    def _settle(self, key: tuple[str, ...], outcome: FetchOutcome) -> CacheEntry:
        """Cache what a fetch gave and return the entry to serve.

        A refresh that failed serves the cached token only while it is still cached: a 401
        may have dropped it while the refresh ran (see :meth:`_drop`), and putting it back
        would hand out a token the API refused. Then the refresh's error is raised instead.
        """
        if outcome.error is not None:
            current = self._store.get(key)
            if current is None or current.token is not outcome.entry.token:
                raise outcome.error
        self._put(key, outcome.entry)
        return outcome.entry

    def _remember(self, raw: tuple[str, ...], entry: CacheEntry) -> None:
        if len(self._hits) >= _MAX_ALIASES and raw not in self._hits:
            self._hits.clear()
        self._hits[raw] = entry

    def _flow(
        self, raw: tuple[str, ...], key: tuple[str, ...], cached: CacheEntry | None, now: float
    ) -> Generator[Step, StepReply, FetchOutcome]:
        completed = tuple(s for s in raw if s not in key)
        context = ErrorContext(self.client_id, self.token_endpoint, key, completed)
        return fetch_flow(self._config, key, cached=cached, now=now, context=context)

    def _request_fields(self, step: Prepare) -> Prepared | Unprepared:
        now = self._clock()
        try:
            fields = self._credential.request_fields(
                client_id=step.client_id,
                token_endpoint=step.token_endpoint,
                auth_method=step.auth_method,
                now=now,
            )
        except Exception as exc:
            return self._unprepared(exc, now)
        return Prepared(fields, now)

    def _unprepared(self, exc: Exception, now: float) -> Unprepared:
        """What a credential's failure becomes, for both faces: the flow then decides whether
        to serve the cached token or raise."""
        if isinstance(exc, CredentialError):
            return Unprepared(exc, now)
        if isinstance(exc, CCFlowError):
            raise exc  # a ConfigurationError: asking again cannot help
        # A user's own Credential may raise anything (OSError, an HTTP error...): it is a
        # credential failure all the same, so a still-valid cached token is served. The
        # message names only the types: the exception's text may quote a secret.
        error = CredentialError(
            f"credential {type(self._credential).__name__} failed: {type(exc).__name__} "
            "(see __cause__)"
        )
        error.__cause__ = exc
        return Unprepared(error, now)

    def _post(self, request: TokenRequest) -> httpx.Request:
        """The token POST, the same for both faces. Built here, not by the http_client, so a
        shared client's defaults (headers, params, cookies, base_url) never go with it: its
        default headers may hold another service's credentials. Only the client's transport
        settings (proxies, TLS, limits) and its event hooks apply. The faces send it without
        the client's auth (it may be our BearerAuth: a token fetch asking for a token) and
        never follow a redirect (a followed 307/308 would resend the secret)."""
        return httpx.Request(
            "POST",
            request.url,
            content=request.body,
            headers=(*request.headers, ("User-Agent", _USER_AGENT)),
            extensions={"timeout": self._timeout_extension},
        )

    def _reply(self, response: httpx.Response) -> Reply:
        """The answer for the flow. A shared ``http_client``'s response event hook may have
        raised ``httpx.HTTPStatusError`` for it (httpx documents a ``raise_for_status`` hook):
        it is still the token endpoint's answer, to retry, serve around or explain, and httpx
        closed it unread unless the hook read it (then the body is ``None``)."""
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
        """What the flow gets when the send raised: a response hook's HTTPStatusError still
        carries the endpoint's answer (see :meth:`_reply`); anything else is no answer."""
        if isinstance(exc, httpx.HTTPStatusError):
            return self._reply(exc.response)
        return self._failure(exc)

    def _failure(self, exc: httpx.RequestError) -> Failure:
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

    def _drop(self, raw: tuple[str, ...], token: AccessToken) -> bool:
        """Forget ``token`` (the API answered 401) and say whether a retry can use another.

        A newer token in its place is kept (True: retry with it). The cached token itself is
        dropped at most once per :data:`~ccflow._core.cache.FORCED_REFRESH_INTERVAL` per key
        (False: it was just fetched, a retry would only repeat the 401).
        """
        key = self._key(raw)
        entry = self._store.get(key)
        if entry is None or entry.token is not token:
            return True
        now = self._clock()
        if not may_force_refresh(self._forced.get(key), now):
            return False
        self._forced[key] = now
        self._store.pop(key, None)
        for alias, hit in list(self._hits.items()):
            if hit.token is token:
                self._hits.pop(alias, None)
        return True


class _Flight:
    """One in-flight fetch that waiting threads share."""

    __slots__ = ("done", "error", "owner", "token")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.owner = threading.get_ident()  # the leader, which performs the fetch
        self.token: AccessToken | None = None
        self.error: BaseException | None = None

    def wait(self) -> AccessToken:
        self.done.wait()
        if self.error is not None:
            raise _own_copy(self.error)
        assert self.token is not None
        return self.token


def _reentered() -> CredentialError:
    # The fetch itself (its credential, most likely) asked for the token it is fetching:
    # waiting would be waiting for ourselves, forever.
    return CredentialError(
        "get_token() for these scopes was called from inside its own token request (by the "
        "credential?); it would wait for itself forever"
    )


def _own_copy(error: BaseException) -> BaseException:
    """``error`` for one more waiting thread: the same type, message and attributes, in a
    new object. Raising one object in many threads prepends each thread's frames to its single
    traceback, so every waiter's log showed the frames of all the others."""
    try:
        twin = copy.copy(error)
    except Exception:
        return error
    if type(twin) is not type(error) or twin is error:
        return error
    twin.__cause__ = error.__cause__
    twin.__suppress_context__ = error.__suppress_context__
    return twin.with_traceback(None)


class TokenClient(_ClientBase):
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
    ``timeout`` (s or ``httpx.Timeout``, 10); ``clock`` (Unix seconds, ``time.time``).
    Thread-safe; the constructor does no network IO.
    """

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str | None = None,
        credential: Credential | None = None,
        tenant_id: str | None = None,
        authority_host: str | None = None,
        token_endpoint: str | None = None,
        auth_method: str = "client_secret_post",
        http_client: httpx.Client | None = None,
        refresh_margin: float = 300.0,
        max_retries: int = 3,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            client_id=client_id,
            client_secret=client_secret,
            credential=credential,
            tenant_id=tenant_id,
            authority_host=authority_host,
            token_endpoint=token_endpoint,
            auth_method=auth_method,
            refresh_margin=refresh_margin,
            max_retries=max_retries,
            timeout=timeout,
            clock=clock,
        )
        if http_client is not None and not isinstance(http_client, httpx.Client):
            raise ConfigurationError(
                "http_client must be an httpx.Client (use AsyncTokenClient for httpx.AsyncClient)",
                setting="http_client",
            )
        self._owns_http = http_client is None
        self._http: httpx.Client = http_client or new_client(timeout)
        self._lock = threading.Lock()
        self._flights: dict[tuple[str, ...], _Flight] = {}
        # Backoff waits go through here so tests can record them instead of sleeping.
        self._sleep: Callable[[float], None] = time.sleep

    def get_token(self, *scopes: str) -> AccessToken:
        """A valid token for ``scopes`` from the cache, fetching it when needed.

        For Azure AD a bare resource is completed: ``get_token("api://calc-api")`` asks for
        ``api://calc-api/.default``. Raises :class:`ccflow.TokenRequestError` when the
        authority refuses, :class:`ccflow.AuthorityUnreachableError` when it cannot be reached
        after the retries.
        """
        try:
            entry = self._hits.get(scopes)
        except TypeError:  # an unhashable scope: a list passed as one argument
            raise _scopes_error(scopes) from None
        if entry is not None and self._clock() < entry.refresh_at:
            return entry.token
        return self._acquire(scopes)

    def _acquire(self, raw: tuple[str, ...]) -> AccessToken:
        key = self._key(raw)
        # Set once this thread leads the fetch. The try starts before the flight is registered,
        # so an interrupt (Ctrl-C) at any point after that still unregisters it: a flight left
        # behind would keep every later caller for these scopes waiting for ever.
        flight: _Flight | None = None
        try:
            with self._lock:
                # The clock is read under the lock so that a caller counted by an instrumented
                # clock already holds its flight (tests use this to know every thread waits).
                now = self._clock()
                cached = self._store.get(key)
                state = RefreshPolicy.state(cached, now)
                if state is TokenState.FRESH:
                    assert cached is not None
                    self._remember(raw, cached)
                    return cached.token
                waiting = self._flights.get(key)
                if waiting is None:
                    flight = self._flights[key] = _Flight()
            if flight is None:
                assert waiting is not None
                if state is TokenState.STALE:
                    assert cached is not None
                    return cached.token  # someone is refreshing it; it is still valid meanwhile
                if waiting.owner == threading.get_ident():
                    raise _reentered()
                return waiting.wait()
            started = time.perf_counter()
            outcome = self._drive(self._flow(raw, key, cached, now))
            with self._lock:
                # Inside the try: should storing fail (a user clock raising, a dropped token),
                # the waiters get the error instead of waiting for a flight nobody will finish.
                self._settle(key, outcome)
                self._flights.pop(key, None)
                # Under the same lock as the store: a 401 dropping this token (_drop) right
                # after it was stored must not be undone by putting it on the fast path.
                self._remember(raw, outcome.entry)
        except Exception as exc:
            if flight is not None:
                self._abandon(key, flight, exc)
            raise
        except BaseException:
            if flight is not None:
                self._abandon(
                    key, flight, CCFlowError("the token request was interrupted; try again")
                )
            raise
        flight.token = outcome.entry.token
        flight.done.set()
        self._log(key, outcome, started)
        return outcome.entry.token

    def _abandon(self, key: tuple[str, ...], flight: _Flight, error: BaseException) -> None:
        """End a flight that failed: unregister it and hand its waiters ``error``."""
        with self._lock:
            if self._flights.get(key) is flight:
                del self._flights[key]
        flight.error = error
        flight.done.set()

    def _drive(self, flow: Generator[Step, StepReply, FetchOutcome]) -> FetchOutcome:
        reply: StepReply = None
        try:
            while True:
                try:
                    step = flow.send(reply)
                except StopIteration as stop:
                    outcome: FetchOutcome = stop.value
                    return outcome
                if isinstance(step, Prepare):
                    reply = self._request_fields(step)
                elif isinstance(step, Send):
                    reply = self._send(step.request)
                else:
                    logger.debug("token request will be retried in %.2f s", step.seconds)
                    self._sleep(step.seconds)
                    reply = self._clock()
        finally:
            flow.close()

    def _send(self, request: TokenRequest) -> Reply | Failure:
        try:
            response = self._http.send(self._post(request), auth=_NO_AUTH, follow_redirects=False)
        except (httpx.RequestError, httpx.HTTPStatusError) as exc:
            outcome = self._outcome(exc)
        else:
            return self._reply(response)
        # Outside the except block: the httpx error (whose request holds the secret in its
        # body) must not become the __context__ of what we raise later.
        return outcome

    def _drop(self, raw: tuple[str, ...], token: AccessToken) -> bool:
        # Under the lock: two threads with the same rejected token must not both decide (one
        # dropping, the other then seeing the interval as used up and giving up on a retry).
        with self._lock:
            return super()._drop(raw, token)

    def close(self) -> None:
        """Close the HTTP client if this client created it."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncTokenClient(_ClientBase):
    """The asyncio face of :class:`TokenClient`: same constructor, awaited methods.

    ::

        async with AsyncTokenClient(client_id="...", client_secret="...", tenant_id="...") as c:
            token = await c.get_token("api://calc-api/.default")
            async with httpx.AsyncClient(auth=c.auth("api://calc-api")) as http:
                await http.get(url)

    ``http_client`` is an ``httpx.AsyncClient`` (not closed by us). Use one instance per event
    loop; concurrent tasks asking for the same scopes share one POST.
    """

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str | None = None,
        credential: Credential | None = None,
        tenant_id: str | None = None,
        authority_host: str | None = None,
        token_endpoint: str | None = None,
        auth_method: str = "client_secret_post",
        http_client: httpx.AsyncClient | None = None,
        refresh_margin: float = 300.0,
        max_retries: int = 3,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            client_id=client_id,
            client_secret=client_secret,
            credential=credential,
            tenant_id=tenant_id,
            authority_host=authority_host,
            token_endpoint=token_endpoint,
            auth_method=auth_method,
            refresh_margin=refresh_margin,
            max_retries=max_retries,
            timeout=timeout,
            clock=clock,
        )
        if http_client is not None and not isinstance(http_client, httpx.AsyncClient):
            raise ConfigurationError(
                "http_client must be an httpx.AsyncClient (use TokenClient for httpx.Client)",
                setting="http_client",
            )
        self._owns_http = http_client is None
        self._http: httpx.AsyncClient = http_client or new_async_client(timeout)
        self._flights: dict[tuple[str, ...], asyncio.Future[CacheEntry]] = {}
        self._sleep: Callable[[float], Any] = asyncio.sleep

    async def get_token(self, *scopes: str) -> AccessToken:
        """A valid token for ``scopes``; see :meth:`TokenClient.get_token`."""
        try:
            entry = self._hits.get(scopes)
        except TypeError:  # an unhashable scope: a list passed as one argument
            raise _scopes_error(scopes) from None
        if entry is not None and self._clock() < entry.refresh_at:
            return entry.token
        return await self._acquire(scopes)

    async def _acquire(self, raw: tuple[str, ...]) -> AccessToken:
        key = self._key(raw)
        now = self._clock()
        # No lock: nothing below awaits before the flight is registered, and one event loop
        # runs one task at a time.
        cached = self._store.get(key)
        state = RefreshPolicy.state(cached, now)
        if state is TokenState.FRESH:
            assert cached is not None
            self._remember(raw, cached)
            return cached.token
        flight = self._flights.get(key)
        if flight is not None and flight.done():
            # A fetch ends by removing itself (_fetch's finally), so a finished one still here
            # was cancelled before it started (a shutdown cancelling every task): awaiting it
            # again would raise CancelledError on every call for these scopes, forever.
            del self._flights[key]
            flight = None
        if flight is None:
            # The fetch runs in its own task so a cancelled caller does not cancel it for the
            # others; shield() below keeps each waiter's cancellation its own.
            flight = asyncio.ensure_future(self._fetch(raw, key, cached, now))
            flight.add_done_callback(_consume)
            self._flights[key] = flight
        elif state is TokenState.STALE:
            assert cached is not None
            return cached.token
        elif flight is asyncio.current_task():
            raise _reentered()
        entry = await asyncio.shield(flight)
        if self._store.get(key) is entry:
            # Only while still cached: another task may have run between the fetch ending and
            # this one resuming, and dropped the token after a 401 (see _drop).
            self._remember(raw, entry)
        return entry.token

    async def _fetch(
        self, raw: tuple[str, ...], key: tuple[str, ...], cached: CacheEntry | None, now: float
    ) -> CacheEntry:
        started = time.perf_counter()
        try:
            outcome = await self._drive(self._flow(raw, key, cached, now))
            self._settle(key, outcome)
        finally:
            self._flights.pop(key, None)
        self._log(key, outcome, started)
        return outcome.entry

    async def _drive(self, flow: Generator[Step, StepReply, FetchOutcome]) -> FetchOutcome:
        reply: StepReply = None
        try:
            while True:
                try:
                    step = flow.send(reply)
                except StopIteration as stop:
                    outcome: FetchOutcome = stop.value
                    return outcome
                if isinstance(step, Prepare):
                    reply = await self._arequest_fields(step)
                elif isinstance(step, Send):
                    reply = await self._send(step.request)
                else:
                    logger.debug("token request will be retried in %.2f s", step.seconds)
                    await self._sleep(step.seconds)
                    reply = self._clock()
        finally:
            flow.close()

    async def _arequest_fields(self, step: Prepare) -> Prepared | Unprepared:
        credential = self._credential
        if isinstance(credential, AsyncCredential):
            now = self._clock()
            try:
                fields = await credential.arequest_fields(
                    client_id=step.client_id,
                    token_endpoint=step.token_endpoint,
                    auth_method=step.auth_method,
                    now=now,
                )
            except Exception as exc:
                return self._unprepared(exc, now)
            return Prepared(fields, now)
        return self._request_fields(step)

    async def _send(self, request: TokenRequest) -> Reply | Failure:
        try:
            response = await self._http.send(
                self._post(request), auth=_NO_AUTH, follow_redirects=False
            )
        except (httpx.RequestError, httpx.HTTPStatusError) as exc:
            outcome = self._outcome(exc)
        else:
            return self._reply(response)
        return outcome  # see TokenClient._send: keep the httpx error out of __context__

    async def aclose(self) -> None:
        """Close the HTTP client if this client created it."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _scopes_error(scopes: tuple[object, ...]) -> BaseException:
    """The ConfigurationError that :func:`normalize_scopes` raises for ``scopes``."""
    try:
        normalize_scopes(scopes, azure=False)  # type: ignore[arg-type]
    except ConfigurationError as exc:
        return exc
    return ConfigurationError(f"scopes must be strings, got {scopes!r}", setting="scopes")


def _consume(task: asyncio.Future[CacheEntry]) -> None:
    # Mark the outcome as retrieved: when every waiter was cancelled, asyncio would otherwise
    # log "exception was never retrieved" for an error nobody is left to see.
    if not task.cancelled():
        task.exception()
