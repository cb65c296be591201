"""How a client proves who it is: the :class:`Credential` protocol and its implementations.

* :class:`ClientSecret`: a client secret.
* :class:`ClientCertificate`: a certificate and its private key (PEM or PKCS#12), sent as a
  signed ``private_key_jwt`` client assertion; what Azure AD recommends over secrets.
* :class:`ClientAssertion`: an assertion the caller supplies (a string or a callable), e.g. a
  federated identity credential from another identity provider.
* :class:`FederatedTokenFile`: workload identity (Kubernetes, GitHub Actions...): the
  projected token in ``AZURE_FEDERATED_TOKEN_FILE`` as the client assertion, re-read so a
  rotated token is picked up.

A credential is asked, once per token request (never on a cache hit), for the form fields and
headers that authenticate the client::

    fields = credential.request_fields(
        client_id="...", token_endpoint="https://.../token", auth_method="client_secret_post",
        now=time.time(),
    )

Design decision: ``request_fields`` is **synchronous and must be cheap**. Signing a
``private_key_jwt`` assertion takes about a millisecond and the result is reused for minutes;
reading a federated token file is one small local read done at most every few minutes. Both
faces therefore call the same method, and the async face does not need a second code path. A
credential that must do real IO (ask a remote service for an assertion) may additionally
implement ``async arequest_fields(...)`` with the same arguments (:class:`AsyncCredential`);
:class:`ccflow.AsyncTokenClient` prefers it when present, :class:`ccflow.TokenClient` always
uses the synchronous method.

Secrets, private keys and assertions never leave through ``repr``/``str``, logs or exception
messages, and credentials refuse to be pickled.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import inspect
import logging
import os
import re
import threading
import uuid
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Protocol, runtime_checkable
from urllib.parse import quote_plus

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from ccflow._core.assertions import (
    ALGORITHMS,
    Algorithm,
    HeldAssertion,
    assertion_claims,
    assertion_fields,
    assertion_header,
    needs_new_assertion,
    sign_assertion,
    unverified_expiry,
)
from ccflow._core.b64 import b64url_encode
from ccflow._core.tokens import RequestFields
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
    "RequestFields",
    "credential_from_env",
]

logger = logging.getLogger("ccflow")

#: The ``auth_method`` values a client accepts. Secrets use the first two; assertion
#: credentials (certificates, federated tokens) always send ``private_key_jwt`` fields.
AUTH_METHODS = ("client_secret_post", "client_secret_basic", "private_key_jwt")


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


def _no_pickle(obj: object) -> NoReturn:
    raise TypeError(
        f"{type(obj).__name__} holds a secret and cannot be pickled; "
        "build it again from configuration in the other process"
    )


@dataclass(frozen=True, slots=True)
class ClientSecret:
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

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        _no_pickle(self)

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


# -- certificates ------------------------------------------------------------------------------

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
# Whatever cryptography loaded; checked to be RSA before use.
_PrivateKey = Any


def _password_bytes(password: str | bytes | None) -> bytes | None:
    if password is None or password in ("", b""):
        return None
    if isinstance(password, str):
        return password.encode("utf-8")
    if isinstance(password, bytes):
        return password
    raise ConfigurationError(
        f"password must be str or bytes, got {type(password).__name__}", setting="password"
    )


def _read_source(certificate: str | os.PathLike[str] | bytes) -> tuple[bytes, str]:
    """The certificate file's bytes and how to name it in messages (never its content)."""
    if isinstance(certificate, bytes | bytearray):
        return bytes(certificate), "the certificate bytes"
    if isinstance(certificate, str) and certificate.lstrip().startswith("-----BEGIN"):
        return certificate.encode("ascii", "replace"), "the certificate PEM text"
    if not isinstance(certificate, str | os.PathLike):
        raise ConfigurationError(
            f"certificate must be a path or PEM/PKCS#12 bytes, got {type(certificate).__name__}",
            setting="certificate",
        )
    if not str(certificate).strip():
        # Path("") means the working directory; say what is actually wrong.
        raise ConfigurationError(
            "the certificate path is empty (AZURE_CLIENT_CERTIFICATE_PATH)", setting="certificate"
        )
    path = Path(certificate)
    if "-----BEGIN" in str(certificate):
        # PEM text with something before it (quotes...): never quote it, it holds the key.
        raise CredentialError(
            "the certificate looks like PEM text but does not start with '-----BEGIN' (quotes "
            "or other characters around it?); pass the PEM itself, or a path"
        )
    try:
        return path.read_bytes(), f"certificate file {str(path)!r}"
    except OSError as exc:
        raise CredentialError(
            f"cannot read certificate file {str(path)!r}: {exc.strerror or type(exc).__name__}"
        ) from None


def _load_pem(
    data: bytes, password: bytes | None, source: str
) -> tuple[_PrivateKey, list[x509.Certificate]]:
    kinds = {m.group(1).decode("ascii") for m in _PEM_BLOCK.finditer(data)}
    if not any(kind.endswith("PRIVATE KEY") for kind in kinds):
        raise CredentialError(
            f"{source} has no private key: the PEM must hold the private key and the certificate"
        )
    if "CERTIFICATE" not in kinds:
        raise CredentialError(
            f"{source} has no certificate: the PEM must hold the private key and the certificate"
        )
    try:
        key = serialization.load_pem_private_key(data, password)
    except TypeError:
        if password is None:
            raise CredentialError(
                f"the private key in {source} is encrypted: pass its password "
                "(password=..., AZURE_CLIENT_CERTIFICATE_PASSWORD)"
            ) from None
        # A password for an unencrypted key is harmless; azure-identity accepts it too.
        key = serialization.load_pem_private_key(data, None)
    except ValueError:
        if password is not None:
            raise CredentialError(f"wrong password for the private key in {source}") from None
        raise CredentialError(f"the private key in {source} cannot be read") from None
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CredentialError(f"the certificate in {source} cannot be read") from None
    return key, certificates


def _load_pkcs12(
    data: bytes, password: bytes | None, source: str
) -> tuple[_PrivateKey, list[x509.Certificate]]:
    if not data.startswith(b"\x30"):
        raise CredentialError(f"{source} is neither PEM (key and certificate) nor PKCS#12")
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, password)
    except ValueError:
        hint = "no password was given" if password is None else "wrong password"
        raise CredentialError(
            f"cannot open the PKCS#12 data in {source}: {hint}, or it is not PKCS#12"
        ) from None
    if key is None or cert is None:
        raise CredentialError(f"{source} must hold a private key and its certificate")
    return key, [cert, *extra]


@dataclass(frozen=True, slots=True)
class _Signer:
    """Everything needed to sign, fixed at load time."""

    key: rsa.RSAPrivateKey = field(repr=False)
    algorithm: Algorithm
    x5t: str
    x5t_s256: str
    thumbprint: str
    x5c: tuple[str, ...] | None


def _rsa_numbers(certificate: x509.Certificate) -> rsa.RSAPublicNumbers | None:
    public = certificate.public_key()
    return public.public_numbers() if isinstance(public, rsa.RSAPublicKey) else None


def _signer(
    key: _PrivateKey,
    certificates: list[x509.Certificate],
    *,
    algorithm: Algorithm,
    send_certificate_chain: bool,
    source: str,
    now: datetime.datetime,
) -> _Signer:
    if not isinstance(key, rsa.RSAPrivateKey):
        kind = type(key).__name__.removeprefix("_").replace("PrivateKey", "")
        raise CredentialError(
            f"the private key in {source} is not RSA ({kind or 'unknown'}): Azure AD client "
            f"assertions ({algorithm}) need an RSA key"
        )
    mine = key.public_key().public_numbers()
    leaf = next((c for c in certificates if _rsa_numbers(c) == mine), None)
    if leaf is None:
        raise CredentialError(
            f"the private key in {source} does not match its certificate: pair the key with "
            "the certificate registered on the app"
        )
    der = leaf.public_bytes(serialization.Encoding.DER)
    sha1 = hashlib.sha1(der, usedforsecurity=False).digest()
    thumbprint = sha1.hex().upper()
    if leaf.not_valid_after_utc <= now:
        message = (
            f"the certificate in {source} (thumbprint {thumbprint}) expired on "
            f"{leaf.not_valid_after_utc:%Y-%m-%d}; Azure AD will refuse it, renew it"
        )
        logger.warning(message)
        warnings.warn(message, UserWarning, stacklevel=4)
    chain: tuple[str, ...] | None = None
    if send_certificate_chain:
        ordered = [leaf, *(c for c in certificates if c is not leaf)]
        chain = tuple(
            base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode("ascii")
            for c in ordered
        )
    return _Signer(
        key=key,
        algorithm=algorithm,
        x5t=b64url_encode(sha1),
        x5t_s256=b64url_encode(hashlib.sha256(der).digest()),
        thumbprint=thumbprint,
        x5c=chain,
    )


class ClientCertificate:
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

    __slots__ = ("_held", "_lock", "_signer")

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
        if isinstance(send_certificate_chain, bool) or send_certificate_chain in (0, 1):
            chain = bool(send_certificate_chain)
        else:
            # bool("false") is True: a string from the environment must not turn the chain on.
            raise ConfigurationError(
                f"send_certificate_chain must be True or False, got {send_certificate_chain!r} "
                "(from the environment, use from_env(): AZURE_CLIENT_SEND_CERTIFICATE_CHAIN)",
                setting="send_certificate_chain",
            )
        secret = _password_bytes(password)
        data, source = _read_source(certificate)
        if _PEM_BLOCK.search(data):
            key, certificates = _load_pem(data, secret, source)
        else:
            key, certificates = _load_pkcs12(data, secret, source)
        self._signer = _signer(
            key,
            certificates,
            algorithm=algorithm,
            send_certificate_chain=chain,
            source=source,
            now=datetime.datetime.now(datetime.UTC),
        )
        self._held: tuple[str, str, HeldAssertion] | None = None
        self._lock = threading.Lock()

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

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        _no_pickle(self)

    def request_fields(
        self, *, client_id: str, token_endpoint: str, auth_method: str, now: float
    ) -> RequestFields:
        """``client_id``, ``client_assertion_type`` and a signed ``client_assertion``: the one
        held when it is for this client and endpoint and lives for more than a minute, else a
        new one. ``auth_method`` is ignored: a certificate always sends ``private_key_jwt``."""
        held = self._held
        if (
            held is None
            or held[:2] != (client_id, token_endpoint)
            or needs_new_assertion(held[2], now=now)
        ):
            with self._lock:
                held = self._held
                if (
                    held is None
                    or held[:2] != (client_id, token_endpoint)
                    or needs_new_assertion(held[2], now=now)
                ):
                    held = (client_id, token_endpoint, self._sign(client_id, token_endpoint, now))
                    self._held = held
        return RequestFields(form=assertion_fields(client_id, held[2].value))

    def _sign(self, client_id: str, token_endpoint: str, now: float) -> HeldAssertion:
        signer = self._signer
        claims = assertion_claims(
            client_id=client_id, token_endpoint=token_endpoint, now=now, jti=str(uuid.uuid4())
        )
        header = assertion_header(
            signer.algorithm, x5t=signer.x5t, x5t_s256=signer.x5t_s256, x5c=signer.x5c
        )
        value = sign_assertion(signer.key, claims, header)
        return HeldAssertion(value, expires_on=float(claims["exp"]), obtained_at=now)


# -- caller-supplied assertions --------------------------------------------------------------


class _AssertionSource:
    """Holds an assertion from somewhere else and decides when to get a new one."""

    __slots__ = ("_held", "_lock")

    _max_age: float | None = None

    def __init__(self) -> None:
        self._held: HeldAssertion | None = None
        self._lock = threading.Lock()

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        _no_pickle(self)

    def _fetch(self) -> str:
        raise NotImplementedError

    def _describe(self) -> str:
        raise NotImplementedError

    def _accept(self, value: object, now: float) -> HeldAssertion:
        if inspect.iscoroutine(value):
            value.close()  # never awaited: close it rather than leave a RuntimeWarning behind
            raise CredentialError(
                f"{self._describe()} is an async function; ClientAssertion calls a plain "
                "function returning the JWT (or implement AsyncCredential.arequest_fields)"
            )
        if not isinstance(value, str):
            raise CredentialError(
                f"{self._describe()} returned {type(value).__name__}, not a string (the JWT)"
            )
        if not value.strip():
            raise CredentialError(f"{self._describe()} gave no assertion (an empty value)")
        value = value.strip()
        exp = unverified_expiry(value)
        if exp is not None and exp <= now:
            raise CredentialError(
                f"the assertion from {self._describe()} expired at {int(exp)} "
                f"(now {int(now)}); it must be renewed before it is used"
            )
        return HeldAssertion(value, expires_on=exp, obtained_at=now)

    def _fallback(self, now: float) -> HeldAssertion | None:
        """The held assertion when it is still good although a new one could not be had."""
        return None

    def _current(self, now: float) -> HeldAssertion | None:
        held = self._held
        if needs_new_assertion(held, now=now, max_age=self._max_age):
            return None
        return held

    def _fields(self, client_id: str, held: HeldAssertion) -> RequestFields:
        return RequestFields(form=assertion_fields(client_id, held.value))

    def request_fields(
        self, *, client_id: str, token_endpoint: str, auth_method: str, now: float
    ) -> RequestFields:
        """``client_id``, ``client_assertion_type`` and the held assertion, renewed when it
        is near expiry. ``auth_method`` is ignored: assertions always send ``private_key_jwt``."""
        held = self._current(now)
        if held is None:
            held = self._locked_renew(now)
        return self._fields(client_id, held)

    def _locked_renew(self, now: float) -> HeldAssertion:
        """Renew under the lock, unless whoever held it before us already did: concurrent
        fetches (of other scopes, which do not wait for each other) ask the source once."""
        with self._lock:
            held = self._current(now)
            return self._renew(now) if held is None else held

    def _renew(self, now: float) -> HeldAssertion:
        try:
            # An unusable value (a file caught empty mid-rotation, an expired token) is a
            # failed renewal too: a held assertion that is still good is kept.
            held = self._accept(self._fetch(), now)
        except CredentialError as exc:
            fallback = self._fallback(now)
            if fallback is None:
                raise
            logger.warning("%s; still using the assertion read before", exc)
            return fallback
        self._held = held
        return held


class ClientAssertion(_AssertionSource):
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

    __slots__ = ("_source",)

    def __init__(self, assertion: str | Callable[[], str]) -> None:
        super().__init__()
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

    def __repr__(self) -> str:
        kind = "<str>" if isinstance(self._source, str) else "<callable>"
        return f"ClientAssertion({kind})"

    def _describe(self) -> str:
        if isinstance(self._source, str):
            return "the assertion string"
        name = getattr(self._source, "__qualname__", None) or type(self._source).__name__
        return f"the assertion callable {name}"

    def _fetch(self) -> str:
        source = self._source
        if isinstance(source, str):
            return source
        try:
            return source()
        except CredentialError:
            raise
        except Exception as exc:
            raise CredentialError(f"{self._describe()} failed: {type(exc).__name__}") from exc

    def _current(self, now: float) -> HeldAssertion | None:
        if isinstance(self._source, str):
            # A fixed string is never renewed: check it each time so that an expired one fails
            # here, clearly, rather than at the authority.
            return self._accept(self._source, now)
        return super()._current(now)

    async def arequest_fields(
        self, *, client_id: str, token_endpoint: str, auth_method: str, now: float
    ) -> RequestFields:
        """Like :meth:`request_fields`; a callable that must be asked runs in a thread."""
        held = self._current(now)
        if held is None:
            held = await asyncio.to_thread(self._locked_renew, now)
        return self._fields(client_id, held)


_JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


class FederatedTokenFile(_AssertionSource):
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

    __slots__ = ("_max_age", "_path")

    def __init__(self, path: str | os.PathLike[str], *, reread_interval: float = 300.0) -> None:
        super().__init__()
        if not isinstance(path, str | os.PathLike) or not str(path):
            raise ConfigurationError(
                "the federated token file path is empty", setting="AZURE_FEDERATED_TOKEN_FILE"
            )
        if isinstance(reread_interval, bool) or not isinstance(reread_interval, int | float):
            raise ConfigurationError(
                "reread_interval must be seconds > 0", setting="reread_interval"
            )
        if not reread_interval > 0:
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
        self._max_age: float | None = float(reread_interval)

    @property
    def path(self) -> Path:
        """The token file."""
        return self._path

    def __repr__(self) -> str:
        return f"FederatedTokenFile({str(self._path)!r})"

    def _describe(self) -> str:
        return f"federated token file {str(self._path)!r}"

    def _fetch(self) -> str:
        try:
            return self._path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CredentialError(
                f"cannot read {self._describe()}: {exc.strerror or type(exc).__name__}"
            ) from None
        except UnicodeDecodeError:
            raise CredentialError(f"{self._describe()} is not text") from None

    def _fallback(self, now: float) -> HeldAssertion | None:
        held = self._held
        if held is None:
            return None
        if held.expires_on is None or now < held.expires_on - 60:
            return held
        return None


# -- the environment -----------------------------------------------------------------------

_CHAIN_ON = ("1", "true")
#: The variables that name a credential, one of which :func:`credential_from_env` needs.
CREDENTIAL_VARIABLES = (
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_FEDERATED_TOKEN_FILE",
)


def credential_from_env(environ: Mapping[str, str]) -> Credential:
    """The credential the environment describes, in azure-identity's EnvironmentCredential
    order (empty variables count as unset):

    1. ``AZURE_CLIENT_SECRET``: :class:`ClientSecret`;
    2. ``AZURE_CLIENT_CERTIFICATE_PATH`` (PEM or PKCS#12), with
       ``AZURE_CLIENT_CERTIFICATE_PASSWORD`` and ``AZURE_CLIENT_SEND_CERTIFICATE_CHAIN``
       (only ``1`` or ``true`` turn it on): :class:`ClientCertificate`;
    3. ``AZURE_FEDERATED_TOKEN_FILE``: :class:`FederatedTokenFile`.

    The choice is logged at DEBUG on the ``ccflow`` logger; when none fits,
    :class:`ccflow.ConfigurationError` says which variables are missing::

        >>> credential_from_env({"AZURE_CLIENT_SECRET": "s3cret"})
        ClientSecret(secret=<redacted>)
    """
    secret = environ.get("AZURE_CLIENT_SECRET")
    if secret and not secret.strip():
        raise ConfigurationError(
            "AZURE_CLIENT_SECRET is blank; set it to the secret's Value",
            setting="AZURE_CLIENT_SECRET",
        )
    if secret:
        logger.debug("credential from the environment: client secret (AZURE_CLIENT_SECRET)")
        # Stripped, as `ccflow token` does: a trailing newline from a file (a Kubernetes
        # secret) would be sent and refused as a wrong secret (AADSTS7000215).
        return ClientSecret(secret.strip())
    path = environ.get("AZURE_CLIENT_CERTIFICATE_PATH")
    if path:
        chain = environ.get("AZURE_CLIENT_SEND_CERTIFICATE_CHAIN", "").strip().lower()
        logger.debug(
            "credential from the environment: certificate (AZURE_CLIENT_CERTIFICATE_PATH=%s, "
            "password %s, send_certificate_chain=%s)",
            # The variable may hold the PEM itself (ClientCertificate takes PEM text too).
            "<PEM text>" if "-----BEGIN" in path else path,
            "set" if environ.get("AZURE_CLIENT_CERTIFICATE_PASSWORD") else "not set",
            chain in _CHAIN_ON,
        )
        return ClientCertificate(
            path,
            password=environ.get("AZURE_CLIENT_CERTIFICATE_PASSWORD") or None,
            send_certificate_chain=chain in _CHAIN_ON,
        )
    token_file = environ.get("AZURE_FEDERATED_TOKEN_FILE")
    if token_file:
        credential = FederatedTokenFile(token_file)  # first: it refuses a token for a path
        logger.debug(
            "credential from the environment: federated token file (AZURE_FEDERATED_TOKEN_FILE=%s)",
            token_file,
        )
        return credential
    stray = [
        name
        for name in ("AZURE_CLIENT_CERTIFICATE_PASSWORD", "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN")
        if environ.get(name)
    ]
    hint = (
        f" ({' and '.join(stray)} set, but AZURE_CLIENT_CERTIFICATE_PATH is not)" if stray else ""
    )
    raise ConfigurationError(
        "no credential in the environment: set AZURE_CLIENT_SECRET, or "
        "AZURE_CLIENT_CERTIFICATE_PATH (a PEM or PKCS#12 file), or AZURE_FEDERATED_TOKEN_FILE; "
        f"none of them is set{hint}",
        setting="AZURE_CLIENT_SECRET",
    )
