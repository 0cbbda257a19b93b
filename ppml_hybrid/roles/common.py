"""What every role checks and derives from the consortium file."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Optional

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


def check_parties(consortium: Consortium, smpc_parties: int) -> None:
    """The consortium file and the run config must agree on the number of parties."""
    from ppml_hybrid.errors import ConfigError

    if consortium.parties != smpc_parties:
        raise ConfigError(f"{consortium.source} lists {consortium.parties} parties but smpc.parties={smpc_parties}")


def when_reachable(call: Callable[[], Any], *, timeout_s: float, what: str,
                   waiting: Optional[Callable[[], None]] = None) -> Any:
    """``call()``, retried while the service it calls is not up yet (K may still be generating
    keys); ``waiting`` runs between tries. After ``timeout_s`` the UnavailableError names ``what``."""
    from ppml_hybrid.rpc.errors import UnavailableError

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except UnavailableError:
            if time.monotonic() > deadline:
                raise UnavailableError(f"{what} did not answer within {timeout_s:g} s "
                                       "(keyservice.startup_timeout_s)") from None
            if waiting is not None:
                waiting()
            time.sleep(0.5)
