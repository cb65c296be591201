"""How a client proves who it is: the :class:`Credential` protocol and its implementations.

* :class:`ClientSecret`: a client secret.
* :class:`ClientCertificate`: a certificate and its private key (PEM or PKCS#12), sent as a
  signed ``private_key_jwt`` client assertion; what Azure AD recommends over secrets.
* :class:`ClientAssertion`: an assertion the caller supplies (a string or a callable), e.g. a
  federated identity credential from another identity provider.
* :class:`FederatedTokenFile`: workload identity (Kubernetes, GitHub Actions...): the
  projected token in ``AZURE_FEDERATED_TOKEN_FILE`` as the client assertion, re-read so a
  rotated token is picked up.
* :class:`ManagedIdentity`: the Azure host's managed identity (IMDS, App Service, Functions,
  Container Apps): no secret of the app's own; it makes the whole token request itself.

A credential is asked, once per token request (never on a cache hit), for the form fields and
headers that authenticate the client::

    fields = credential.request_fields(
        client_id="...", token_endpoint="https://.../token", auth_method="client_secret_post",
        now=time.time(),
    )

``request_fields`` is synchronous and must be cheap (it may sign, or read a small local file,
but not wait on the network); both faces call it. A credential that must do real IO may also
implement ``async arequest_fields(...)`` with the same arguments (:class:`AsyncCredential`):
:class:`ccflow.AsyncTokenClient` prefers it when present, :class:`ccflow.TokenClient` always
uses the synchronous method.

Secrets, private keys and assertions never leave through ``repr``/``str``, logs or exception
messages, and credentials refuse to be pickled.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import functools
import inspect
import logging
import os
import re
import threading
import uuid
import warnings
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import quote_plus

from ccflow._certificates import Signer, load_signer
from ccflow._config import CLIENT_SECRET_VARIABLES
from ccflow._core.assertions import (
    ALGORITHMS,
    HeldAssertion,
    assertion_claims,
    assertion_fields,
    assertion_header,
    needs_new_assertion,
    sign_assertion,
    unverified_expiry,
    usable_after_failure,
)
from ccflow._core.tokens import RequestFields
from ccflow._managed_identity import ManagedIdentity
from ccflow._unpicklable import Unpicklable
from ccflow.errors import ConfigurationError, CredentialError

__all__ = [
    "AUTH_METHODS",
    "CREDENTIAL_VARIABLES",
    "AsyncCredential",
    "ClientAssertion",
    "ClientCertificate",
    "ClientSecret",
    "Credential",
    "FederatedTokenFile",
    "MANAGED_IDENTITY_VARIABLE",
    "ManagedIdentity",
    "RequestFields",
    "credential_from_env",
    "identity_from_env",
]

logger = logging.getLogger("ccflow")

AUTH_METHODS = ("client_secret_post", "client_secret_basic", "private_key_jwt")
"""The ``auth_method`` values a client accepts. Secrets use the first two; assertion
credentials (certificates, federated tokens) always send ``private_key_jwt`` fields."""


@runtime_checkable
class Credential(Protocol):
    """Anything that can authenticate a client-credentials token request.

    Implement one method; it runs on the slow path only (a token fetch), so it may sign or
    read a file, but it must not block for long. Example, a pre-made client assertion::

        class StaticAssertion:
            def __init__(self, jwt: str) -> None:
                self._jwt = jwt

            def request_fields(self, *, client_id, token_endpoint, auth_method, now):
                return RequestFields(form=(
                    ("client_id", client_id),
                    ("client_assertion_type",
                     "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                    ("client_assertion", self._jwt),
                ))

        TokenClient(client_id="...", credential=StaticAssertion(jwt), tenant_id="...")
    """

    def request_fields(
        self, *, client_id: str, token_endpoint: str, auth_method: str, now: float
    ) -> RequestFields:
        """Form fields and headers for one token request at ``now`` (Unix seconds)."""
        ...


@runtime_checkable
class AsyncCredential(Protocol):
    """Optional async twin of :meth:`Credential.request_fields` for credentials that do IO."""

    async def arequest_fields(
        self, *, client_id: str, token_endpoint: str, auth_method: str, now: float
    ) -> RequestFields:
        """Like :meth:`Credential.request_fields`, awaited by :class:`ccflow.AsyncTokenClient`."""
        ...


@dataclass(frozen=True, slots=True)
class ClientSecret(Unpicklable):
    """A client secret (the ``Value`` shown once in the Azure portal, not the Secret ID).

    ``TokenClient(client_secret="...")`` is short for ``credential=ClientSecret("...")``.
    Sent as ``client_secret_post`` (form fields, as Azure AD and msal do) or, with
    ``auth_method="client_secret_basic"``, as an ``Authorization: Basic`` header whose id and
    secret are form-urlencoded first (RFC 6749 section 2.3.1), so ``+ / % & = :`` survive::

        >>> ClientSecret("s3cret")
        ClientSecret(secret=<redacted>)
        >>> fields = ClientSecret("a:b").request_fields(
        ...     client_id="id", token_endpoint="https://x/token",
        ...     auth_method="client_secret_basic", now=0)
        >>> fields.headers
        (('Authorization', 'Basic aWQ6YSUzQWI='),)
    """

    secret: str = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.secret, str):
            # Never the value: a secret passed as bytes is still a secret.
            raise ConfigurationError(
                f"client_secret must be a string (the secret's Value), got "
                f"{type(self.secret).__name__}",
                setting="client_secret",
            )
        if not self.secret.strip():
            raise ConfigurationError(
                "client_secret is empty (or blank); pass the secret's Value",
                setting="client_secret",
            )

    def __repr__(self) -> str:
        return "ClientSecret(secret=<redacted>)"

    def request_fields(
        self, *, client_id: str, token_endpoint: str, auth_method: str, now: float
    ) -> RequestFields:
        """``client_id`` + ``client_secret`` form fields, or a Basic header."""
        if auth_method == "client_secret_post":
            return RequestFields(form=(("client_id", client_id), ("client_secret", self.secret)))
        if auth_method == "client_secret_basic":
            pair = f"{quote_plus(client_id)}:{quote_plus(self.secret)}".encode()
            header = "Basic " + base64.b64encode(pair).decode("ascii")
            return RequestFields(headers=(("Authorization", header),))
        raise ConfigurationError(
            f"auth_method {auth_method!r} does not work with a client secret; use "
            "'client_secret_post' or 'client_secret_basic'",
            setting="auth_method",
        )


# -- holding an assertion -----------------------------------------------------------------


class _AssertionHolder:
    """One assertion, reused until it must be renewed, renewed once under a lock."""

    __slots__ = ("_lock", "_max_age", "_slot")

    def __init__(self, *, max_age: float | None = None) -> None:
        self._slot: tuple[Hashable, HeldAssertion] | None = None
        self._lock = threading.Lock()
        self._max_age = max_age

    @property
    def held(self) -> HeldAssertion | None:
        """The assertion held now, good or not."""
        slot = self._slot
        return None if slot is None else slot[1]

    def reusable(self, now: float, purpose: Hashable = None) -> HeldAssertion | None:
        """The held assertion when it was made for ``purpose`` and may still be sent."""
        slot = self._slot
        if slot is None or slot[0] != purpose:
            return None
        held = slot[1]
        return None if needs_new_assertion(held, now=now, max_age=self._max_age) else held

    def get(
        self, now: float, renew: Callable[[float], HeldAssertion], purpose: Hashable = None
    ) -> HeldAssertion:
        """The held assertion, or ``renew(now)``'s, asked once for concurrent callers."""
        held = self.reusable(now, purpose)
        if held is not None:
            return held
        # Concurrent fetches (of other scopes, which do not wait for each other) renew once.
        with self._lock:
            held = self.reusable(now, purpose)
            if held is None:
                held = renew(now)
                self._slot = (purpose, held)
            return held

    async def aget(self, now: float, renew: Callable[[float], HeldAssertion]) -> HeldAssertion:
        """Like :meth:`get`, renewing in a worker thread so that ``renew`` may block."""
        held = self.reusable(now)
        if held is not None:
            return held
        return await asyncio.to_thread(self.get, now, renew)


def _accepted(value: object, now: float, source: str) -> HeldAssertion:
    """``value`` as a held assertion, or the :class:`CredentialError` saying why it is not."""
    if inspect.iscoroutine(value):
        value.close()  # never awaited: close it rather than leave a RuntimeWarning behind
        raise CredentialError(
            f"{source} is an async function; ClientAssertion calls a plain "
            "function returning the JWT (or implement AsyncCredential.arequest_fields)"
        )
    if not isinstance(value, str):
        raise CredentialError(f"{source} returned {type(value).__name__}, not a string (the JWT)")
    if not value.strip():
        raise CredentialError(f"{source} gave no assertion (an empty value)")
    value = value.strip()
    exp = unverified_expiry(value)
    if exp is not None and exp <= now:
        raise CredentialError(
            f"the assertion from {source} expired at {int(exp)} "
            f"(now {int(now)}); it must be renewed before it is used"
        )
    return HeldAssertion(value, expires_on=exp, obtained_at=now)


def _assertion_fields(client_id: str, held: HeldAssertion) -> RequestFields:
    """The ``private_key_jwt`` form fields that send ``held``."""
    return RequestFields(form=assertion_fields(client_id, held.value))


# -- certificates ------------------------------------------------------------------------------


class ClientCertificate(Unpicklable):
    """A certificate credential: signs ``private_key_jwt`` client assertions with its key.

    ``certificate`` is a path or the file's bytes: PEM holding the private key and the
    certificate (and, optionally, the rest of the chain), or PKCS#12 (``.pfx``/``.p12``).
    ``password`` opens an encrypted key or PKCS#12 file. The assertion has ``aud`` = the token
    endpoint, ``iss`` = ``sub`` = the client id, a fresh ``jti``, ``nbf``/``iat`` now and
    ``exp`` ten minutes later; it is reused until about a minute before it expires.

    ``algorithm="PS256"`` (default) names the certificate by its SHA-256 thumbprint
    (``x5t#S256``); ``algorithm="RS256"`` uses RS256 and the SHA-1 ``x5t`` that older tenants
    expect. ``send_certificate_chain=True`` adds ``x5c`` (the chain, leaf first) for
    subject-name/issuer authentication::

        credential = ClientCertificate("/etc/ccflow/client.pem")
        client = TokenClient(client_id="...", credential=credential, tenant_id="...")

        ClientCertificate(Path("client.pfx").read_bytes(), password=os.environ["PFX_PASSWORD"])

    Raises :class:`ccflow.CredentialError` for a wrong or missing password, a key that does
    not match the certificate, or a non-RSA key; an expired certificate is logged and warned
    about (``UserWarning``), since Azure AD will refuse it. ``repr`` shows the thumbprint only.
    """

    __slots__ = ("_holder", "_signer")

    def __init__(
        self,
        certificate: str | os.PathLike[str] | bytes,
        password: str | bytes | None = None,
        send_certificate_chain: bool = False,
        algorithm: str = "PS256",
    ) -> None:
        if algorithm not in ALGORITHMS:
            raise ConfigurationError(
                f"algorithm must be 'PS256' or 'RS256', got {algorithm!r}", setting="algorithm"
            )
        if not (isinstance(send_certificate_chain, bool) or send_certificate_chain in (0, 1)):
            # bool("false") is True: a string from the environment must not turn the chain on.
            raise ConfigurationError(
                f"send_certificate_chain must be True or False, got {send_certificate_chain!r} "
                "(from the environment, use from_env(): AZURE_CLIENT_SEND_CERTIFICATE_CHAIN)",
                setting="send_certificate_chain",
            )
        self._signer = load_signer(
            certificate,
            password,
            algorithm=algorithm,
            send_certificate_chain=bool(send_certificate_chain),
        )
        if self._signer.not_valid_after <= datetime.datetime.now(datetime.UTC):
            _warn_expired(self._signer)
        self._holder = _AssertionHolder()

    @property
    def thumbprint(self) -> str:
        """The certificate's SHA-1 thumbprint in upper-case hex, as the Azure portal shows it."""
        return self._signer.thumbprint

    @property
    def algorithm(self) -> str:
        """``"PS256"`` or ``"RS256"``."""
        return self._signer.algorithm

    @property
    def send_certificate_chain(self) -> bool:
        """Whether assertions carry ``x5c``."""
        return self._signer.x5c is not None

    def __repr__(self) -> str:
        return (
            f"ClientCertificate(thumbprint={self.thumbprint!r}, algorithm={self.algorithm!r}, "
            f"send_certificate_chain={self.send_certificate_chain})"
        )

    def request_fields(
        self, *, client_id: str, token_endpoint: str, auth_method: str, now: float
    ) -> RequestFields:
        """``client_id``, ``client_assertion_type`` and a signed ``client_assertion``: the one
        held when it is for this client and endpoint and lives for more than a minute, else a
        new one. ``auth_method`` is ignored: a certificate always sends ``private_key_jwt``."""
        sign = functools.partial(self._sign, client_id, token_endpoint)
        held = self._holder.get(now, sign, purpose=(client_id, token_endpoint))
        return _assertion_fields(client_id, held)

    def _sign(self, client_id: str, token_endpoint: str, now: float) -> HeldAssertion:
        """A new assertion for ``client_id`` at ``token_endpoint``, signed at ``now``."""
        signer = self._signer
        claims = assertion_claims(
            client_id=client_id, token_endpoint=token_endpoint, now=now, jti=str(uuid.uuid4())
        )
        header = assertion_header(
            signer.algorithm, x5t=signer.x5t, x5t_s256=signer.x5t_s256, x5c=signer.x5c
        )
        value = sign_assertion(signer.key, claims, header)
        return HeldAssertion(value, expires_on=float(claims["exp"]), obtained_at=now)


def _warn_expired(signer: Signer) -> None:
    """Log and warn (at the caller of ``ClientCertificate(...)``) that the certificate expired."""
    message = (
        f"the certificate in {signer.source} (thumbprint {signer.thumbprint}) expired on "
        f"{signer.not_valid_after:%Y-%m-%d}; Azure AD will refuse it, renew it"
    )
    logger.warning(message)
    warnings.warn(message, UserWarning, stacklevel=3)


# -- caller-supplied assertions --------------------------------------------------------------


class ClientAssertion(Unpicklable):
    """A client assertion the caller supplies: a JWT string, or a callable returning one.

    For federated identity credentials (a token from another identity provider that the app
    registration trusts) and for assertions signed elsewhere (an HSM, Key Vault). The callable
    is called when a fresh assertion is needed: on the first token request, and when the one
    held expires within a minute (its ``exp`` is read, not verified); an assertion without a
    readable ``exp`` is asked for on every token request. A string is sent as it is::

        def github_oidc_token() -> str:
            return requests.get(url, headers=...).json()["value"]

        client = TokenClient(
            client_id="...", credential=ClientAssertion(github_oidc_token), tenant_id="..."
        )

    :class:`ccflow.AsyncTokenClient` calls the callable in a worker thread, so it may block.
    Raises :class:`ccflow.CredentialError` when the callable fails or returns an empty or
    already expired assertion. The assertion never appears in ``repr``, logs or errors.
    """

    __slots__ = ("_holder", "_source")

    def __init__(self, assertion: str | Callable[[], str]) -> None:
        if isinstance(assertion, str):
            if not assertion.strip():
                raise ConfigurationError("the client assertion is empty", setting="assertion")
        elif not callable(assertion):
            raise ConfigurationError(
                f"assertion must be a string or a callable returning one, got "
                f"{type(assertion).__name__}",
                setting="assertion",
            )
        self._source = assertion
        self._holder = _AssertionHolder()

    def __repr__(self) -> str:
        kind = "<str>" if isinstance(self._source, str) else "<callable>"
        return f"ClientAssertion({kind})"

    def request_fields(
        self, *, client_id: str, token_endpoint: str, auth_method: str, now: float
    ) -> RequestFields:
        """``client_id``, ``client_assertion_type`` and the held assertion, renewed when it
        is near expiry. ``auth_method`` is ignored: assertions always send ``private_key_jwt``."""
        return _assertion_fields(client_id, self._holder.get(now, self._ask))

    async def arequest_fields(
        self, *, client_id: str, token_endpoint: str, auth_method: str, now: float
    ) -> RequestFields:
        """Like :meth:`request_fields`; a callable that must be asked runs in a thread."""
        return _assertion_fields(client_id, await self._holder.aget(now, self._ask))

    def _describe(self) -> str:
        """How messages name the source: never its value."""
        if isinstance(self._source, str):
            return "the assertion string"
        name = getattr(self._source, "__qualname__", None) or type(self._source).__name__
        return f"the assertion callable {name}"

    def _ask(self, now: float) -> HeldAssertion:
        """The assertion again: the string checked (an expired one fails here, not at the
        authority), or a new one from the callable."""
        source = self._source
        try:
            value = source if isinstance(source, str) else source()
        except CredentialError:
            raise
        except Exception as exc:
            raise CredentialError(f"{self._describe()} failed: {type(exc).__name__}") from exc
        return _accepted(value, now, self._describe())


_JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


class FederatedTokenFile(Unpicklable):
    """Workload identity: the token in a file (``AZURE_FEDERATED_TOKEN_FILE``) as the assertion.

    Kubernetes (Azure Workload Identity) and other platforms project a short-lived token into
    a file and replace it before it expires. The file is read on the first token request, again
    when the token held expires within a minute (``exp`` read, not verified), and otherwise at
    most every ``reread_interval`` seconds (300), so a rotated token is picked up without a
    read per request. When a re-read fails while the token held is still good, it is kept
    (and the failure logged)::

        credential = FederatedTokenFile(os.environ["AZURE_FEDERATED_TOKEN_FILE"])
        client = TokenClient(client_id="...", credential=credential, tenant_id="...")
    """

    __slots__ = ("_holder", "_path")

    def __init__(self, path: str | os.PathLike[str], *, reread_interval: float = 300.0) -> None:
        if not isinstance(path, str | os.PathLike) or not str(path):
            raise ConfigurationError(
                "the federated token file path is empty", setting="AZURE_FEDERATED_TOKEN_FILE"
            )
        if (
            isinstance(reread_interval, bool)
            or not isinstance(reread_interval, int | float)
            or not reread_interval > 0
        ):
            raise ConfigurationError(
                "reread_interval must be seconds > 0", setting="reread_interval"
            )
        if _JWT_SHAPE.fullmatch(str(path).strip()):
            # Never quoted: this is the assertion itself, which repr() and errors would show.
            raise ConfigurationError(
                "the federated token file setting holds a token (a JWT), not a path: set "
                "AZURE_FEDERATED_TOKEN_FILE to the path of the token file",
                setting="AZURE_FEDERATED_TOKEN_FILE",
            )
        self._path = Path(path)
        self._holder = _AssertionHolder(max_age=float(reread_interval))

    @property
    def path(self) -> Path:
        """The token file."""
        return self._path

    def __repr__(self) -> str:
        return f"FederatedTokenFile({str(self._path)!r})"

    def request_fields(
        self, *, client_id: str, token_endpoint: str, auth_method: str, now: float
    ) -> RequestFields:
        """The token file's token as ``client_assertion``, read as the class describes.
        ``auth_method`` is ignored: a token file always sends ``private_key_jwt``."""
        return _assertion_fields(client_id, self._holder.get(now, self._read))

    def _describe(self) -> str:
        """How messages name the file."""
        return f"federated token file {str(self._path)!r}"

    def _read(self, now: float) -> HeldAssertion:
        """The token in the file; after a failed read, the one held while it is still good."""
        try:
            # An unusable value (a file caught empty mid-rotation, an expired token) is a
            # failed read too.
            return _accepted(self._read_text(), now, self._describe())
        except CredentialError as exc:
            held = self._holder.held
            if held is None or not usable_after_failure(held, now=now):
                raise
            logger.warning("%s; still using the assertion read before", exc)
            return held

    def _read_text(self) -> str:
        """The file's text, or a :class:`CredentialError` naming the file."""
        try:
            return self._path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CredentialError(
                f"cannot read {self._describe()}: {exc.strerror or type(exc).__name__}"
            ) from None
        except UnicodeDecodeError:
            raise CredentialError(f"{self._describe()} is not text") from None


# -- the environment -----------------------------------------------------------------------

_CHAIN_ON = ("1", "true")
CREDENTIAL_VARIABLES = (
    *CLIENT_SECRET_VARIABLES,
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_FEDERATED_TOKEN_FILE",
)
"""The variables that name a credential, one of which :func:`credential_from_env` needs."""


MANAGED_IDENTITY_VARIABLE = "CCFLOW_MANAGED_IDENTITY"
"""The variable that asks ``from_env()`` for the host's managed identity, when none of
:data:`CREDENTIAL_VARIABLES` is set (never guessed by probing the network)."""
_ON, _OFF = ("1", "true", "yes"), ("", "0", "false", "no")


def identity_from_env(environ: Mapping[str, str]) -> ManagedIdentity | None:
    """The managed identity, when ``CCFLOW_MANAGED_IDENTITY`` is ``true`` (or ``1``) and no
    other credential variable is set; ``AZURE_CLIENT_ID``, when set, picks a user-assigned
    identity. ``None`` otherwise::

        >>> identity_from_env({"CCFLOW_MANAGED_IDENTITY": "false"}) is None
        True
    """
    value = environ.get(MANAGED_IDENTITY_VARIABLE, "").strip().lower()
    if value not in _ON and value not in _OFF:
        raise ConfigurationError(
            f"{MANAGED_IDENTITY_VARIABLE} must be true or false, got {value!r}",
            setting=MANAGED_IDENTITY_VARIABLE,
        )
    if value in _OFF or any(environ.get(name) for name in CREDENTIAL_VARIABLES):
        return None
    client_id = environ.get("AZURE_CLIENT_ID", "").strip() or None
    identity = ManagedIdentity(client_id, environ=environ)
    logger.debug(
        "credential from the environment: %s (%s=true, %s endpoint %s)",
        identity.name,
        MANAGED_IDENTITY_VARIABLE,
        identity.kind,
        identity.endpoint,
    )
    return identity


def credential_from_env(environ: Mapping[str, str]) -> Credential:
    """The credential the environment describes, in azure-identity's EnvironmentCredential
    order (empty variables count as unset):

    1. ``AZURE_CLIENT_SECRET``, else ``CCFLOW_CLIENT_SECRET``: :class:`ClientSecret`;
    2. ``AZURE_CLIENT_CERTIFICATE_PATH`` (PEM or PKCS#12), with
       ``AZURE_CLIENT_CERTIFICATE_PASSWORD`` and ``AZURE_CLIENT_SEND_CERTIFICATE_CHAIN``
       (only ``1`` or ``true`` turn it on): :class:`ClientCertificate`;
    3. ``AZURE_FEDERATED_TOKEN_FILE``: :class:`FederatedTokenFile`;
    4. ``CCFLOW_MANAGED_IDENTITY=true``: :class:`ManagedIdentity` (see :func:`identity_from_env`).

    The choice is logged at DEBUG on the ``ccflow`` logger; when none fits,
    :class:`ccflow.ConfigurationError` says which variables are missing::

        >>> credential_from_env({"AZURE_CLIENT_SECRET": "s3cret"})
        ClientSecret(secret=<redacted>)
    """
    for name in CLIENT_SECRET_VARIABLES:
        secret = environ.get(name)
        if secret and not secret.strip():
            raise ConfigurationError(f"{name} is blank; set it to the secret's Value", setting=name)
        if secret:
            logger.debug("credential from the environment: client secret (%s)", name)
            # Stripped, as `ccflow token` does: a trailing newline from a file (a Kubernetes
            # secret) would be sent and refused as a wrong secret (AADSTS7000215).
            return ClientSecret(secret.strip())
    path = environ.get("AZURE_CLIENT_CERTIFICATE_PATH")
    if path:
        return _certificate_from_env(environ, path)
    token_file = environ.get("AZURE_FEDERATED_TOKEN_FILE")
    if token_file:
        credential = FederatedTokenFile(token_file)  # first: it refuses a token for a path
        logger.debug(
            "credential from the environment: federated token file (AZURE_FEDERATED_TOKEN_FILE=%s)",
            token_file,
        )
        return credential
    identity = identity_from_env(environ)
    if identity is not None:
        return identity
    raise _no_credential(environ)


def _certificate_from_env(environ: Mapping[str, str], path: str) -> ClientCertificate:
    """The certificate ``AZURE_CLIENT_CERTIFICATE_PATH`` and its companion variables name."""
    chain = environ.get("AZURE_CLIENT_SEND_CERTIFICATE_CHAIN", "").strip().lower() in _CHAIN_ON
    logger.debug(
        "credential from the environment: certificate (AZURE_CLIENT_CERTIFICATE_PATH=%s, "
        "password %s, send_certificate_chain=%s)",
        # The variable may hold the PEM itself (ClientCertificate takes PEM text too).
        "<PEM text>" if "-----BEGIN" in path else path,
        "set" if environ.get("AZURE_CLIENT_CERTIFICATE_PASSWORD") else "not set",
        chain,
    )
    return ClientCertificate(
        path,
        password=environ.get("AZURE_CLIENT_CERTIFICATE_PASSWORD") or None,
        send_certificate_chain=chain,
    )


def _no_credential(environ: Mapping[str, str]) -> ConfigurationError:
    """The error when no credential variable is set, naming stray certificate companions."""
    stray = [
        name
        for name in ("AZURE_CLIENT_CERTIFICATE_PASSWORD", "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN")
        if environ.get(name)
    ]
    hint = (
        f" ({' and '.join(stray)} set, but AZURE_CLIENT_CERTIFICATE_PATH is not)" if stray else ""
    )
    return ConfigurationError(
        "no credential in the environment: set AZURE_CLIENT_SECRET, or "
        "AZURE_CLIENT_CERTIFICATE_PATH (a PEM or PKCS#12 file), or AZURE_FEDERATED_TOKEN_FILE "
        f"(or, on an Azure host, CCFLOW_MANAGED_IDENTITY=true); none of them is set{hint}",
        setting="AZURE_CLIENT_SECRET",
    )
