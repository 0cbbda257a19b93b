"""Mutual TLS for K and E: certificates, fingerprints, and who a caller is.

* The orchestrator (or a test) makes a client CA and one client certificate per caller
  (each party, E as a client of K, the orchestrator) with :func:`make_client_pki`; each
  certificate's SHA-256 fingerprint is registered with a :class:`Role` at the services.
* Each service makes its own self-signed server certificate at start-up
  (:func:`self_signed_server`): its TLS private key never leaves its process. The service
  prints the certificate on its ready line; clients pin it as their only trust root.
* A service identifies a caller by the fingerprint of the certificate the TLS handshake
  verified (:func:`peer_fingerprint`), never by a name the caller claims.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from dataclasses import dataclass, field
from typing import Mapping, Optional, Tuple

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ppml_hybrid.errors import ConfigError
from ppml_hybrid.rpc.errors import PermissionDeniedError

class RegistryError(ConfigError):
    """The role registry (certificate fingerprint -> role) is inconsistent: refused at start."""


PARTY = "party"
EVALUATOR = "evaluator"
ORCHESTRATOR = "orchestrator"
ROLE_KINDS = (PARTY, EVALUATOR, ORCHESTRATOR)
_VALIDITY = datetime.timedelta(days=2)


@dataclass(frozen=True)
class Credential:
    """A certificate and its private key, PEM. The key is never logged (repr hides it)."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cert_pem)


@dataclass(frozen=True)
class Role:
    """What a registered certificate may do: a party (with its 1-based index), E, or the orchestrator."""

    kind: str
    party: int = 0  # 1..n for parties, 0 otherwise

    def __post_init__(self) -> None:
        if self.kind not in ROLE_KINDS:
            raise ValueError(f"role kind must be one of {ROLE_KINDS}; got {self.kind!r}")
        if (self.kind == PARTY) != (self.party >= 1):
            raise ValueError(f"a party role needs party >= 1 and only a party has one; got {self}")

    def __str__(self) -> str:
        return f"party {self.party}" if self.kind == PARTY else self.kind


@dataclass(frozen=True)
class ClientPKI:
    """The client CA and the credentials issued under it, by name (``party-1``, ``evaluator``...)."""

    ca: Credential
    clients: Mapping[str, Credential]


def fingerprint(cert_pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _make_ca(cn: str) -> Tuple[Credential, ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Credential(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)), key, cert


def _issue(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, cn: str, *, server_hosts: Tuple[str, ...] = ()) -> Credential:
    key = ec.generate_private_key(ec.SECP256R1())
    b = (
        x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if server_hosts:
        sans = [x509.IPAddress(ipaddress.ip_address(h)) if _is_ip(h) else x509.DNSName(h) for h in server_hosts]
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    cert = b.sign(ca_key, hashes.SHA256())
    return Credential(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def make_client_pki(*, names: Tuple[str, ...], ca_name: str = "ppml-hybrid client CA") -> ClientPKI:
    """A fresh client CA and one client certificate per name (kept in memory; nothing on disk)."""
    ca, ca_key, ca_cert = _make_ca(ca_name)
    return ClientPKI(ca=ca, clients={n: _issue(ca_key, ca_cert, n) for n in names})


@dataclass(frozen=True)
class ServerIdentity:
    """A service's TLS identity: ``trust_pem`` is what clients pin (the CA that signed ``leaf``)."""

    leaf: Credential
    trust_pem: bytes


def self_signed_server(*, common_name: str, hosts: Tuple[str, ...] = ("127.0.0.1", "localhost")) -> ServerIdentity:
    """A one-off CA and a server certificate under it; the CA's key is dropped at once."""
    _, ca_key, ca_cert = _make_ca(f"{common_name} (self-signed)")
    leaf = _issue(ca_key, ca_cert, common_name, server_hosts=hosts)
    return ServerIdentity(leaf=leaf, trust_pem=ca_cert.public_bytes(serialization.Encoding.PEM))


def server_credentials(*, identity: ServerIdentity, client_ca_pem: bytes) -> grpc.ServerCredentials:
    """TLS with a required, CA-verified client certificate."""
    return grpc.ssl_server_credentials([(identity.leaf.key_pem, identity.leaf.cert_pem)],
                                       root_certificates=client_ca_pem, require_client_auth=True)


def channel_credentials(*, server_trust_pem: bytes, client: Credential) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=server_trust_pem, private_key=client.key_pem,
                                        certificate_chain=client.cert_pem)


def peer_fingerprint(context: grpc.ServicerContext) -> Optional[str]:
    """Fingerprint of the client certificate the handshake verified; None without one."""
    certs = context.auth_context().get("x509_pem_cert") or []
    if not certs:
        return None
    return fingerprint(certs[0])


@dataclass(frozen=True)
class Registry:
    """Certificate fingerprint -> role, fixed at service start."""

    roles: Mapping[str, Role]

    def caller(self, context: grpc.ServicerContext) -> Role:
        fp = peer_fingerprint(context)
        role = self.roles.get(fp) if fp else None
        if role is None:
            raise PermissionDeniedError("the caller's client certificate is not registered with this service")
        return role

    def require(self, context: grpc.ServicerContext, *, kinds: Tuple[str, ...], operation: str) -> Role:
        role = self.caller(context)
        if role.kind not in kinds:
            raise PermissionDeniedError(f"{role} may not call {operation} (only {', '.join(kinds)})")
        return role

    def validate(self, *, parties: int) -> "Registry":
        """Refuse a registry that names a party outside 1..parties, a party twice, a party not at
        all, or more than one evaluator (typed :class:`RegistryError`); returns self."""
        seen: dict = {}
        for fp, role in self.roles.items():
            if role.kind == PARTY and not 1 <= role.party <= parties:
                raise RegistryError(f"the role registry names party {role.party}, but the run has parties 1..{parties}")
            key = (role.kind, role.party)
            if key in seen and role.kind in (PARTY, EVALUATOR):
                raise RegistryError(f"the role registry names {role} twice (certificates {seen[key][:16]}... and "
                                    f"{fp[:16]}...): one certificate per role")
            seen[key] = fp
        missing = [j for j in range(1, parties + 1) if (PARTY, j) not in seen]
        if missing:
            raise RegistryError(f"the role registry has no certificate for party {missing[0]}")
        return self

    def canonical(self) -> bytes:
        """Deterministic bytes of the whole registry (what K's attestation binds)."""
        import cbor2

        return cbor2.dumps(sorted([fp, r.kind, r.party] for fp, r in self.roles.items()), canonical=True)

    def digest(self) -> bytes:
        return hashlib.sha384(self.canonical()).digest()

    def to_json(self) -> dict:
        return {fp: {"kind": r.kind, "party": r.party} for fp, r in self.roles.items()}

    @classmethod
    def from_json(cls, raw: Mapping[str, Mapping]) -> "Registry":
        if not isinstance(raw, Mapping):
            raise RegistryError("the role registry must be an object: certificate fingerprint -> role")
        try:
            return cls(roles={str(fp): Role(kind=str(r["kind"]), party=int(r.get("party", 0)))
                              for fp, r in raw.items()})
        except (KeyError, TypeError, ValueError) as exc:
            raise RegistryError(f"unreadable role registry entry ({type(exc).__name__}: {exc})") from None
