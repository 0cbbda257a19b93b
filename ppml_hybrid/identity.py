"""A role's own TLS identity: made on its own host, only the certificate ever published.

``python -m ppml_hybrid keygen --role party-0 --out DIR`` makes a P-256 key from the OS
CSPRNG and a self-signed certificate for it, writes ``DIR/party-0.key`` (mode 0600, the
only copy of the private key) and ``DIR/party-0.crt``, and prints the certificate's SHA-256
fingerprint: the certificate (or its fingerprint, read out over a second channel to check
it) is what goes into the consortium file. Nobody else ever holds the key.

The certificate is self-signed with ``CA:TRUE, pathlen 0`` so that it can be its own trust
anchor in the peers' pinned trust stores; the key signs nothing but TLS handshakes.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ppml_hybrid.errors import ConfigError

KEY_SUFFIX, CERT_SUFFIX = ".key", ".crt"


class IdentityError(ConfigError):
    """A role's identity files are missing, unreadable, too open, or do not match."""


@dataclass(frozen=True)
class LinkIdentity:
    """A role's own TLS certificate and private key (PEM). The key never leaves its process
    and is never shown (repr hides it); only ``cert_pem`` is published."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)

    @property
    def fingerprint(self) -> str:
        return cert_fingerprint(self.cert_pem)


def cert_fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the certificate's DER encoding, hex (what a consortium file pins)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def make_link_identity(common_name: str, *, valid_days: int = 2) -> LinkIdentity:
    """A fresh P-256 key (this process's CSPRNG) and a self-signed certificate for it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        # gRPC checks a server name: every role certificate carries the fixed label the clients
        # ask for (rpc.options.CLIENT_OPTIONS); the pinned certificate is what authenticates
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return LinkIdentity(cert.public_bytes(serialization.Encoding.PEM), key_pem)


def write_identity(identity: LinkIdentity, *, out_dir: Path, role: str) -> Path:
    """Write ``role.key`` (0600, created exclusively: never overwrites a key) and ``role.crt``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = out_dir / f"{role}{KEY_SUFFIX}", out_dir / f"{role}{CERT_SUFFIX}"
    if key_path.exists() or cert_path.exists():
        raise IdentityError(f"{key_path} or {cert_path} already exists: keygen never overwrites a key "
                            "(move the old pair away first)")
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(identity.key_pem)
    cert_path.write_bytes(identity.cert_pem)
    return cert_path


def load_identity(path_prefix: Path) -> LinkIdentity:
    """Read ``PREFIX.key`` and ``PREFIX.crt`` (as written by keygen) and check they belong together."""
    key_path = path_prefix.with_name(path_prefix.name + KEY_SUFFIX)
    cert_path = path_prefix.with_name(path_prefix.name + CERT_SUFFIX)
    for p in (key_path, cert_path):
        if not p.is_file():
            raise IdentityError(f"identity file {p} not found: make it on this host with "
                                "`python -m ppml_hybrid keygen --role ROLE --out DIR`")
    mode = stat.S_IMODE(key_path.stat().st_mode)
    if mode & 0o077:
        raise IdentityError(f"{key_path} is readable by others (mode {oct(mode)}): run `chmod 600 {key_path}`")
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (ValueError, TypeError) as exc:
        raise IdentityError(f"{key_path} / {cert_path} is not a PEM key / certificate ({exc})") from None
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, pub) != cert.public_key().public_bytes(
            serialization.Encoding.DER, pub):
        raise IdentityError(f"{cert_path} is not the certificate of {key_path}")
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return LinkIdentity(cert_path.read_bytes(), key_pem)
