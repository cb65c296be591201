"""The local authority: Azure AD v2's discovery, JWKS and token endpoint, in-process.

:class:`Authority` holds the state (registrations, keys, faults, seen assertions) and the
faces; the endpoints themselves are in :mod:`~ccflow.authority._handlers`, their addresses in
:mod:`~ccflow.authority._routes`, and Azure AD's error answers in :mod:`~ccflow.authority._aad`.
"""

from __future__ import annotations

import collections
import functools
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import httpx

from ccflow._core.urls import normalize_authority_host
from ccflow.authority import _handlers
from ccflow.authority._asgi import ASGIApp, AuthorityApp
from ccflow.authority._assertions import ReplayCache
from ccflow.authority._faults import Fault, FaultBoard
from ccflow.authority._handlers import Outcome
from ccflow.authority._keys import KeyRing, SigningKey
from ccflow.authority._managed_identity import APP_SERVICE_PATH, IDENTITY_HEADER
from ccflow.authority._registrations import ApiApp, ClientApp, Registrations
from ccflow.authority._routes import Endpoints, endpoints_for, route
from ccflow.authority._tokens import access_token_claims
from ccflow.authority._tokens import sign as sign_token

if TYPE_CHECKING:
    import respx

__all__ = ["DEFAULT_HOST", "Authority"]

DEFAULT_HOST = "https://login.ccflow.test"
"""The host an :class:`Authority` answers as unless given ``host=`` (not a real name)."""


def _checked_arguments(registrations: object, token_lifetime: object) -> None:
    """Refuse arguments that would otherwise fail later, far from the mistake."""
    if registrations is not None and not isinstance(registrations, Registrations):
        # A TOML path (or a mapping) passed as is failed later with an AttributeError.
        hint = (
            "Registrations.from_toml(path)"
            if isinstance(registrations, str | os.PathLike)
            else "Registrations.from_mapping(...)"
        )
        raise TypeError(
            f"registrations must be a Registrations, got {type(registrations).__name__}: "
            f"pass {hint}"
        )
    if isinstance(token_lifetime, bool) or not isinstance(token_lifetime, int):
        raise TypeError(f"token_lifetime must be whole seconds, got {token_lifetime!r}")
    if token_lifetime <= 0:
        raise ValueError(f"token_lifetime must be positive, got {token_lifetime!r}")


class Authority:
    """A local token issuer shaped like Azure AD v2, served from memory.

    ::

        authority = Authority()
        with httpx.Client(transport=authority.transport()) as http:
            r = http.post(authority.token_endpoint, data={
                "grant_type": "client_credentials",
                "client_id": authority.client("calc-client").client_id,
                "client_secret": authority.client("calc-client").secret,
                "scope": authority.api("calc-api").default_scope,
            })

    Endpoints (``{t}`` is the tenant id): ``/{t}/v2.0/.well-known/openid-configuration``,
    ``/{t}/.well-known/openid-configuration`` (v1), ``/{t}/discovery/v2.0/keys``,
    ``/{t}/discovery/keys`` (v1), ``/{t}/oauth2/v2.0/token`` and ``/{t}/oauth2/token``
    (v1: ``resource`` instead of ``scope``); :meth:`endpoints` gives their URLs. Thread-safe:
    the real server (``ccflow authority serve``) calls :meth:`handle` from many threads.

    Multi-tenant, as Azure AD: every tenant of :attr:`tenant_ids` has these endpoints, and
    ``/organizations/...`` and ``/common/...`` serve discovery documents whose issuer is the
    template ``{host}/{tenantid}/v2.0`` (v1: ``{host}/{tenantid}/``) and the same keys. A
    client gets tokens from its home tenant's token endpoint, naming that tenant in ``tid`` and
    ``iss`` (see :meth:`Registrations.multi_tenant`).

    ``one_time_assertions=True`` refuses a client assertion presented a second time; by
    default, as in Azure AD, a client may resend the same assertion until it expires and only
    another assertion reusing a seen ``jti`` is refused (AADSTS700229).

    Managed identity, as Azure hosts serve it: IMDS at ``/metadata/identity/oauth2/token`` and
    the App Service endpoint at ``/msi/token`` (:meth:`identity_environ` gives the variables
    that point :class:`ccflow.ManagedIdentity` here). The system-assigned identity is the
    client named ``managed_identity``; ``client_id=`` picks any client of the home tenant.
    """

    def __init__(
        self,
        registrations: Registrations | None = None,
        *,
        host: str = DEFAULT_HOST,
        token_lifetime: int = 3599,
        clock: Callable[[], float] = time.time,
        one_time_assertions: bool = False,
        managed_identity: str = "calc-client",
    ) -> None:
        _checked_arguments(registrations, token_lifetime)
        self.registrations = registrations if registrations is not None else Registrations.default()
        self.host = normalize_authority_host(host, setting="host")
        # A host with a path (a proxy prefix, ``https://host/prefix``) puts its endpoints under
        # that prefix: requests are routed on what follows it.
        self._prefix = httpx.URL(self.host).path.rstrip("/")
        self.token_lifetime = token_lifetime
        self.clock = clock
        self.hits: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._faults = FaultBoard()
        self._replays = ReplayCache(one_time=one_time_assertions)
        self._keys = KeyRing()
        self._asgi = AuthorityApp(self.serve, self.host)
        self.managed_identity = managed_identity

    def __repr__(self) -> str:
        return f"Authority(host={self.host!r}, tenant_id={self.tenant_id!r})"

    # -- addresses ---------------------------------------------------------------------------

    @property
    def tenant_id(self) -> str:
        """The tenant id (fixed for the built-in registrations)."""
        return self.registrations.tenant_id

    @property
    def tenant_ids(self) -> tuple[str, ...]:
        """Every tenant served: :attr:`tenant_id` first, then the registrations' ``tenants``."""
        return self.registrations.tenant_ids

    def endpoints(self, *, tenant: str | None = None, version: int = 2) -> Endpoints:
        """The URLs of ``tenant`` (default :attr:`tenant_id`; ``"organizations"``/``"common"``
        too), v2 or v1: ``issuer``, ``token_endpoint``, ``discovery_url``, ``jwks_uri``."""
        return endpoints_for(self.host, tenant or self.tenant_id, version=version)

    @property
    def issuer(self) -> str:
        """The v2 issuer: ``{host}/{tenant_id}/v2.0``."""
        return self.endpoints().issuer

    @property
    def issuer_v1(self) -> str:
        """The v1 issuer: ``{host}/{tenant_id}/`` (Azure AD's is ``https://sts.windows.net/{tid}/``;
        the local authority keeps its own host so v1 tokens cannot pass as Azure AD's)."""
        return self.endpoints(version=1).issuer

    @property
    def token_endpoint(self) -> str:
        """``{host}/{tenant_id}/oauth2/v2.0/token``."""
        return self.endpoints().token_endpoint

    @property
    def jwks_uri(self) -> str:
        """``{host}/{tenant_id}/discovery/v2.0/keys``."""
        return self.endpoints().jwks_uri

    @property
    def discovery_url(self) -> str:
        """``{host}/{tenant_id}/v2.0/.well-known/openid-configuration``."""
        return self.endpoints().discovery_url

    def issuer_for(self, tenant_id: str, *, version: int = 2) -> str:
        """The issuer of tokens from ``tenant_id`` (``"organizations"``/``"common"``: the
        ``{tenantid}`` template their discovery documents carry)."""
        return self.endpoints(tenant=tenant_id, version=version).issuer

    def token_endpoint_for(self, tenant_id: str, *, version: int = 2) -> str:
        """``{host}/{tenant_id}/oauth2/v2.0/token``: a client's home tenant's token endpoint
        (``version=1``: the v1 endpoint, ``{host}/{tenant_id}/oauth2/token``)."""
        return self.endpoints(tenant=tenant_id, version=version).token_endpoint

    def discovery_url_for(self, tenant_id: str, *, version: int = 2) -> str:
        """The discovery document of ``tenant_id``, or of ``"organizations"``/``"common"``."""
        return self.endpoints(tenant=tenant_id, version=version).discovery_url

    @property
    def identity_endpoint(self) -> str:
        """The App Service managed identity endpoint (``IDENTITY_ENDPOINT``)."""
        return f"{self.host}{APP_SERVICE_PATH}"

    def identity_environ(self, kind: str = "imds") -> dict[str, str]:
        """The variables that point :class:`ccflow.ManagedIdentity` at this authority:
        ``"imds"`` (``AZURE_POD_IDENTITY_AUTHORITY_HOST``) or ``"app_service"``
        (``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER``, whose secret is public)::

            credential = ManagedIdentity(environ=authority.identity_environ("app_service"))
        """
        if kind == "imds":
            return {"AZURE_POD_IDENTITY_AUTHORITY_HOST": self.host}
        if kind == "app_service":
            return {"IDENTITY_ENDPOINT": self.identity_endpoint, "IDENTITY_HEADER": IDENTITY_HEADER}
        raise ValueError(f"kind must be 'imds' or 'app_service', got {kind!r}")

    def api(self, name: str) -> ApiApp:
        """The API app registered under ``name`` (``"calc-api"``)."""
        return self.registrations.api(name)

    def client(self, name: str) -> ClientApp:
        """The client app registered under ``name`` (``"calc-client"``, ``"reader-client"``)."""
        return self.registrations.client(name)

    # -- keys --------------------------------------------------------------------------------

    @property
    def signing_kid(self) -> str:
        """The ``kid`` new tokens are signed with."""
        return self._keys.signing_kid

    @property
    def kids(self) -> tuple[str, ...]:
        """The ``kid`` of every published key, oldest first."""
        return self._keys.published

    def key(self, kid: str) -> SigningKey:
        """The signing key with this ``kid`` (published or retired)."""
        return self._keys[kid]

    def rotate_keys(self) -> str:
        """Add a key, publish it and sign with it from now on; the previous key stays
        published until :meth:`retire_key`. Returns the new ``kid``."""
        return self._keys.rotate()

    def retire_key(self, kid: str) -> None:
        """Stop publishing ``kid``. Retiring the signing key makes the newest remaining key sign;
        the last published key cannot be retired (rotate first)."""
        self._keys.retire(kid)

    def jwks(self, *, version: int = 2, tenant_id: str | None = None) -> dict[str, Any]:
        """The JWKS document the keys endpoints serve (of ``tenant_id``, default the first
        tenant; every tenant publishes the same keys, each naming its own issuer)."""
        issuer = self.issuer_for(tenant_id or self.tenant_id) if version == 2 else None
        return self._keys.jwks(issuer=issuer)

    def discovery(self, *, version: int = 2, tenant_id: str | None = None) -> dict[str, Any]:
        """The OpenID discovery document (v2 or v1) the discovery endpoints serve, for
        ``tenant_id`` (default the first tenant; ``"organizations"``/``"common"`` give the
        multi-tenant document with the ``{tenantid}`` issuer template)."""
        urls = self.endpoints(tenant=tenant_id, version=version)
        return _handlers.discovery_document(urls, host=self.host)

    # -- faults ------------------------------------------------------------------------------

    def set_fault(self, endpoint: str, fault: Fault) -> None:
        """Make ``endpoint`` (``"token"``, ``"jwks"`` or ``"discovery"``) misbehave."""
        self._faults.set(endpoint, fault)

    def clear_fault(self, endpoint: str | None = None) -> None:
        """Undo :meth:`set_fault` for ``endpoint`` (every endpoint when ``None``)."""
        self._faults.clear(endpoint)

    # -- tokens ------------------------------------------------------------------------------

    def token_claims(
        self,
        client: str = "calc-client",
        api: str = "calc-api",
        *,
        roles: Sequence[str] | None = None,
        version: int | None = None,
        lifetime: int | None = None,
        now: float | None = None,
        credential_type: str = "1",
    ) -> dict[str, Any]:
        """The claims of an access token for ``client`` calling ``api``, as the token endpoint
        issues it. ``roles=None`` means the granted roles; ``()`` means no ``roles`` claim."""
        client_app, api_app = self.client(client), self.api(api)
        tenant = self.registrations.tenant_of(client_app)
        version = version or api_app.access_token_version
        return access_token_claims(
            client_app,
            api_app,
            tenant=tenant,
            issuer=self.issuer_for(tenant, version=version),
            roles=client_app.roles_for(api_app.name) if roles is None else tuple(roles),
            version=version,
            lifetime=self.token_lifetime if lifetime is None else lifetime,
            now=self.clock() if now is None else now,
            credential_type=credential_type,
        )

    def sign(
        self,
        claims: Mapping[str, Any],
        *,
        kid: str | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> str:
        """Sign ``claims`` with the current key (or the key ``kid``), RS256, with Azure AD's
        header (``typ``, ``alg``, ``kid``, ``x5t``) updated by ``headers``."""
        return sign_token(claims, self._keys[kid or self.signing_kid], headers=headers)

    def mint(
        self,
        client: str = "calc-client",
        api: str = "calc-api",
        *,
        roles: Sequence[str] | None = None,
        version: int | None = None,
        lifetime: int | None = None,
        now: float | None = None,
        claims: Mapping[str, Any] | None = None,
        omit: Iterable[str] = (),
        kid: str | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> str:
        """A signed access token, as the token endpoint would issue it, without a request.

        ``roles`` overrides the granted roles (``()`` for none), ``version`` the API's token
        version (1 or 2), ``lifetime`` the lifetime in seconds, ``now`` the issue time;
        ``claims`` adds or replaces claims, ``omit`` removes them; ``kid`` signs with another
        (published or retired) key; ``headers`` adds or replaces header fields.
        """
        body = self.token_claims(
            client, api, roles=roles, version=version, lifetime=lifetime, now=now
        )
        body.update(claims or {})
        for name in omit:
            body.pop(name, None)
        return self.sign(body, kid=kid, headers=headers)

    # -- the server --------------------------------------------------------------------------

    def serve(self, request: httpx.Request) -> Outcome:
        """Route one request and decide what to do with it, faults included, without waiting
        (the faces wait: :meth:`handle` never, the real server and :attr:`asgi` do)."""
        request.read()  # a no-op once the body was read
        where = route(request.url.path, prefix=self._prefix)
        with self._lock:
            self.hits[where.endpoint] += 1
        now = self.clock()
        fault = self._faults.take(where.endpoint)  # None for "other": no fault names it
        return _handlers.outcome(
            fault,
            functools.partial(
                _handlers.answer, self, request, where, now=now, replays=self._replays
            ),
            functools.partial(_handlers.fault_response, request=request, host=self.host, now=now),
        )

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request, synchronously, applying faults (``drop`` raises
        ``httpx.ConnectError``, ``timeout`` raises ``httpx.ReadTimeout``)."""
        outcome = self.serve(request)
        if outcome.drop:
            raise httpx.ConnectError("connection dropped (fault)", request=request)
        if outcome.timeout:
            raise httpx.ReadTimeout("timed out (fault)", request=request)
        assert outcome.response is not None
        return outcome.response

    def transport(self) -> httpx.MockTransport:
        """An httpx transport onto :meth:`handle`, for ``httpx.Client`` and ``AsyncClient``."""
        return httpx.MockTransport(self.handle)

    def mock(self, router: respx.MockRouter | None = None) -> respx.MockRouter:
        """respx routes sending every request for :attr:`host` to :meth:`handle`.

        ``with authority.mock(): ...`` patches httpx for the block; pass a ``router`` (e.g. the
        ``respx_mock`` fixture) to add the route to it instead.
        """
        try:
            import respx
        except ImportError:  # pragma: no cover - respx is a testing extra
            raise ImportError(
                "Authority.mock() needs respx: pip install 'ccflow-oauth[testing]'"
            ) from None
        if router is None:
            router = respx.mock(assert_all_called=False, assert_all_mocked=True)
        url = httpx.URL(self.host)
        pattern: dict[str, Any] = {"scheme": url.scheme, "host": url.host}
        if url.port is not None:
            pattern["port"] = url.port
        router.route(**pattern).mock(side_effect=self.handle)
        return router

    @property
    def asgi(self) -> ASGIApp:
        """The same server as an ASGI application (for uvicorn and ASGI test clients)."""
        return self._asgi
