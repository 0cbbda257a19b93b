"""The consortium file: every role of a multi-site run, where it listens, and its pinned certificate.

One YAML file, the same at every host (it holds only public material)::

    roles:
      party-0:  {host: 10.0.1.5, port: 29500, cert: certs/party-0.crt}
      party-1:  {host: 10.0.2.7, port: 29500, cert: certs/party-1.crt,
                 fingerprint: 3f0c...}            # optional: checked against the certificate
      dealer:   {host: 10.0.9.2, port: 29500, cert: certs/dealer.crt}

``cert`` is a path (relative to the consortium file) or the PEM text itself. Role names:
``party-0`` .. ``party-{n-1}`` (contiguous), ``dealer``, ``evaluator``, ``keyservice``,
``coordinator``. Every certificate must be distinct (one key per role). Each role's own
private key stays on its host (:mod:`ppml_hybrid.identity`). Errors name the file and the
field.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Tuple

import yaml

from ppml_hybrid.errors import ConfigError
from ppml_hybrid.identity import cert_fingerprint

SERVICE_ROLES = ("dealer", "evaluator", "keyservice", "coordinator")
_PARTY = re.compile(r"^party-(\d+)$")


class ConsortiumError(ConfigError):
    """The consortium file is missing, malformed, or inconsistent."""


@dataclass(frozen=True)
class RoleEntry:
    """One role: its name, address and pinned certificate (public)."""

    name: str
    host: str
    port: int
    cert_pem: bytes = field(repr=False)

    @property
    def fingerprint(self) -> str:
        return cert_fingerprint(self.cert_pem)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def describe(self) -> str:
        return f"{self.name} at {self.address}"


@dataclass(frozen=True)
class Consortium:
    """Every role of the run, by name (module doc)."""

    roles: Mapping[str, RoleEntry]
    source: str = "<memory>"

    @property
    def parties(self) -> int:
        return sum(1 for n in self.roles if _PARTY.match(n))

    def role(self, name: str) -> RoleEntry:
        if name not in self.roles:
            raise ConsortiumError(f"{self.source}: no role {name!r} (it has {', '.join(sorted(self.roles))})")
        return self.roles[name]

    def digest(self) -> str:
        """SHA-256 over every role's name, address and fingerprint (all sites must agree on it)."""
        canon = {n: [r.host, r.port, r.fingerprint] for n, r in sorted(self.roles.items())}
        return hashlib.sha256(json.dumps(canon, sort_keys=True).encode()).hexdigest()


def party_role(rank: int) -> str:
    return f"party-{rank}"


def is_role_name(name: object) -> bool:
    """``party-0``, ``party-1``, ... or one of :data:`SERVICE_ROLES`."""
    return isinstance(name, str) and (bool(_PARTY.match(name)) or name in SERVICE_ROLES)


ROLE_NAMES_HINT = f"party-0, party-1, ..., {', '.join(SERVICE_ROLES)}"


def _cert(raw: Any, *, where: str, base: Path) -> bytes:
    if not isinstance(raw, str) or not raw.strip():
        raise ConsortiumError(f"{where}.cert must be a certificate path or PEM text")
    if raw.lstrip().startswith("-----BEGIN CERTIFICATE-----"):
        pem = raw.encode("ascii")
    else:
        path = (base / raw) if not Path(raw).is_absolute() else Path(raw)
        if not path.is_file():
            raise ConsortiumError(f"{where}.cert: certificate file {path} not found")
        pem = path.read_bytes()
    try:
        cert_fingerprint(pem)
    except ValueError as exc:
        raise ConsortiumError(f"{where}.cert is not a PEM certificate ({exc})") from None
    return pem


def parse_consortium(raw: Any, *, source: str = "<memory>", base: Path = Path(".")) -> Consortium:
    """Validate the parsed YAML of a consortium file (module doc)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("roles"), dict) or not raw["roles"]:
        raise ConsortiumError(f"{source}: expected a mapping with a non-empty 'roles' mapping")
    unknown = set(raw) - {"roles", "name"}
    if unknown:
        raise ConsortiumError(f"{source}: unknown top-level key(s) {sorted(unknown)} (allowed: roles, name)")
    roles: Dict[str, RoleEntry] = {}
    for name, entry in raw["roles"].items():
        where = f"{source}: roles.{name}"
        if not is_role_name(name):
            raise ConsortiumError(f"{where}: unknown role (use {ROLE_NAMES_HINT})")
        if not isinstance(entry, dict):
            raise ConsortiumError(f"{where} must be a mapping with host, port and cert")
        extra = set(entry) - {"host", "port", "cert", "fingerprint"}
        if extra:
            raise ConsortiumError(f"{where}: unknown field(s) {sorted(extra)} (allowed: host, port, cert, fingerprint)")
        host, port = entry.get("host"), entry.get("port")
        if not isinstance(host, str) or not host:
            raise ConsortiumError(f"{where}.host must be a host name or address")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise ConsortiumError(f"{where}.port must be an integer in 1..65535, got {port!r}")
        pem = _cert(entry.get("cert"), where=where, base=base)
        fp = entry.get("fingerprint")
        if fp is not None and str(fp).lower().replace(":", "") != cert_fingerprint(pem):
            raise ConsortiumError(f"{where}.fingerprint does not match its certificate "
                                  f"({cert_fingerprint(pem)}): the certificate was swapped or mistyped")
        roles[name] = RoleEntry(name=name, host=host, port=port, cert_pem=pem)
    ranks = sorted(int(_PARTY.match(n).group(1)) for n in roles if _PARTY.match(n))
    if ranks != list(range(len(ranks))):
        raise ConsortiumError(f"{source}: parties must be party-0..party-{len(ranks) - 1} without gaps; got "
                              f"{', '.join(party_role(r) for r in ranks)}")
    seen: Dict[str, str] = {}
    for n, r in roles.items():
        if r.fingerprint in seen:
            raise ConsortiumError(f"{source}: roles {seen[r.fingerprint]} and {n} pin the same certificate: "
                                  "every role makes its own key")
        seen[r.fingerprint] = n
    return Consortium(roles=roles, source=source)


def load_consortium(path: Path) -> Consortium:
    """Read and validate a consortium file."""
    if not path.is_file():
        raise ConsortiumError(f"consortium file {path} not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConsortiumError(f"{path}: not valid YAML ({exc})") from None
    return parse_consortium(raw, source=str(path), base=path.parent)


def mpc_roles(consortium: Consortium) -> Tuple[RoleEntry, ...]:
    """The MPC world in rank order: party-0..party-{n-1}, then the dealer."""
    n = consortium.parties
    if n not in (2, 3):
        raise ConsortiumError(f"{consortium.source}: the MPC needs 2 or 3 parties, the file lists {n}")
    return tuple(consortium.role(party_role(r)) for r in range(n)) + (consortium.role("dealer"),)
