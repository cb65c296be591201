"""ccflow's local authority: a token issuer shaped like Azure AD v2, for tests and demos.

::

    from ccflow.authority import Authority, Fault

    authority = Authority()     # calc-api, calc-client (granted invokeRole), reader-client
    token = authority.mint()    # a signed access token for calc-client calling calc-api
    authority.set_fault("token", Fault(status=503, retry_after="1", times=1))

Run it in-process (:meth:`Authority.transport`, :meth:`Authority.mock`, :attr:`Authority.asgi`)
or as a real HTTPS server: ``ccflow authority serve --tls --json``.
"""

from __future__ import annotations

from ccflow.authority._assertions import JWT_BEARER
from ccflow.authority._authority import DEFAULT_HOST, Authority
from ccflow.authority._faults import Fault
from ccflow.authority._handlers import Outcome
from ccflow.authority._keys import SigningKey
from ccflow.authority._registrations import (
    DEFAULT_TENANT_ID,
    PARTNER_TENANT_ID,
    ApiApp,
    ClientApp,
    RegisteredCertificate,
    Registrations,
)
from ccflow.authority._routes import Endpoints
from ccflow.authority._server import AuthorityServer
from ccflow.authority._tls import TlsFiles

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_TENANT_ID",
    "JWT_BEARER",
    "PARTNER_TENANT_ID",
    "ApiApp",
    "Authority",
    "AuthorityServer",
    "ClientApp",
    "Endpoints",
    "Fault",
    "Outcome",
    "RegisteredCertificate",
    "Registrations",
    "SigningKey",
    "TlsFiles",
]
