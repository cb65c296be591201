"""App registrations, shaped like the Azure portal's: a tenant, API apps, client apps, grants.

The built-in default (:meth:`Registrations.default`) registers, with fixed ids::

    tenant         c0ffee00-cc10-4000-8000-000000000001
    calc-api       client id c0ffee00-cc10-4000-8000-0000000000a1
                   App ID URI api://c0ffee00-cc10-4000-8000-0000000000a1, app role invokeRole
    calc-client    client id c0ffee00-cc10-4000-8000-0000000000c1, granted invokeRole on calc-api
                   secret "ccflow~calc-client+local/test=secret"
    reader-client  client id c0ffee00-cc10-4000-8000-0000000000c2, no roles
                   secret "ccflow~reader-client+local/test=secret"

:meth:`Registrations.multi_tenant` adds, for multi-tenant tests, a second (partner) tenant::

    partner tenant c0ffee00-cc10-4000-8000-000000000002
    calc-api       becomes multi-tenant (signInAudience AzureADMultipleOrgs)
    partner-client client id c0ffee00-cc10-4000-8000-0000000000c3, home tenant: the partner
                   tenant, granted invokeRole on calc-api (consented in the partner tenant)
                   secret "ccflow~partner-client+local/test=secret"

The secrets are fixed and public on purpose: this authority only ever runs locally, for tests
and demos. They contain ``~ + / =`` so that every client exercises form-encoding.

A TOML file describes other registrations (paths are relative to the file)::

    tenant_id = "11111111-2222-4333-8444-555555555555"
    tenants = ["66666666-7777-4888-8999-000000000000"]  # more tenants served (optional)

    [apis.orders-api]
    client_id = "..."
    identifier_uri = "api://orders"          # default: api://<client_id>
    roles = ["Orders.Read", "Orders.Write"]
    access_token_version = 2                 # 1 gives v1-shaped tokens
    multi_tenant = true                      # clients of the other tenants may call it

    [clients.shop]
    client_id = "..."
    secrets = ["..."]                        # or secret = "..."
    certificates = ["shop-cert.pem"]         # PEM certificates, matched by thumbprint
    roles = { orders-api = ["Orders.Read"] } # grants, as after admin consent
    tenant_id = "66666666-..."               # home tenant; default: the first tenant_id

APIs live in ``tenant_id``. A client lives in its home tenant and gets tokens only from that
tenant's token endpoint; its tokens name that tenant (``tid``, ``iss``), as Azure AD's do for
an app in tenant B calling a multi-tenant API registered in tenant A. A client may be granted
roles on an API of another tenant only when that API is ``multi_tenant``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tomllib
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ccflow._certificates import x5t_of, x5t_s256_of
from ccflow._core.urls import MULTI_TENANT_NAMES
from ccflow.errors import ConfigurationError

__all__ = [
    "DEFAULT_TENANT_ID",
    "PARTNER_TENANT_ID",
    "ApiApp",
    "ClientApp",
    "RegisteredCertificate",
    "Registrations",
]

DEFAULT_TENANT_ID = "c0ffee00-cc10-4000-8000-000000000001"
"""The tenant of :meth:`Registrations.default`, and of registrations that name none."""
PARTNER_TENANT_ID = "c0ffee00-cc10-4000-8000-000000000002"
"""The second tenant of :meth:`Registrations.multi_tenant`."""


def _thumb(value: str | None) -> str | None:
    """A thumbprint as unpadded base64url (msal sends it padded, or in standard base64)."""
    if value is None:
        return None
    return value.rstrip("=").replace("+", "-").replace("/", "_")


@dataclass(frozen=True, slots=True)
class ApiApp:
    """An API app registration: what a token's ``aud`` names and which app roles it defines."""

    name: str
    client_id: str
    identifier_uri: str
    roles: tuple[str, ...] = ()
    access_token_version: int = 2
    object_id: str = ""
    multi_tenant: bool = False
    """Clients of every tenant the authority serves may call it (Azure AD's
    ``signInAudience: AzureADMultipleOrgs``); otherwise only clients of its own tenant."""

    def __post_init__(self) -> None:
        if self.access_token_version not in (1, 2):
            raise ConfigurationError(
                f"api {self.name!r}: access_token_version must be 1 or 2, "
                f"got {self.access_token_version!r}",
                setting="access_token_version",
            )
        object.__setattr__(self, "roles", tuple(self.roles))

    @property
    def default_scope(self) -> str:
        """The scope a client-credentials caller asks for: ``<App ID URI>/.default``."""
        return f"{self.identifier_uri}/.default"


@dataclass(frozen=True, slots=True)
class RegisteredCertificate:
    """A certificate registered on a client app; assertions name it by thumbprint."""

    x5t: str
    """base64url SHA-1 thumbprint (the ``x5t`` header)."""
    x5t_s256: str
    """base64url SHA-256 thumbprint (the ``x5t#S256`` header)."""
    thumbprint: str
    """SHA-1 thumbprint in upper-case hex, as the Azure portal shows it."""
    public_key: rsa.RSAPublicKey = field(repr=False, compare=False, hash=False)

    @classmethod
    def from_pem(cls, pem: bytes) -> RegisteredCertificate:
        """Register the (first) certificate in ``pem``; the key must be RSA."""
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError as exc:
            raise ConfigurationError(f"not a PEM certificate: {exc}") from None
        return cls.from_certificate(cert)

    @classmethod
    def from_certificate(cls, cert: x509.Certificate) -> RegisteredCertificate:
        """Register a loaded ``cryptography`` certificate."""
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise ConfigurationError("only RSA certificates can be registered")
        der = cert.public_bytes(serialization.Encoding.DER)
        return cls(
            x5t=x5t_of(der),
            x5t_s256=x5t_s256_of(der),
            thumbprint=hashlib.sha1(der, usedforsecurity=False).hexdigest().upper(),
            public_key=key,
        )


@dataclass(frozen=True, slots=True)
class ClientApp:
    """A client (daemon) app registration: its id, credentials and the app roles granted to it.

    ``roles`` maps an API app's *name* to the roles granted on it (after admin consent).
    Secrets never appear in ``repr``.
    """

    name: str
    client_id: str
    secrets: tuple[str, ...] = field(default=(), repr=False)
    roles: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    certificates: tuple[RegisteredCertificate, ...] = ()
    object_id: str = ""
    tenant_id: str = ""
    """The client's home tenant; ``""`` means the registrations' ``tenant_id``."""

    def __post_init__(self) -> None:
        frozen = {api: tuple(r) for api, r in self.roles.items()}
        object.__setattr__(self, "roles", types.MappingProxyType(frozen))
        object.__setattr__(self, "secrets", tuple(self.secrets))
        object.__setattr__(self, "certificates", tuple(self.certificates))

    @property
    def secret(self) -> str | None:
        """The first registered secret, or ``None`` for a certificate-only app."""
        return self.secrets[0] if self.secrets else None

    def roles_for(self, api: str) -> tuple[str, ...]:
        """The roles granted on the API app named ``api`` (``()`` when none)."""
        return self.roles.get(api, ())

    @property
    def all_roles(self) -> tuple[str, ...]:
        """Every role granted, across APIs, without duplicates, in registration order."""
        seen: dict[str, None] = {}
        for roles in self.roles.values():
            seen.update(dict.fromkeys(roles))
        return tuple(seen)

    def certificate(
        self, *, x5t: str | None = None, x5t_s256: str | None = None
    ) -> RegisteredCertificate | None:
        """The registered certificate with this thumbprint, if any. Thumbprints compare as
        unpadded base64url, since msal pads them and others do not."""
        x5t, x5t_s256 = _thumb(x5t), _thumb(x5t_s256)
        for cert in self.certificates:
            if x5t_s256 is not None and cert.x5t_s256 == x5t_s256:
                return cert
            if x5t is not None and cert.x5t == x5t:
                return cert
        return None


@dataclass(frozen=True, slots=True)
class Registrations:
    """A tenant and its app registrations. Build with :meth:`default`, :meth:`multi_tenant`
    or :meth:`from_toml`.

    ``tenants`` lists more tenants the authority serves besides ``tenant_id`` (where the APIs
    live); clients name their home tenant in :attr:`ClientApp.tenant_id`.
    """

    tenant_id: str
    apis: tuple[ApiApp, ...] = ()
    clients: tuple[ClientApp, ...] = ()
    tenants: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "apis", tuple(self.apis))
        object.__setattr__(self, "clients", tuple(self.clients))
        object.__setattr__(self, "tenants", tuple(self.tenants))
        _check_tenants(self.tenant_ids)
        _unique("api name", (a.name for a in self.apis))
        _unique("client name", (c.name for c in self.clients))
        # Ids match in any case (as in Azure AD), so two differing only in case would collide.
        _unique(
            "client id",
            [a.client_id for a in self.apis] + [c.client_id for c in self.clients],
            any_case=True,
        )
        # A scope names an API by its App ID URI: a second API with the same one (trailing
        # slash aside, as api_for_resource compares them) could never get a token.
        _unique("identifier_uri", (a.identifier_uri.rstrip("/") for a in self.apis))
        self._check_grants()

    def _check_grants(self) -> None:
        """Every client lives in a served tenant and is granted only roles its APIs define."""
        apis = {a.name: a for a in self.apis}
        for client in self.clients:
            home = self.tenant_of(client)
            if home not in self.tenant_ids:
                raise ConfigurationError(
                    f"client {client.name!r} lives in tenant {home!r}, which is not served "
                    f"(tenants: {list(self.tenant_ids)})",
                    setting=f"clients.{client.name}.tenant_id",
                )
            for api_name, roles in client.roles.items():
                if api_name not in apis:
                    raise ConfigurationError(
                        f"client {client.name!r} is granted roles on unknown api {api_name!r}",
                        setting=f"clients.{client.name}.roles",
                    )
                if home != self.tenant_id and not apis[api_name].multi_tenant:
                    raise ConfigurationError(
                        f"client {client.name!r} of tenant {home!r} is granted roles on api "
                        f"{api_name!r}, which is not multi_tenant",
                        setting=f"clients.{client.name}.roles",
                    )
                unknown = sorted(set(roles) - set(apis[api_name].roles))
                if unknown:
                    raise ConfigurationError(
                        f"client {client.name!r} is granted {unknown} which api {api_name!r} "
                        f"does not define (it defines {list(apis[api_name].roles)})",
                        setting=f"clients.{client.name}.roles",
                    )

    @classmethod
    def default(cls) -> Registrations:
        """The built-in registrations: calc-api, calc-client, reader-client (see module doc)."""
        api_id = "c0ffee00-cc10-4000-8000-0000000000a1"
        return cls(
            tenant_id=DEFAULT_TENANT_ID,
            apis=(
                ApiApp(
                    name="calc-api",
                    client_id=api_id,
                    identifier_uri=f"api://{api_id}",
                    roles=("invokeRole",),
                    object_id="c0ffee00-cc10-4000-8000-0000000000b1",
                ),
            ),
            clients=(
                ClientApp(
                    name="calc-client",
                    client_id="c0ffee00-cc10-4000-8000-0000000000c1",
                    secrets=("ccflow~calc-client+local/test=secret",),
                    roles={"calc-api": ("invokeRole",)},
                    object_id="c0ffee00-cc10-4000-8000-0000000000d1",
                ),
                ClientApp(
                    name="reader-client",
                    client_id="c0ffee00-cc10-4000-8000-0000000000c2",
                    secrets=("ccflow~reader-client+local/test=secret",),
                    object_id="c0ffee00-cc10-4000-8000-0000000000d2",
                ),
            ),
        )

    @classmethod
    def multi_tenant(cls) -> Registrations:
        """The default registrations plus a partner tenant (see module doc): calc-api becomes
        multi-tenant and ``partner-client``, at home in :data:`PARTNER_TENANT_ID`, is granted
        ``invokeRole`` on it."""
        base = cls.default()
        partner = ClientApp(
            name="partner-client",
            client_id="c0ffee00-cc10-4000-8000-0000000000c3",
            secrets=("ccflow~partner-client+local/test=secret",),
            roles={"calc-api": ("invokeRole",)},
            object_id="c0ffee00-cc10-4000-8000-0000000000d3",
            tenant_id=PARTNER_TENANT_ID,
        )
        return dataclasses.replace(
            base,
            apis=tuple(dataclasses.replace(a, multi_tenant=True) for a in base.apis),
            clients=(*base.clients, partner),
            tenants=(PARTNER_TENANT_ID,),
        )

    @property
    def tenant_ids(self) -> tuple[str, ...]:
        """Every tenant served: ``tenant_id`` first, then ``tenants``."""
        return (self.tenant_id, *self.tenants)

    def tenant_of(self, client: ClientApp) -> str:
        """The home tenant of ``client``."""
        return client.tenant_id or self.tenant_id

    @classmethod
    def from_toml(cls, path: str | Path) -> Registrations:
        """Load registrations from a TOML file (format in the module docstring)."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read registrations file {str(path)!r}: {exc.strerror}", setting="config"
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(
                f"registrations file {str(path)!r} is not valid TOML: {exc}", setting="config"
            ) from None
        except UnicodeDecodeError as exc:
            raise ConfigurationError(
                f"registrations file {str(path)!r} is not valid TOML: not UTF-8 text"
                f" (byte {exc.start})",
                setting="config",
            ) from None
        return cls.from_mapping(data, base_dir=path.parent)

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], *, base_dir: Path | None = None
    ) -> Registrations:
        """Build registrations from parsed TOML (or any mapping of the same shape)."""
        base = base_dir or Path.cwd()
        _known(data, "the registrations file", _TOP_KEYS)
        tenant = _str(data, "tenant_id", "tenant_id", default=DEFAULT_TENANT_ID)
        tenants = _strings(data.get("tenants", ()), "tenants")
        apis = [
            _api(name, _table(entry, f"apis.{name}"))
            for name, entry in _table(data.get("apis", {}), "apis").items()
        ]
        clients = [
            _client(name, _table(entry, f"clients.{name}"), base)
            for name, entry in _table(data.get("clients", {}), "clients").items()
        ]
        return cls(tenant_id=tenant, apis=tuple(apis), clients=tuple(clients), tenants=tenants)

    def with_certificate(self, client: str, certificate_pem: bytes) -> Registrations:
        """A copy in which client app ``client`` also has the certificate ``certificate_pem``."""
        cert = RegisteredCertificate.from_pem(certificate_pem)
        app = self.client(client)
        updated = dataclasses.replace(app, certificates=(*app.certificates, cert))
        clients = tuple(updated if c.name == client else c for c in self.clients)
        return dataclasses.replace(self, clients=clients)

    def api(self, name: str) -> ApiApp:
        """The API app registered under ``name``; ``KeyError`` names the known ones."""
        for api in self.apis:
            if api.name == name:
                return api
        raise KeyError(f"no api named {name!r}; known: {[a.name for a in self.apis]}")

    def client(self, name: str) -> ClientApp:
        """The client app registered under ``name``; ``KeyError`` names the known ones."""
        for client in self.clients:
            if client.name == name:
                return client
        raise KeyError(f"no client named {name!r}; known: {[c.name for c in self.clients]}")

    def client_by_id(self, client_id: str) -> ClientApp | None:
        """The client app with this client id, if registered. Client ids are GUIDs, which
        Azure AD matches in any case."""
        wanted = client_id.lower()
        for client in self.clients:
            if client.client_id.lower() == wanted:
                return client
        return None

    def api_for_resource(self, resource: str) -> ApiApp | None:
        """The API app a scope's resource names: its App ID URI or its client id."""
        resource = resource.rstrip("/")
        for api in self.apis:
            # The client id is a GUID (any case); the App ID URI is compared as registered.
            if (
                resource == api.identifier_uri.rstrip("/")
                or resource.lower() == api.client_id.lower()
            ):
                return api
        return None


def _check_tenants(tenant_ids: tuple[str, ...]) -> None:
    """Refuse a tenant id that is repeated, or that no endpoint path could name."""
    _unique("tenant id", tenant_ids, any_case=True)
    for tenant in tenant_ids:
        if not tenant or "/" in tenant or tenant.lower() in MULTI_TENANT_NAMES:
            raise ConfigurationError(
                f"{tenant!r} cannot be a tenant id (it names no single tenant)",
                setting="tenants",
            )
        # A tenant id is a path segment of every endpoint: one that a URL would split or
        # re-decode (?, #, %, spaces, control characters) names no endpoint it could serve.
        if any(c in "?#%\\" or c.isspace() or not c.isprintable() for c in tenant):
            raise ConfigurationError(
                f"{tenant!r} cannot be a tenant id: use a tenant GUID or domain name",
                setting="tenants",
            )


def _unique(what: str, values: Iterable[str], *, any_case: bool = False) -> None:
    """Refuse a value seen twice (in any case, with ``any_case``)."""
    seen: set[str] = set()
    for value in values:
        key = value.lower() if any_case else value
        if key in seen:
            raise ConfigurationError(f"duplicate {what} {value!r} in registrations")
        seen.add(key)


_TOP_KEYS = ("tenant_id", "tenants", "apis", "clients")
_API_KEYS = (
    "client_id",
    "identifier_uri",
    "roles",
    "access_token_version",
    "multi_tenant",
    "object_id",
)
_CLIENT_KEYS = (
    "client_id",
    "secret",
    "secrets",
    "certificates",
    "roles",
    "tenant_id",
    "object_id",
)


def _known(table: Mapping[str, Any], where: str, keys: Sequence[str]) -> None:
    """Refuse keys the format does not have: a misspelt one would be dropped in silence."""
    unknown = sorted(str(k) for k in table if k not in keys)
    if unknown:
        raise ConfigurationError(
            f"unknown key(s) {', '.join(map(repr, unknown))} in {where}; known: {', '.join(keys)}",
            setting=where,
        )


def _table(value: object, where: str) -> Mapping[str, Any]:
    """``value``, which must be a TOML table."""
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{where} must be a table", setting=where)
    return value


def _str(table: Mapping[str, Any], key: str, where: str, *, default: str | None = None) -> str:
    """``table[key]`` (or ``default``), which must be a non-empty string."""
    value = table.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{where} must be a non-empty string", setting=where)
    return value


def _strings(value: object, where: str) -> tuple[str, ...]:
    """``value`` as strings: one string, or a list of them."""
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise ConfigurationError(f"{where} must be a list of strings", setting=where)
    return tuple(value)


def _api(name: str, entry: Mapping[str, Any]) -> ApiApp:
    """The API app of the TOML table ``[apis.<name>]``."""
    _known(entry, f"apis.{name}", _API_KEYS)
    client_id = _str(entry, "client_id", f"apis.{name}.client_id")
    version = entry.get("access_token_version", 2)
    multi_tenant = entry.get("multi_tenant", False)
    if not isinstance(multi_tenant, bool):
        raise ConfigurationError(
            f"apis.{name}.multi_tenant must be true or false", setting=f"apis.{name}.multi_tenant"
        )
    if version not in (1, 2) or isinstance(version, bool):
        raise ConfigurationError(
            f"apis.{name}.access_token_version must be 1 or 2",
            setting=f"apis.{name}.access_token_version",
        )
    return ApiApp(
        name=name,
        client_id=client_id,
        identifier_uri=_str(
            entry, "identifier_uri", f"apis.{name}.identifier_uri", default=f"api://{client_id}"
        ),
        roles=_strings(entry.get("roles", ()), f"apis.{name}.roles"),
        access_token_version=int(version),
        object_id=_str(entry, "object_id", f"apis.{name}.object_id", default=client_id),
        multi_tenant=multi_tenant,
    )


def _client(name: str, entry: Mapping[str, Any], base: Path) -> ClientApp:
    """The client app of ``[clients.<name>]``; certificate paths are relative to ``base``."""
    _known(entry, f"clients.{name}", _CLIENT_KEYS)
    client_id = _str(entry, "client_id", f"clients.{name}.client_id")
    secrets = _strings(entry.get("secrets", ()), f"clients.{name}.secrets")
    if not all(secrets):
        raise ConfigurationError(
            f"clients.{name}.secrets must not hold an empty secret",
            setting=f"clients.{name}.secrets",
        )
    if "secret" in entry:
        secrets = (_str(entry, "secret", f"clients.{name}.secret"), *secrets)
    certs: list[RegisteredCertificate] = []
    for item in _strings(entry.get("certificates", ()), f"clients.{name}.certificates"):
        cert_path = base / item
        try:
            pem = cert_path.read_bytes()
        except OSError as exc:
            raise ConfigurationError(
                f"clients.{name}.certificates: cannot read {str(cert_path)!r}: {exc.strerror}",
                setting=f"clients.{name}.certificates",
            ) from None
        certs.append(RegisteredCertificate.from_pem(pem))
    grants = {
        api: _strings(roles, f"clients.{name}.roles.{api}")
        for api, roles in _table(entry.get("roles", {}), f"clients.{name}.roles").items()
    }
    return ClientApp(
        name=name,
        client_id=client_id,
        secrets=secrets,
        roles=grants,
        certificates=tuple(certs),
        object_id=_str(entry, "object_id", f"clients.{name}.object_id", default=client_id),
        tenant_id=_str(entry, "tenant_id", f"clients.{name}.tenant_id")
        if "tenant_id" in entry
        else "",
    )
