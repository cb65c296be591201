"""Loading a client certificate: PEM or PKCS#12, its password, its chain and its thumbprints.

:func:`load_signer` turns what :class:`ccflow.ClientCertificate` is given (a path, PEM text or
the file's bytes, and a password) into a :class:`Signer`: the RSA key and the header values a
``private_key_jwt`` assertion names the certificate by (``x5t``, ``x5t#S256``, ``x5c``).
Messages name the source (a path, or "the certificate bytes"), never its content.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from ccflow._core.assertions import Algorithm
from ccflow._core.b64 import b64url_encode
from ccflow.errors import ConfigurationError, CredentialError

__all__ = ["Signer", "load_signer", "x5t_of", "x5t_s256_of"]

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
# Whatever cryptography loaded; checked to be RSA before use.
_PrivateKey = Any


@dataclass(frozen=True, slots=True)
class Signer:
    """Everything needed to sign, fixed at load time."""

    key: rsa.RSAPrivateKey = field(repr=False)
    algorithm: Algorithm
    x5t: str
    x5t_s256: str
    thumbprint: str
    x5c: tuple[str, ...] | None
    not_valid_after: datetime.datetime
    source: str


def load_signer(
    certificate: str | os.PathLike[str] | bytes,
    password: str | bytes | None,
    *,
    algorithm: Algorithm,
    send_certificate_chain: bool,
) -> Signer:
    """Read ``certificate`` (PEM or PKCS#12), open it with ``password`` and check the key.

    Raises :class:`ccflow.CredentialError` for a missing or wrong password, a key that does
    not match the certificate, or a non-RSA key.
    """
    secret = _password_bytes(password)
    data, source = _read_source(certificate)
    if _PEM_BLOCK.search(data):
        key, certificates = _load_pem(data, secret, source)
    else:
        key, certificates = _load_pkcs12(data, secret, source)
    return _signer(
        key,
        certificates,
        algorithm=algorithm,
        send_certificate_chain=send_certificate_chain,
        source=source,
    )


def _password_bytes(password: str | bytes | None) -> bytes | None:
    """The password as bytes, ``None`` when there is none (or it is empty)."""
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
    """The private key and the certificates of PEM ``data``."""
    kinds = {m.group(1).decode("ascii") for m in _PEM_BLOCK.finditer(data)}
    if not any(kind.endswith("PRIVATE KEY") for kind in kinds):
        raise CredentialError(
            f"{source} has no private key: the PEM must hold the private key and the certificate"
        )
    if "CERTIFICATE" not in kinds:
        raise CredentialError(
            f"{source} has no certificate: the PEM must hold the private key and the certificate"
        )
    key = _pem_private_key(data, password, source)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CredentialError(f"the certificate in {source} cannot be read") from None
    return key, certificates


def _pem_private_key(data: bytes, password: bytes | None, source: str) -> _PrivateKey:
    """The PEM private key, opened with ``password`` when it is encrypted."""
    try:
        return serialization.load_pem_private_key(data, password)
    except TypeError:
        if password is None:
            raise CredentialError(
                f"the private key in {source} is encrypted: pass its password "
                "(password=..., AZURE_CLIENT_CERTIFICATE_PASSWORD)"
            ) from None
        # A password for an unencrypted key is harmless; azure-identity accepts it too.
        return serialization.load_pem_private_key(data, None)
    except ValueError:
        if password is not None:
            raise CredentialError(f"wrong password for the private key in {source}") from None
        raise CredentialError(f"the private key in {source} cannot be read") from None


def _load_pkcs12(
    data: bytes, password: bytes | None, source: str
) -> tuple[_PrivateKey, list[x509.Certificate]]:
    """The private key and the certificates (leaf first) of PKCS#12 ``data``."""
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


def _rsa_numbers(certificate: x509.Certificate) -> rsa.RSAPublicNumbers | None:
    """The certificate's RSA public numbers, ``None`` for another kind of key."""
    public = certificate.public_key()
    return public.public_numbers() if isinstance(public, rsa.RSAPublicKey) else None


def _signer(
    key: _PrivateKey,
    certificates: list[x509.Certificate],
    *,
    algorithm: Algorithm,
    send_certificate_chain: bool,
    source: str,
) -> Signer:
    """The signer for an RSA ``key`` and the certificate among ``certificates`` it matches."""
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
    chain: tuple[str, ...] | None = None
    if send_certificate_chain:
        ordered = [leaf, *(c for c in certificates if c is not leaf)]
        chain = tuple(
            base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode("ascii")
            for c in ordered
        )
    return Signer(
        key=key,
        algorithm=algorithm,
        x5t=x5t_of(der),
        x5t_s256=x5t_s256_of(der),
        thumbprint=hashlib.sha1(der, usedforsecurity=False).hexdigest().upper(),
        x5c=chain,
        not_valid_after=leaf.not_valid_after_utc,
        source=source,
    )


def x5t_of(der: bytes) -> str:
    """The ``x5t`` of a DER certificate: its SHA-1 thumbprint, base64url."""
    return b64url_encode(hashlib.sha1(der, usedforsecurity=False).digest())


def x5t_s256_of(der: bytes) -> str:
    """The ``x5t#S256`` of a DER certificate: its SHA-256 thumbprint, base64url."""
    return b64url_encode(hashlib.sha256(der).digest())
