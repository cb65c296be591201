"""``TokenValidator``: is this access token from our authority, for us, from a caller we allow?

::

    validator = TokenValidator(tenant_id="contoso.onmicrosoft.com", audience="api://calc")
    token = await validator.validate(raw)         # raw: the token, without "Bearer "
    token.require_roles("invokeRole")

Azure AD mode (``tenant_id=``) reads the issuer(s) from discovery at ``authority_host``
(v2, plus v1 with ``accept_v1=True``); ``tenant_id="organizations"`` or ``"common"`` is
multi-tenant: the issuer is the ``{tenantid}`` template filled with the token's ``tid``, and
``allowed_tenants`` is required. Generic OIDC mode (``issuer=``) trusts exactly that issuer;
tokens without ``tid``/``ver``, with ``typ: at+jwt`` or a resource-URI ``aud`` are normal,
and a token with a ``nonce`` claim (an ID token) is refused.

:meth:`TokenValidator.validate` is the one path every token takes, top to bottom: size cap,
cache lookup, parse, key, signature, claims, cache store; :meth:`TokenValidator.validate_sync`
takes the same steps and differs only in how it waits for the key. The cache holds verdicts
on tokens that passed every check, keyed by the SHA-256 digest of the token (never the
token), each until its own ``exp`` and only while the key that verified it is still in the
JWKS.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any, NamedTuple

import httpx

from ccflow._config import ARGUMENTS, SettingNames, authority_host_from
from ccflow._core.claims import ClaimRules, ValidatedToken, check_claims
from ccflow._core.jwks import SigningKey
from ccflow._core.jws import (
    DEFAULT_MAX_TOKEN_SIZE,
    ParsedToken,
    encoded,
    parse_compact,
    verify_signature,
)
from ccflow._validator_config import (
    DEFAULT_ALGORITHMS,
    DEFAULT_CACHE_SIZE,
    DEFAULT_JWKS_COOLDOWN,
    DEFAULT_JWKS_MAX_STALE,
    DEFAULT_JWKS_TTL,
    DEFAULT_LEEWAY,
    ValidatorConfig,
    ValidatorSettings,
    environment_settings,
    media_type,
)
from ccflow._verdict_cache import VerdictCache
from ccflow.errors import InvalidTokenError
from ccflow.jwks import AsyncJWKSCache

__all__ = ["CacheInfo", "TokenValidator", "ValidatedToken"]


class CacheInfo(NamedTuple):
    """The verified-token cache's counters, as ``functools.lru_cache``'s ``cache_info()``."""

    hits: int
    """Validations answered from the cache."""
    misses: int
    """Validations the cache did not answer (every one, with the cache off): the token was
    then checked, whether it passed or not."""
    maxsize: int
    """The cache's bound (``cache_size``); ``0``: off."""
    currsize: int
    """Verdicts held now."""


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
    - ``sync_http_client``: an ``httpx.Client`` for the same, used by :meth:`validate_sync`
      (not closed by us);
    - ``clock``: callable returning Unix seconds (default ``time.time``);
    - ``max_token_size`` (default 16 KiB), ``cache_size`` (verified tokens kept, default
      4096), ``jwks_ttl`` (3600 s), ``jwks_cooldown`` (unknown-``kid`` refetch at most once
      per this, 30 s), ``jwks_max_stale`` (keys served while refreshes fail, 86400 s);
    - ``require_typ``: the ``typ`` header every token must carry, such as ``"at+jwt"``
      (RFC 9068) for an OIDC server that sets it; compared case-insensitively, with or
      without ``application/`` (default: not checked).
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
        leeway: float = DEFAULT_LEEWAY,
        algorithms: Iterable[str] = DEFAULT_ALGORITHMS,
        jwks_uri: str | None = None,
        http_client: httpx.AsyncClient | None = None,
        sync_http_client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
        max_token_size: int = DEFAULT_MAX_TOKEN_SIZE,
        cache_size: int = DEFAULT_CACHE_SIZE,
        jwks_ttl: float = DEFAULT_JWKS_TTL,
        jwks_cooldown: float = DEFAULT_JWKS_COOLDOWN,
        jwks_max_stale: float = DEFAULT_JWKS_MAX_STALE,
        require_typ: str | None = None,
    ) -> None:
        settings = ValidatorSettings(
            issuer=issuer,
            tenant_id=tenant_id,
            authority_host=authority_host,
            audience=audience,
            allowed_clients=allowed_clients,
            accept_v1=accept_v1,
            allowed_tenants=allowed_tenants,
            leeway=leeway,
            algorithms=algorithms,
            jwks_uri=jwks_uri,
            max_token_size=max_token_size,
            cache_size=cache_size,
            jwks_ttl=jwks_ttl,
            jwks_cooldown=jwks_cooldown,
            jwks_max_stale=jwks_max_stale,
            require_typ=require_typ,
        )
        config = ValidatorConfig.of(settings)
        _check_runtime(http_client, clock, ARGUMENTS)
        _check_sync_client(sync_http_client, ARGUMENTS)
        self._config = config
        self._clock = clock
        self._keys = AsyncJWKSCache(
            config.key_sources,
            algorithms=config.algorithms,
            policy=config.key_policy,
            clock=clock,
            http_client=http_client,
            sync_http_client=sync_http_client,
        )
        self._rules: ClaimRules = config.rules
        self._verdicts = VerdictCache(config.cache_size, clock)
        self._hits = self._misses = 0

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
        settings, names = environment_settings(env)
        # A one-shot iterator (a generator of audiences) is read once, for both checks below.
        settings.update(
            {k: tuple(v) if isinstance(v, Iterator) else v for k, v in overrides.items()}
        )
        for setting in overrides:
            names.pop(setting, None)  # a value passed in is named as the argument it is
        if settings.get("issuer") is None and settings.get("authority_host") is None:
            # Azure AD mode: the host comes from this environment, not the process's (a
            # generic issuer has none, though Azure SDK environments often set the variable).
            settings["authority_host"], names["authority_host"] = authority_host_from(None, env)
        runtime = {
            k: settings.pop(k)
            for k in ("http_client", "sync_http_client", "clock")
            if k in settings
        }
        # Checked under the variables' names first; the constructor then checks the same
        # values again, which can no longer fail.
        ValidatorConfig.of(ValidatorSettings(**settings), SettingNames(names))
        return cls(**settings, **runtime)

    @property
    def realm(self) -> str:
        """The realm for ``WWW-Authenticate`` (the first configured audience)."""
        return self._config.realm

    @property
    def algorithms(self) -> frozenset[str]:
        """The allowed signing algorithms."""
        return self._config.algorithms

    async def validate(self, token: str) -> ValidatedToken:
        """Validate ``token`` (the bare token, without ``Bearer``) and return its verdict.

        Raises :class:`~ccflow.errors.InvalidTokenError` (``.reason`` says which check),
        :class:`~ccflow.errors.InsufficientScopeError` or
        :class:`~ccflow.errors.KeysUnavailableError`.
        """
        digest = self._digest(token)
        cached = self._cached(digest)
        if cached is not None:
            return cached
        parsed = self._parse(token)
        key = await self._keys.get_key(parsed.kid)
        return self._verify(digest, parsed, key)

    def validate_sync(self, token: str) -> ValidatedToken:
        """:meth:`validate` for synchronous code (WSGI: Flask, Django), blocking its thread
        while keys are fetched; the same checks, the same keys and the same cache of verdicts.

        Keys come through ``sync_http_client`` (an ``httpx.Client``; one of ccflow's own when
        not given); threads waiting on a cold cache share one fetch.
        """
        digest = self._digest(token)
        cached = self._cached(digest)
        if cached is not None:
            return cached
        parsed = self._parse(token)
        key = self._keys.get_key_sync(parsed.kid)
        return self._verify(digest, parsed, key)

    def _digest(self, token: str) -> bytes:
        """The cache key: a SHA-256 of the token, refused first when over ``max_token_size``."""
        return hashlib.sha256(encoded(token, self._config.max_token_size)).digest()

    def _parse(self, token: str) -> ParsedToken:
        """The strict compact-JWS parse (allowed algorithms only), then the ``typ`` check."""
        config = self._config
        parsed = parse_compact(token, algorithms=config.algorithms, max_size=config.max_token_size)
        self._check_type(parsed)
        return parsed

    def _verify(self, digest: bytes, parsed: ParsedToken, key: SigningKey) -> ValidatedToken:
        """The steps after the signing key: algorithm fit, signature, claims, cache store."""
        if parsed.alg not in key.algorithms:
            raise InvalidTokenError(
                "the token's algorithm does not fit its signing key", reason="algorithm"
            )
        verify_signature(parsed, key.public_key)
        verdict = check_claims(parsed.claims, self._claim_rules(), now=self._clock())
        self._verdicts.put(digest, verdict, parsed.kid)
        return verdict

    def cache_info(self) -> CacheInfo:
        """Hits, misses, bound and size of the verified-token cache (for tests and metrics)."""
        return CacheInfo(self._hits, self._misses, self._config.cache_size, len(self._verdicts))

    def _cached(self, digest: bytes) -> ValidatedToken | None:
        """The verdict cached under ``digest``, while unexpired and its key still published."""
        verdict = self._verdicts.get(digest, self._keys.holds)
        if verdict is None:
            self._misses += 1
        else:
            self._hits += 1
        return verdict

    def _check_type(self, parsed: ParsedToken) -> None:
        """Refuse a token without the ``typ`` header ``require_typ`` asks for."""
        wanted = self._config.require_typ
        typ = parsed.header.get("typ")
        if wanted is not None and (not isinstance(typ, str) or media_type(typ) != wanted):
            raise InvalidTokenError(f"the token's typ header is not {wanted}", reason="type")

    def _claim_rules(self) -> ClaimRules:
        """The claim rules with the issuers discovery found (known after the first fetch)."""
        issuers = self._keys.issuers
        if self._rules.issuers != issuers:
            self._rules = replace(self._rules, issuers=issuers)
        return self._rules

    async def aclose(self) -> None:
        """Close the HTTP clients the validator created."""
        await self._keys.aclose()

    def close(self) -> None:
        """Close the blocking HTTP client the validator created (what WSGI apps call)."""
        self._keys.close()

    async def __aenter__(self) -> TokenValidator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _check_runtime(http_client: object, clock: object, names: SettingNames) -> None:
    """The HTTP client and the clock: objects, not settings, checked all the same."""
    if http_client is not None and not isinstance(http_client, httpx.AsyncClient):
        # A sync httpx.Client would block the event loop, then fail on every request.
        raise names.error(
            "http_client", f"must be an httpx.AsyncClient, got {type(http_client).__name__}"
        )
    if not callable(clock):
        raise names.error("clock", "must be a callable returning Unix seconds")


def _check_sync_client(sync_http_client: object, names: SettingNames) -> None:
    """The blocking face's HTTP client: an ``httpx.Client`` or nothing."""
    if sync_http_client is not None and not isinstance(sync_http_client, httpx.Client):
        raise names.error(
            "sync_http_client",
            f"must be an httpx.Client, got {type(sync_http_client).__name__}",
        )
