"""Local TLS and certificate material, made with ``cryptography``: a CA and a server certificate
for 127.0.0.1/localhost (``ccflow authority serve --tls``), and client certificates for
``private_key_jwt`` tests."""

from __future__ import annotations

import datetime
import functools
import ipaddress
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ccflow._certificates import x5t_of, x5t_s256_of
from ccflow.errors import ConfigurationError

__all__ = [
    "CertificateMaterial",
    "TlsFiles",
    "client_certificate",
    "self_signed",
    "subject_alt_name",
    "write_tls_files",
]

# Fixed validity keeps key material independent of the clock (and of an injected one).
_NOT_BEFORE = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
_NOT_AFTER = datetime.datetime(2099, 12, 31, tzinfo=datetime.UTC)


@dataclass(frozen=True, slots=True)
class CertificateMaterial:
    """A private key and its certificate, PEM-encoded; the key never appears in ``repr``."""

    certificate_pem: bytes
    private_key_pem: bytes = field(repr=False)

    @property
    def certificate(self) -> x509.Certificate:
        """The certificate, loaded."""
        return x509.load_pem_x509_certificate(self.certificate_pem)

    @property
    def private_key(self) -> rsa.RSAPrivateKey:
        """The private key, loaded."""
        key = serialization.load_pem_private_key(self.private_key_pem, password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return key

    @property
    def x5t(self) -> str:
        """base64url SHA-1 thumbprint of the certificate."""
        return x5t_of(self.certificate.public_bytes(serialization.Encoding.DER))

    @property
    def x5t_s256(self) -> str:
        """base64url SHA-256 thumbprint of the certificate."""
        return x5t_s256_of(self.certificate.public_bytes(serialization.Encoding.DER))

    @property
    def pem(self) -> bytes:
        """Key and certificate in one PEM (what ``ClientCertificate`` and msal read)."""
        return self.private_key_pem + self.certificate_pem


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    """``key`` as unencrypted PKCS #8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    """An X.509 name holding only ``common_name``."""
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: rsa.RSAPublicKey,
    *,
    not_after: datetime.datetime = _NOT_AFTER,
) -> x509.CertificateBuilder:
    """A certificate of ``key`` for ``subject`` by ``issuer``, from 2020, extensions to add."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_NOT_BEFORE)
        .not_valid_after(not_after)
    )


def self_signed(common_name: str) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A new RSA 2048 key and a self-signed certificate of it naming ``common_name``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = _name(common_name)
    return key, _builder(name, name, key.public_key()).sign(key, hashes.SHA256())


@functools.cache
def client_certificate(common_name: str = "ccflow test client") -> CertificateMaterial:
    """A self-signed RSA 2048 client certificate (cached per process and name)."""
    key, cert = self_signed(common_name)
    return CertificateMaterial(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Where the TLS material was written: the CA certificate clients trust, and the server's
    certificate chain and key."""

    ca_file: Path
    cert_file: Path
    key_file: Path


_CA_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def _local_ca() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A CA key and its certificate, which may sign only end-entity certificates."""
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = _name("ccflow local authority CA")
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    return ca_key, ca_cert


_DNS_NAME = re.compile(r"(?:\*\.)?[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9-]{1,63})*\.?")


def subject_alt_name(name: str) -> x509.GeneralName:
    """``name`` for the server certificate: an IP address, or a DNS name (a docker-compose
    service name such as ``authority``); ``ConfigurationError`` for anything else."""
    text = name.strip()
    try:
        return x509.IPAddress(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        pass
    if len(text) > 253 or not _DNS_NAME.fullmatch(text):
        raise ConfigurationError(
            f"{name!r} is not a host name or IP address for the TLS certificate", setting="san"
        )
    return x509.DNSName(text.rstrip(".").lower())


@functools.cache
def _tls_material(extra_names: tuple[str, ...] = ()) -> tuple[bytes, bytes, bytes]:
    """PEM of a local CA, a server certificate it signed, and the server's key (once a process
    for each set of extra names)."""
    ca_key, ca_cert = _local_ca()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    names += [n for n in map(subject_alt_name, extra_names) if n not in names]
    cert = (
        # Short enough for strict clients that cap leaf validity, long enough for any test.
        _builder(
            _name("localhost"),
            ca_cert.subject,
            key.public_key(),
            not_after=datetime.datetime(2049, 12, 31, tzinfo=datetime.UTC),
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return ca_cert.public_bytes(pem), cert.public_bytes(pem), _key_pem(key)


def write_tls_files(
    directory: str | Path | None = None, extra_names: Sequence[str] = ()
) -> TlsFiles:
    """Write a local CA and a server certificate for 127.0.0.1, ::1, localhost and
    ``extra_names`` (host names or IP addresses) into ``directory`` (a new temporary directory
    by default). Generated once per process for each set of names."""
    ca_pem, cert_pem, key_pem = _tls_material(tuple(sorted(set(extra_names))))
    where = (
        Path(directory)
        if directory is not None
        else Path(tempfile.mkdtemp(prefix="ccflow-authority-"))
    )
    files = TlsFiles(where / "ca.pem", where / "server.pem", where / "server-key.pem")
    files.ca_file.write_bytes(ca_pem)
    files.cert_file.write_bytes(cert_pem + ca_pem)
    # Private from the start: created 0600, or (if it exists) made 0600 before it is written.
    fd = os.open(files.key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as key_file:
        if hasattr(os, "fchmod"):  # POSIX; Windows has no such modes
            os.fchmod(fd, 0o600)
        key_file.write(key_pem)
    return files
