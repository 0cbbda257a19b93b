"""What every role checks and derives from the consortium file."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ppml_hybrid.consortium import Consortium, party_role
from ppml_hybrid.identity import IdentityError, LinkIdentity


def check_pinned(identity: LinkIdentity, consortium: Consortium, role: str) -> None:
    """This host's identity must be the certificate the consortium pins for ``role``."""
    pinned = consortium.role(role)
    if pinned.fingerprint != identity.fingerprint:
        raise IdentityError(f"this host's identity (fingerprint {identity.fingerprint[:16]}...) is not the one "
                            f"{consortium.source} pins for {role} ({pinned.fingerprint[:16]}...): wrong --identity, "
                            "or the consortium file has another certificate")


def service_registry(consortium: Consortium, *, with_evaluator: bool) -> Any:
    """Certificate fingerprint -> role for K (parties and E) or E (parties): from the consortium."""
    from ppml_hybrid.rpc.tls import EVALUATOR, PARTY, Registry, Role

    roles = {consortium.role(party_role(j)).fingerprint: Role(kind=PARTY, party=j + 1)
             for j in range(consortium.parties)}
    if with_evaluator:
        roles[consortium.role("evaluator").fingerprint] = Role(kind=EVALUATOR)
    return Registry(roles=roles)


def read_development_root(path: Path, *, timeout_s: float) -> bytes:
    """The key service's development root certificate from ``path`` (written by K's
    ``--development-root-out``), waiting up to ``timeout_s`` for K to write it."""
    from ppml_hybrid.errors import ConfigError

    deadline = time.monotonic() + timeout_s
    while not path.is_file():
        if time.monotonic() > deadline:
            raise ConfigError(f"--accept-development-attestation {path}: no such file after {timeout_s:g} s (the key "
                              "service writes its development root with --development-root-out)")
        time.sleep(0.2)
    return path.read_bytes()
