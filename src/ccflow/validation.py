"""``TokenValidator``: is this access token from our authority, for us, from a caller we allow?

::

    validator = TokenValidator(tenant_id="contoso.onmicrosoft.com", audience="api://calc")
    token = await validator.validate(raw)         # raw: the token, without "Bearer "
    token.require_roles("invokeRole")

Azure AD mode (``tenant_id=``) reads the issuer(s) from discovery at ``authority_host``
(v2, plus v1 with ``accept_v1=True``); ``tenant_id="organizations"`` or ``"common"`` is
multi-tenant: the issuer is the ``{tenantid}`` template filled with the token's ``tid``, and
``allowed_tenants`` is required. Generic OIDC mode (``issuer=``) trusts exactly that issuer;
tokens without ``tid``/``ver``, with ``typ: at+jwt`` or a resource-URI ``aud`` are normal.

The hot path: a token seen before costs a SHA-256 digest, a dict lookup and an ``exp``
check; :meth:`TokenValidator.cached` offers exactly that as a plain (synchronous) call, which
``RequireRole`` uses before it awaits anything. A fresh token costs one strict parse and one
signature verification with a key object loaded once from the JWKS.
"""

from __future__ import annotations

import contextvars
import dataclasses
import hashlib
import math
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
from cachetools import Cache

from ccflow._core.claims import (
    ANY_TENANT,
    TENANT_PLACEHOLDER,
    ClaimRules,
    IssuerRule,
    ValidatedToken,
    check_claims,
)
from ccflow._core.discovery import discovery_url_for_issuer
from ccflow._core.jwks import RefreshPolicy
from ccflow._core.jwt import (
    DEFAULT_MAX_TOKEN_SIZE,
    check_algorithms,
    parse_ascii,
    parse_compact,
    verify_signature,
)
from ccflow._core.urls import (
    DEFAULT_AUTHORITY_HOST,
    MULTI_TENANT_NAMES,
    discovery_url_for,
    normalize_authority_host,
    reject_tenant_in_host,
    require_secure_url,
)
from ccflow.errors import ConfigurationError, InvalidTokenError
from ccflow.jwks import AsyncJWKSCache, DiscoverySource, KeySourcePlan

__all__ = ["ENVIRONMENT_VARIABLES", "TokenValidator", "ValidatedToken"]


ENVIRONMENT_VARIABLES: Final[Mapping[str, str]] = {
    "issuer": "CCFLOW_ISSUER",
    "tenant_id": "CCFLOW_TENANT_ID",
    "authority_host": "AZURE_AUTHORITY_HOST",
    "audience": "CCFLOW_AUDIENCE",
    "allowed_clients": "CCFLOW_ALLOWED_CLIENTS",
    "allowed_tenants": "CCFLOW_ALLOWED_TENANTS",
    "accept_v1": "CCFLOW_ACCEPT_V1",
}
"""Which environment variable :meth:`TokenValidator.from_env` reads for each argument."""

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})

# While from_env builds a validator, configuration errors name the environment variable.
_setting_names: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "ccflow_setting_names", default=MappingProxyType({})
)


def _name(setting: str) -> str:
    return _setting_names.get().get(setting, setting)


def _config_error(setting: str, message: str) -> ConfigurationError:
    name = _name(setting)
    return ConfigurationError(f"{name}: {message}", setting=name)


@contextmanager
def _renamed(names: Mapping[str, str]) -> Iterator[None]:
    reset = _setting_names.set(names)
    try:
        yield
    finally:
        _setting_names.reset(reset)


def _is_plain(value: str) -> bool:
    """A value an audience, client or tenant setting may hold: non-empty, with no whitespace
    and no control character."""
    return bool(value) and not any(c.isspace() or not c.isprintable() for c in value)


def _strings(value: object, setting: str, *, required: bool) -> tuple[str, ...] | None:
    if value is None:
        if required:
            raise _config_error(setting, "is required")
        return None
    if isinstance(value, str):
        items: list[object] = [value]
    elif isinstance(value, Iterable):
        items = list(value)
    else:
        raise _config_error(setting, "must be a string or a list of strings")
    if any(not isinstance(item, str) or not item.strip() for item in items):
        raise _config_error(setting, "must contain only non-empty strings")
    result = tuple(dict.fromkeys(str(item).strip() for item in items))
    for item in result:
        if not _is_plain(item):
            # No client id, tenant id or App ID URI has one; "api://a, api://b" as one string
            # (a list written the environment's way) would never match a token, silently.
            raise _config_error(
                setting,
                f"{item!r} contains whitespace or a control character; "
                "give several values as a list (or comma-separated in the environment)",
            )
    if not result:
        raise _config_error(setting, "must not be empty")
    return result


def _split_env(value: str | None) -> list[str] | None:
    if value is None or not value.strip():
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


def _valid_url(url: object, setting: str, *, authority_host: bool = False) -> str:
    """``require_secure_url`` (or ``normalize_authority_host``), plus what ``urlsplit`` raises
    ``ValueError`` for (a broken IPv6 host) or checks only when asked (the port), and a host
    httpx cannot encode (``xn--zz.example``, ``\ufb00.com``): a URL the HTTP client could
    never use fails here, naming the setting, not on every request."""
    if not isinstance(url, str):
        raise ConfigurationError(
            f"{setting} must be a URL string, got {type(url).__name__}", setting=setting
        )
    try:
        if authority_host:
            url = normalize_authority_host(url, setting=setting)
        else:
            require_secure_url(url, setting=setting)
        urlsplit(url).port  # noqa: B018
        httpx.URL(url).host  # noqa: B018  (IDNA is checked only when asked)
    except (ValueError, httpx.InvalidURL):  # idna.IDNAError is a ValueError
        raise ConfigurationError(
            f"{setting} is not a valid URL, got {url!r}", setting=setting
        ) from None
    return url


def _seconds(value: object, setting: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise _config_error(setting, "must be a non-negative number of seconds")
    return float(value)


class TokenValidator:
    """Validates access tokens for one API. Build once at startup, share across requests.

    Configuration errors raise :class:`~ccflow.errors.ConfigurationError` naming the argument
    (or, from :meth:`from_env`, the environment variable). :meth:`validate` raises
    :class:`~ccflow.errors.InvalidTokenError` (401), :class:`~ccflow.errors.InsufficientScopeError`
    (403: caller or tenant not allowed) or :class:`~ccflow.errors.KeysUnavailableError` (503).

    Arguments (all keyword-only):

    - ``issuer``: generic OIDC issuer URL (discovery at ``{issuer}/.well-known/...``); or
    - ``tenant_id``: Azure AD tenant (GUID or domain; ``organizations``/``common`` for
      multi-tenant) with ``authority_host`` (default ``AZURE_AUTHORITY_HOST`` or
      ``https://login.microsoftonline.com``);
    - ``audience``: one or more accepted ``aud`` values (client id and App ID URI);
    - ``allowed_clients``: allow-list of caller client ids (``azp``/``appid``);
    - ``accept_v1``: also accept Azure AD v1.0 tokens (default off);
    - ``allowed_tenants``: allow-list of ``tid`` values (required when multi-tenant;
      ``["*"]`` accepts any tenant);
    - ``leeway``: clock skew allowed on ``exp``/``nbf``/``iat``, seconds (default 60);
    - ``algorithms``: allowed signing algorithms (default ``["RS256"]``; never ``none``/HS*);
    - ``jwks_uri``: take keys from here instead of the discovery document's ``jwks_uri``;
    - ``http_client``: an ``httpx.AsyncClient`` for discovery and JWKS (not closed by us);
    - ``clock``: callable returning Unix seconds (default ``time.time``);
    - ``max_token_size`` (default 16 KiB), ``cache_size`` (verified tokens kept, default
      4096), ``jwks_ttl`` (3600 s), ``jwks_cooldown`` (unknown-``kid`` refetch at most once
      per this, 30 s), ``jwks_max_stale`` (keys served while refreshes fail, 86400 s).
    """

    def __init__(
        self,
        *,
        issuer: str | None = None,
        tenant_id: str | None = None,
        authority_host: str | None = None,
        audience: str | Iterable[str] | None = None,
        allowed_clients: Iterable[str] | None = None,
        accept_v1: bool = False,
        allowed_tenants: Iterable[str] | None = None,
        leeway: float = 60.0,
        algorithms: Iterable[str] = ("RS256",),
        jwks_uri: str | None = None,
        http_client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
        max_token_size: int = DEFAULT_MAX_TOKEN_SIZE,
        cache_size: int = 4096,
        jwks_ttl: float = 3600.0,
        jwks_cooldown: float = 30.0,
        jwks_max_stale: float = 86400.0,
    ) -> None:
        audiences = _strings(audience, "audience", required=True)
        assert audiences is not None
        clients = _strings(allowed_clients, "allowed_clients", required=False)
        tenants = _strings(allowed_tenants, "allowed_tenants", required=False)
        if not isinstance(accept_v1, bool):
            raise _config_error("accept_v1", "must be True or False")
        algs = check_algorithms(
            # check_algorithms words the error for anything that is not a list of names.
            list(algorithms)
            if isinstance(algorithms, Iterable) and not isinstance(algorithms, str)
            else algorithms,
            setting=_name("algorithms"),
        )
        if http_client is not None and not isinstance(http_client, httpx.AsyncClient):
            # A sync httpx.Client would block the event loop, then fail on every request.
            raise _config_error(
                "http_client",
                f"must be an httpx.AsyncClient, got {type(http_client).__name__}",
            )
        if not callable(clock):
            raise _config_error("clock", "must be a callable returning Unix seconds")
        self._leeway = _seconds(leeway, "leeway")
        if isinstance(max_token_size, bool) or not isinstance(max_token_size, int):
            raise _config_error("max_token_size", "must be a positive integer")
        if max_token_size <= 0:
            raise _config_error("max_token_size", "must be a positive integer")
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise _config_error("cache_size", "must be a non-negative integer")
        policy = RefreshPolicy(
            ttl=_seconds(jwks_ttl, "jwks_ttl"),
            cooldown=_seconds(jwks_cooldown, "jwks_cooldown"),
            max_stale=_seconds(jwks_max_stale, "jwks_max_stale"),
        )
        if jwks_uri is not None:
            _valid_url(jwks_uri, _name("jwks_uri"))

        if issuer is not None and tenant_id is not None:
            raise _config_error(
                "issuer", f"give either {_name('issuer')} or {_name('tenant_id')}, not both"
            )
        if issuer is None and tenant_id is None:
            raise _config_error(
                "tenant_id", f"is required (or {_name('issuer')} for a generic OIDC issuer)"
            )
        azure = tenant_id is not None
        if issuer is not None:
            if not isinstance(issuer, str) or not issuer.strip():
                raise _config_error("issuer", "must be the issuer URL")
            _valid_url(issuer, _name("issuer"))
            if "?" in issuer or "#" in issuer:
                # OIDC Discovery 1.0: an issuer has no query or fragment; the discovery URL
                # appended after one would never be the document.
                raise _config_error("issuer", "must not contain a query or fragment")
            if authority_host is not None:
                raise _config_error(
                    "authority_host",
                    f"applies to Azure AD ({_name('tenant_id')}=...) only; a generic issuer's "
                    "discovery document is at {issuer}/.well-known/openid-configuration",
                )
            if accept_v1:
                # Token versions are Azure AD's: a generic issuer's tokens are taken as they
                # come, with or without ver, so the option would silently do nothing.
                raise _config_error(
                    "accept_v1",
                    f"applies to Azure AD ({_name('tenant_id')}=...) only; a generic issuer's "
                    "tokens are accepted whatever their version",
                )
            if TENANT_PLACEHOLDER in issuer:
                # The template would match any tenant's issuer, with no allow-list: that is
                # multi-tenant mode, which needs tenant_id and allowed_tenants.
                raise _config_error(
                    "issuer",
                    f"is a multi-tenant template ({TENANT_PLACEHOLDER}), which would accept "
                    f"tokens from any tenant; use {_name('tenant_id')}='organizations' (or "
                    f"'common') with {_name('allowed_tenants')} instead",
                )
            url = discovery_url_for_issuer(issuer, setting=_name("issuer"))
            plan = (
                KeySourcePlan(jwks_uri=jwks_uri, static_issuers=(IssuerRule(issuer),))
                if jwks_uri is not None
                else KeySourcePlan(discoveries=(DiscoverySource(url, expected_issuer=issuer),))
            )
            multi = False
        else:
            assert tenant_id is not None
            if not isinstance(tenant_id, str) or not tenant_id.strip():
                raise _config_error("tenant_id", "must be a tenant GUID or domain name")
            tenant = tenant_id.strip()
            host_setting = "authority_host"
            if authority_host is None:
                env_host = os.environ.get("AZURE_AUTHORITY_HOST", "").strip()
                if env_host:
                    authority_host, host_setting = env_host, "AZURE_AUTHORITY_HOST"
                else:
                    authority_host = DEFAULT_AUTHORITY_HOST
            host = _valid_url(authority_host, _name(host_setting), authority_host=True)
            try:
                v2 = discovery_url_for(host, tenant)
                v1 = discovery_url_for(host, tenant, version=1)
            except ConfigurationError:
                raise _config_error("tenant_id", "must be a tenant GUID or domain name") from None
            reject_tenant_in_host(host, tenant, setting=_name(host_setting))
            multi = tenant.lower() in MULTI_TENANT_NAMES
            sources = [DiscoverySource(v2, version="2.0", multi_tenant=multi)]
            if accept_v1:
                sources.append(DiscoverySource(v1, version="1.0", multi_tenant=multi))
            plan = KeySourcePlan(discoveries=tuple(sources), jwks_uri=jwks_uri)
        if multi and tenants is None:
            raise _config_error(
                "allowed_tenants",
                f"is required for a multi-tenant API (tenant_id={tenant_id!r}); list the "
                f"tenant ids to accept, or {ANY_TENANT!r} to accept any tenant",
            )

        self._rules_template = ClaimRules(
            issuers=(),
            audiences=frozenset(audiences),
            azure=azure,
            accept_v1=accept_v1,
            allowed_clients=frozenset(clients) if clients is not None else None,
            allowed_tenants=frozenset(tenants) if tenants is not None else None,
            leeway=self._leeway,
        )
        self._rules: ClaimRules | None = None
        self._algorithms = algs
        self._max_size = max_token_size
        self._clock = clock
        self._realm = audiences[0]
        self._keys = AsyncJWKSCache(
            plan, algorithms=algs, policy=policy, clock=clock, http_client=http_client
        )
        # Bounded; keyed by the SHA-256 digest of the token, never the token; an entry is
        # served only while its token's exp is in the future, and dropped when found expired.
        # Only tokens that passed every check get in.
        self._cache = _VerifiedTokens(cache_size) if cache_size else None
        self._entries = self._cache.entries if self._cache is not None else None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> TokenValidator:
        """Build a validator from the environment (``environ`` defaults to ``os.environ``).

        ================================  =========================================
        variable                          argument
        ================================  =========================================
        ``CCFLOW_ISSUER``                 ``issuer`` (generic OIDC)
        ``CCFLOW_TENANT_ID``              ``tenant_id`` (else ``AZURE_TENANT_ID``)
        ``AZURE_AUTHORITY_HOST``          ``authority_host``
        ``CCFLOW_AUDIENCE``               ``audience`` (comma-separated)
        ``CCFLOW_ALLOWED_CLIENTS``        ``allowed_clients`` (comma-separated)
        ``CCFLOW_ALLOWED_TENANTS``        ``allowed_tenants`` (comma-separated)
        ``CCFLOW_ACCEPT_V1``              ``accept_v1`` (true/false, 1/0, yes/no, on/off)
        ================================  =========================================

        Keyword ``overrides`` (``http_client=``, ``clock=``, ...) are passed through and win
        over the environment. A bad or missing value raises
        :class:`~ccflow.errors.ConfigurationError` naming the variable (or, for an override,
        the argument).
        """
        env = os.environ if environ is None else environ
        names = dict(ENVIRONMENT_VARIABLES)

        def get(name: str) -> str | None:
            value = env.get(name)
            return value.strip() if value is not None and value.strip() else None

        kwargs: dict[str, Any] = {}
        issuer, tenant = get("CCFLOW_ISSUER"), get("CCFLOW_TENANT_ID")
        if issuer is None and tenant is None:
            tenant = get("AZURE_TENANT_ID")
            if tenant is not None:
                names["tenant_id"] = "AZURE_TENANT_ID"
        if issuer is not None:
            kwargs["issuer"] = issuer
        if tenant is not None:
            kwargs["tenant_id"] = tenant
        host = get("AZURE_AUTHORITY_HOST")
        # A generic issuer has no authority host (Azure SDKs' variable may be set all the same).
        if issuer is None and overrides.get("issuer") is None:
            if host is not None:
                kwargs["authority_host"] = host
            elif environ is not None:
                # A mapping passed in is the whole environment: the constructor's own fallback
                # to os.environ["AZURE_AUTHORITY_HOST"] must not reach past it.
                kwargs["authority_host"] = DEFAULT_AUTHORITY_HOST
        for setting in ("audience", "allowed_clients", "allowed_tenants"):
            values = _split_env(env.get(ENVIRONMENT_VARIABLES[setting]))
            if values is not None:
                kwargs[setting] = values
        accept = get("CCFLOW_ACCEPT_V1")
        if accept is not None:
            if accept.lower() not in _TRUE | _FALSE:
                raise ConfigurationError(
                    f"CCFLOW_ACCEPT_V1: expected true or false, got {accept!r}",
                    setting="CCFLOW_ACCEPT_V1",
                )
            kwargs["accept_v1"] = accept.lower() in _TRUE
        kwargs.update(overrides)
        for setting in overrides:
            # A value passed in is named as the argument it is, not as a variable.
            names[setting] = setting
        with _renamed(names):
            return cls(**kwargs)

    @property
    def realm(self) -> str:
        """The realm for ``WWW-Authenticate`` (the first configured audience)."""
        return self._realm

    @property
    def algorithms(self) -> frozenset[str]:
        """The allowed signing algorithms."""
        return self._algorithms

    async def validate(self, token: str) -> ValidatedToken:
        """Validate ``token`` (the bare token, without ``Bearer``) and return its verdict.

        Raises :class:`~ccflow.errors.InvalidTokenError` (``.reason`` says which check),
        :class:`~ccflow.errors.InsufficientScopeError` or
        :class:`~ccflow.errors.KeysUnavailableError`.
        """
        if not isinstance(token, str) or len(token) > self._max_size or not token.isascii():
            # parse_compact words the error; it never looks further than this.
            parse_compact(token, algorithms=self._algorithms, max_size=self._max_size)
        # The hot path: a token seen before costs a digest, a dict lookup and an exp check.
        raw = token.encode("ascii")
        hit = self._probe(raw)
        if isinstance(hit, ValidatedToken):
            return hit
        # A miss hands its digest on; with no cache (None) the digest is never used.
        return await self._verify(raw, hit or b"")

    def cached(self, token: str | bytes) -> ValidatedToken | None:
        """The verdict on ``token`` if this validator accepted it before and its ``exp`` is
        still ahead; ``None`` otherwise (never seen, evicted, expired, cache disabled).

        A plain call that never raises and never does IO: a SHA-256 digest, a dict lookup and
        an ``exp`` check against the validator's clock. ``token`` is the bare token (``str``,
        or the raw ``bytes`` from the Authorization header, which saves a decode). On
        ``None``, call :meth:`validate`, which gives the full verdict::

            verdict = validator.cached(raw) or await validator.validate(raw)
        """
        if type(token) is not bytes:
            if not isinstance(token, str):
                return None
            token = token.encode("utf-8", "surrogatepass")
        hit = self._probe(token)
        return hit if type(hit) is ValidatedToken else None

    def _hot_path(
        self,
    ) -> (
        tuple[
            Callable[[bytes], ValidatedToken | bytes | None],
            Callable[[bytes, bytes], Awaitable[ValidatedToken]],
        ]
        | None
    ):
        """``(_probe, _verify)`` for ``RequireRole``, or ``None`` when a subclass, or the
        instance itself (``validator.validate = ...``, ``mock.patch.object``), replaces
        :meth:`validate` or :meth:`cached`: those checks must see every new token."""
        cls = type(self)
        if cls.validate is not TokenValidator.validate or cls.cached is not TokenValidator.cached:
            return None
        if "validate" in vars(self) or "cached" in vars(self):
            return None
        return self._probe, self._verify

    def _probe(self, raw: bytes) -> ValidatedToken | bytes | None:
        """``RequireRole``'s lookup: the verdict on a cached token; on a miss, the digest to
        hand to :meth:`_verify` so that it is not computed twice; ``None`` when there is no
        cache or ``raw`` is over the size cap (call :meth:`validate`)."""
        entries = self._entries
        if entries is None or len(raw) > self._max_size:
            return None  # no hashing of oversized input: it was never cached
        digest = _sha256(raw).digest()
        hit = entries.get(digest)
        if hit is None:
            return digest
        if self._clock() < hit.expires_on:
            return hit
        # Found past its exp: drop it now rather than wait for eviction.
        if self._cache is not None:
            self._cache.pop(digest, None)
        return digest

    async def _verify(self, raw: bytes, digest: bytes) -> ValidatedToken:
        """Validate the token ``raw`` (whose SHA-256 ``digest`` missed the cache) and cache
        the verdict. ``raw`` must be ASCII and within the size cap (validate() checks, and so
        does RequireRole before it calls this)."""
        parsed = parse_ascii(raw, self._algorithms)
        keys = self._keys
        key = keys.ready(parsed.kid) or await keys.get_key(parsed.kid)
        if parsed.alg not in key.algorithms:
            raise InvalidTokenError(
                "the token's algorithm does not fit its signing key", reason="algorithm"
            )
        verify_signature(parsed, key.public_key)
        rules = self._rules
        if rules is None or rules.issuers is not keys.issuers:
            rules = self._rules = _with_issuers(self._rules_template, keys.issuers)
        now = self._clock()
        result = check_claims(parsed.claims, rules, now=now, owned=True)
        cache = self._cache
        if cache is not None and now < result.expires_on:
            # Past exp but inside the leeway, the entry would be dead on arrival, and in a full
            # cache it would evict a live one.
            cache[digest] = result
        return result

    async def aclose(self) -> None:
        """Close the HTTP client if the validator created it."""
        await self._keys.aclose()

    async def __aenter__(self) -> TokenValidator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


_sha256: Final = hashlib.sha256


class _VerifiedTokens(Cache[bytes, ValidatedToken]):
    """The verified-token cache: cachetools bounds it and chooses what to evict; ``entries``
    mirrors it for the hot path to read.

    Why both: ``Cache.__getitem__`` is Python code (a try/except around the dict, ``__missing__``
    on a miss), several times the cost of the C ``get`` that a cache hit can afford. Every
    write goes through ``Cache``, and the overrides below keep the mirror equal to it, so the
    mirror is exactly as bounded. Eviction is first-in first-out: the oldest entry, usually
    the soonest to expire, goes first, and a hit costs no bookkeeping. The mirror is an
    ``OrderedDict`` because finding the oldest entry of a plain ``dict`` that keeps losing its
    oldest entries means stepping over every slot they left behind (microseconds per insert
    into a full cache); its ``get`` is ``dict.get``.
    """

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self._limit = maxsize
        self.entries: OrderedDict[bytes, ValidatedToken] = OrderedDict()

    def __setitem__(self, key: bytes, value: ValidatedToken) -> None:
        entries = self.entries
        if len(entries) >= self._limit and key not in entries:
            # Evict here, the oldest first, rather than through Cache.popitem's detour
            # (MutableMapping.popitem -> __getitem__ -> __delitem__): this runs on every insert
            # into a full cache.
            oldest = next(iter(entries))
            Cache.__delitem__(self, oldest)
            del entries[oldest]
        Cache.__setitem__(self, key, value)
        entries[key] = value

    def __delitem__(self, key: bytes) -> None:
        super().__delitem__(key)
        del self.entries[key]

    def popitem(self) -> tuple[bytes, ValidatedToken]:
        # The oldest entry, as MutableMapping.popitem would pick, without its detour through
        # Cache.__getitem__.
        try:
            key = next(iter(self.entries))
        except StopIteration:
            raise KeyError("the verified-token cache is empty") from None
        value = self.entries[key]
        del self[key]
        return key, value

    def clear(self) -> None:
        # cachetools' clear() empties its own dict without __delitem__: empty the mirror too.
        super().clear()
        self.entries.clear()


def _with_issuers(template: ClaimRules, issuers: tuple[IssuerRule, ...]) -> ClaimRules:
    return dataclasses.replace(template, issuers=issuers)
