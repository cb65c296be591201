"""What ``TokenClient`` and ``AsyncTokenClient`` share: configuration, the token cache, and
turning the core's steps into httpx requests and back. No IO and no waiting here: the faces in
:mod:`ccflow.client` send, sleep and keep callers in single flight.

How the pieces fit, in the order ``get_token`` takes them (the why of each is in
``docs/caller.md``, "How the client works")::

    options = _options(claims, tenant_id, ...)   azure-core's keywords, checked
    key = _key(scopes, options)                  normalised scopes at the token endpoint
    local cache fresh for key?                   -> its token (a claims challenge skips it)
    a flight for key?                            -> its token (or the stale one meanwhile)
    else lead: cache.refill(key, now, fetch)     -> another process's entry, or fetch():
        _flow(...) driven by the face            -> ccflow._core.flow.fetch_flow
    _settle(key, outcome)                        -> local cache, or the refresh's error
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, TypeVar, cast
from urllib.parse import urlsplit

import httpx

from ccflow._azure_core import (
    DEFAULT_OPTIONS,
    TokenInfo,
    TokenOptions,
    allowed_tenants,
    token_options,
)
from ccflow._client_config import (
    DEFAULT_TIMEOUT,
    ClientConfig,
    arguments_from_env,
    named_after_variable,
)
from ccflow._config import CACHE_VARIABLES, SettingNames
from ccflow._core.cache import (
    FORCED_REFRESH_INTERVAL,
    CacheEntry,
    RefreshPolicy,
    TokenState,
    may_force_refresh,
)
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
from ccflow._token_cache import DEFAULT_MAX_ENTRIES, LocalLevel, MemoryTokenCache, TokenKey
from ccflow._unpicklable import Unpicklable
from ccflow._version import __version__
from ccflow.credentials import Credential
from ccflow.errors import CCFlowError, ConfigurationError, CredentialError

if TYPE_CHECKING:
    from ccflow.redis import RedisTokenCache

__all__ = [
    "NO_AUTH",
    "BaseTokenClient",
    "Need",
    "cache_from_env",
    "credential_arguments",
    "reentered",
]

logger = logging.getLogger("ccflow")

HttpT = TypeVar("HttpT", httpx.Client, httpx.AsyncClient)
SleepT = TypeVar("SleepT")
CacheT = TypeVar("CacheT", bound=LocalLevel)
# httpx's base Auth sends the request unchanged: the token POST never uses the http client's
# own auth, which may be this client's BearerAuth.
NO_AUTH = httpx.Auth()
_USER_AGENT = f"ccflow/{__version__}"


@dataclass(frozen=True, slots=True)
class Need:
    """A token a caller waits for: the scopes as the caller wrote them, their cache key,
    azure-core's options, and the local cache's entry as read at ``now`` (``None`` for a
    claims challenge, which is never answered from the cache)."""

    raw: tuple[str, ...]
    key: TokenKey
    options: TokenOptions
    cached: CacheEntry | None
    now: float

    @property
    def state(self) -> TokenState:
        """Where the cached entry stands at ``now``."""
        return RefreshPolicy.state(self.cached, self.now)


class BaseTokenClient(Unpicklable, Generic[HttpT, SleepT, CacheT]):
    """The constructor, the token cache and everything that does no IO, shared by both faces.

    A face names its http client class (``_HTTP_CLASS``, refused otherwise with
    ``_HTTP_MISMATCH``), how to make one (``_new_http``), its default ``sleep`` and the
    cache protocol it needs (``_CACHE_PROTOCOL``).
    """

    _HTTP_CLASS: ClassVar[type[httpx.Client] | type[httpx.AsyncClient]]
    _HTTP_MISMATCH: ClassVar[str]
    _CACHE_PROTOCOL: ClassVar[tuple[str, tuple[str, ...]]]  # its name, its methods
    _WHY_UNPICKLABLE = (
        "holds a credential and connections and cannot be pickled; create one per process "
        "(e.g. with from_env())"
    )

    def __init__(
        self,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        credential: Credential | None = None,
        tenant_id: str | None = None,
        authority_host: str | None = None,
        token_endpoint: str | None = None,
        auth_method: str = "client_secret_post",
        http_client: HttpT | None = None,
        refresh_margin: float = 300.0,
        max_retries: int = 3,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.time,
        sleep: SleepT | None = None,
        cache: CacheT | None = None,
        additionally_allowed_tenants: Iterable[str] | None = None,
    ) -> None:
        config = ClientConfig.build(
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
        self._check_parts(http_client, sleep, cache)
        # Tenants get_token(tenant_id=...) may name besides the client's own (azure-core).
        self._allowed_tenants = allowed_tenants(additionally_allowed_tenants)
        self.client_id = config.client_id
        self.token_endpoint = config.token_endpoint
        self.auth_method = config.auth_method
        self._config = config
        self._clock = config.clock
        self._timeout_extension = httpx.Timeout(config.timeout).as_dict()
        self._host = urlsplit(config.token_endpoint).netloc
        self._owns_http = http_client is None
        self._http: HttpT = http_client if http_client is not None else self._new_http(timeout)
        self._sleep: SleepT = sleep if sleep is not None else self._default_sleep()
        self.cache: CacheT = cache if cache is not None else self._default_cache()
        self._owned_cache: RedisTokenCache | None = None  # from_env's: closed with the client
        # Normalised scopes -> when a 401 last forced a refresh (see _may_invalidate).
        self._forced: dict[tuple[str, ...], float] = {}
        self._flights: dict[TokenKey, Any] = {}
        # Orders the sync face's cache decisions between threads; the asyncio face (one loop,
        # no await before a flight is registered) never takes it.
        self._lock = threading.Lock()
        self._background: set[Any] = set()  # the asyncio face's shared-cache tasks

    def _new_http(self, timeout: float | httpx.Timeout) -> HttpT:
        """The face's own http client, made when none was given (closed by ``close``)."""
        raise NotImplementedError

    def _default_sleep(self) -> SleepT:
        """How the face waits between retries unless told (``time.sleep``/``asyncio.sleep``)."""
        raise NotImplementedError

    def _check_parts(self, http_client: object, sleep: object, cache: object) -> None:
        """Refuse an http client of the other face, a ``sleep`` that cannot be called, and a
        ``cache`` that lacks a method of the face's protocol."""
        if http_client is not None and not isinstance(http_client, self._HTTP_CLASS):
            raise ConfigurationError(self._HTTP_MISMATCH, setting="http_client")
        if sleep is not None and not callable(sleep):
            raise ConfigurationError(
                "sleep must be a callable taking seconds (like time.sleep or asyncio.sleep)",
                setting="sleep",
            )
        name, methods = self._CACHE_PROTOCOL
        if cache is not None and not all(callable(getattr(cache, m, None)) for m in methods):
            raise ConfigurationError(
                f"cache must implement {name} ({', '.join(methods)}), got {type(cache).__name__}",
                setting="cache",
            )

    def _default_cache(self) -> CacheT:
        """The cache of a client given none: this process's memory."""
        return cast(CacheT, MemoryTokenCache())  # it implements both protocols

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(client_id={self.client_id!r}, "
            f"token_endpoint={self.token_endpoint!r})"
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
        choice is logged at DEBUG), and the shared token cache: ``CCFLOW_TOKEN_CACHE``
        (a ``redis://``, ``rediss://`` or ``unix://`` URL, see :mod:`ccflow.redis`) with
        ``CCFLOW_TOKEN_CACHE_KEY``, and ``AZURE_ADDITIONALLY_ALLOWED_TENANTS`` (tenant ids
        separated by ``;``) as ``additionally_allowed_tenants``. ``options`` are the other
        constructor keywords (``http_client``, ``clock``, ``sleep``, ``cache``, ...)::

            client = TokenClient.from_env(max_retries=5)
        """
        env = os.environ if environ is None else environ
        arguments = arguments_from_env(env, options)
        if "cache" not in options:
            arguments["cache"] = cache_from_env(env)
        elif env.get(CACHE_VARIABLES["cache"], "").strip():
            raise ConfigurationError(
                "from_env() reads cache from CCFLOW_TOKEN_CACHE; unset the variable or drop "
                "the cache= option",
                setting="cache",
            )
        try:
            client = cls(**arguments, **options)
        except ConfigurationError as exc:
            renamed = named_after_variable(exc)
            if renamed is None:
                raise
            raise renamed from None
        client._owned_cache = arguments.get("cache")
        return client

    # -- shared by both faces (no IO) --

    def _key(self, scopes: tuple[str, ...], options: TokenOptions = DEFAULT_OPTIONS) -> TokenKey:
        """The cache key of ``scopes``: checked and, for Azure AD, completed; at another
        tenant's token endpoint when ``options`` name one."""
        normalized = normalize_scopes(scopes, azure=self._config.azure)
        endpoint = options.token_endpoint or self.token_endpoint
        return TokenKey(endpoint, self.client_id, normalized)

    def _may_invalidate(self, token: AccessToken, key: TokenKey) -> bool:
        """Whether ``token``, still cached for ``key``, may be dropped now (see invalidate);
        if so, the forced refresh is recorded."""
        entry = self.cache.get(key)
        if entry is None or entry.token != token:
            return False
        now = self._clock()
        scopes = key.scopes
        if not may_force_refresh(self._forced.get(scopes), now):
            return False
        if len(self._forced) >= DEFAULT_MAX_ENTRIES:  # bounded like the cache
            cutoff = now - FORCED_REFRESH_INTERVAL
            self._forced = {k: at for k, at in self._forced.items() if cutoff < at <= now}
        self._forced[scopes] = now
        return True

    def _settle(self, need: Need, outcome: FetchOutcome) -> None:
        """Cache what a fetch for ``need`` gave; a failed refresh of a token invalidated
        meanwhile raises. A plain fetch keeps an entry stored since it began (a claims
        challenge's answer, newer than the token the fetch replaces)."""
        current = self.cache.get(need.key)
        if outcome.error is not None:
            if current is None or current.token is not outcome.entry.token:
                raise outcome.error
        elif not need.options.fresh and current is not None and current != need.cached:
            return
        self.cache.put(need.key, outcome.entry, need.now)

    def _need(self, raw: tuple[str, ...], key: TokenKey, options: TokenOptions) -> Need:
        """``key``'s need now: the clock, then the local cache (skipped for a claims challenge)."""
        now = self._clock()
        return Need(raw, key, options, None if options.fresh else self.cache.get(key), now)

    def _flow(self, need: Need) -> Generator[Step, StepReply, FetchOutcome]:
        """The core's fetch for ``need`` (at its key's token endpoint: another tenant's, when
        asked); errors mention the scopes as the caller wrote them."""
        fetch = self._config.fetch
        key = need.key
        if key.token_endpoint != fetch.token_endpoint:
            fetch = replace(fetch, token_endpoint=key.token_endpoint)
        completed = tuple(s for s in need.raw if s not in key.scopes)
        context = ErrorContext(self.client_id, fetch.token_endpoint, key.scopes, completed)
        return fetch_flow(
            fetch,
            key.scopes,
            cached=need.cached,
            now=need.now,
            context=context,
            claims=need.options.claims,
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

    def _token_info(self, key: TokenKey, token: AccessToken) -> TokenInfo:
        """``token`` as azure-core's ``AccessTokenInfo``, with when it will be refreshed."""
        entry = self.cache.get(key)
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

    def _log(self, key: TokenKey, outcome: FetchOutcome, started: float, *, fetched: bool) -> None:
        """One INFO line per fetch, or a WARNING when a cached token is served after a failure;
        a token another process fetched gets a DEBUG line."""
        ms = (time.perf_counter() - started) * 1000.0
        if not fetched:
            logger.debug(
                "token from the shared cache host=%s client_id=%s scopes=%s duration_ms=%.1f",
                self._host,
                self.client_id,
                " ".join(key.scopes),
                ms,
            )
        elif outcome.error is None:
            logger.info(
                "fetched token host=%s client_id=%s scopes=%s expires_in=%s duration_ms=%.1f",
                self._host,
                self.client_id,
                " ".join(key.scopes),
                outcome.expires_in,
                ms,
            )
        else:
            logger.warning(
                "token refresh failed, serving the cached token until it expires: host=%s "
                "client_id=%s scopes=%s error=%s duration_ms=%.1f",
                self._host,
                self.client_id,
                " ".join(key.scopes),
                outcome.error,
                ms,
            )


def cache_from_env(environ: Mapping[str, str]) -> RedisTokenCache | None:
    """The ``RedisTokenCache`` that ``CCFLOW_TOKEN_CACHE`` names, or ``None`` when unset."""
    variable = CACHE_VARIABLES["cache"]
    url = environ.get(variable, "").strip()
    if not url:
        return None
    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise ConfigurationError(
            f"{variable}: must be a redis://, rediss:// or unix:// URL", setting=variable
        )
    try:
        from ccflow.redis import RedisTokenCache
    except ImportError:
        raise ConfigurationError(
            f"{variable}: is set but redis-py is not installed: pip install 'ccflow-oauth[redis]'",
            setting=variable,
        ) from None
    key = environ.get(CACHE_VARIABLES["encryption_key"], "").strip() or None
    try:
        return RedisTokenCache(url, encryption_key=key)
    except ConfigurationError as exc:
        setting = "encryption_key" if exc.setting == "encryption_key" else "cache"
        raise SettingNames(CACHE_VARIABLES).error(setting, str(exc)) from None


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
