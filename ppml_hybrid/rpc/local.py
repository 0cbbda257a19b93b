"""One-machine deployment of K and E as local processes (what the orchestrator and tests call).

:func:`start_local_he_services` starts K, then E, and returns a :class:`LocalHEServices` that
hands out the launcher's clients and stops both processes. The parties' client certificates
are their own (``party_certs``: each party process made its key pair and published only the
certificate); K and E pin them by fingerprint and accept them as their own trust anchors. The
launcher makes client certificates only for E (as a client of K) and for itself; those keys
stay in this process and in the stdin pipe of the service that needs them. Without
``party_certs`` (tests of the services alone) the launcher also issues party certificates.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from ppml_hybrid.config import KeyServiceConfig
from ppml_hybrid.rpc.launch import ServiceProcess
from ppml_hybrid.rpc.tls import (
    EVALUATOR, ORCHESTRATOR, PARTY, ClientPKI, Credential, Registry, Role, fingerprint, make_client_pki,
)


def party_name(j: int) -> str:
    return f"party-{j}"


def make_local_pki(*, parties: int, with_parties: bool = True) -> ClientPKI:
    names = tuple(party_name(j) for j in range(1, parties + 1)) if with_parties else ()
    return make_client_pki(names=names + (EVALUATOR, ORCHESTRATOR))


def _party_roles(pki: ClientPKI, parties: int, party_certs: Optional[Sequence[bytes]]) -> dict:
    if party_certs is None:
        return {pki.clients[party_name(j)].fingerprint: Role(kind=PARTY, party=j) for j in range(1, parties + 1)}
    if len(party_certs) != parties:
        raise ValueError(f"{len(party_certs)} party certificates for {parties} parties")
    return {fingerprint(pem): Role(kind=PARTY, party=j) for j, pem in enumerate(party_certs, start=1)}


def client_trust_pem(*, pki: ClientPKI, party_certs: Optional[Sequence[bytes]] = None) -> bytes:
    """What K and E accept as client trust anchors: the launcher's client CA and each party's own
    self-signed certificate (the registry then pins exact fingerprints)."""
    return pki.ca.cert_pem + b"".join(party_certs or ())


def key_service_registry(*, pki: ClientPKI, parties: int, party_certs: Optional[Sequence[bytes]] = None) -> Registry:
    roles = _party_roles(pki, parties, party_certs)
    roles[pki.clients[EVALUATOR].fingerprint] = Role(kind=EVALUATOR)
    roles[pki.clients[ORCHESTRATOR].fingerprint] = Role(kind=ORCHESTRATOR)
    return Registry(roles=roles)


def evaluator_registry(*, pki: ClientPKI, parties: int, party_certs: Optional[Sequence[bytes]] = None) -> Registry:
    roles = _party_roles(pki, parties, party_certs)
    roles[pki.clients[ORCHESTRATOR].fingerprint] = Role(kind=ORCHESTRATOR)
    return Registry(roles=roles)


@dataclass
class LocalHEServices:
    pki: ClientPKI
    key_service: ServiceProcess
    evaluator: Optional[ServiceProcess]
    parties: int
    key_registry: Optional[Registry] = None  # what K attests (whom it decrypts for)

    def credential(self, name: str) -> Credential:
        return self.pki.clients[name]

    def party_key_client(self, j: int, **kw: Any):
        from ppml_hybrid.keyservice.client import PartyKeyClient
        return PartyKeyClient(address=self.key_service.address, server_trust_pem=self.key_service.trust_pem,
                              credential=self.credential(party_name(j)), **kw)

    def evaluator_key_client(self, **kw: Any):
        from ppml_hybrid.keyservice.client import EvaluatorKeyClient
        return EvaluatorKeyClient(address=self.key_service.address, server_trust_pem=self.key_service.trust_pem,
                                  credential=self.credential(EVALUATOR), **kw)

    def evaluator_client(self, name: str = ORCHESTRATOR, **kw: Any):
        from ppml_hybrid.he_stage.evaluator.client import EvaluatorClient
        return EvaluatorClient(address=self.evaluator.address, server_trust_pem=self.evaluator.trust_pem,
                               credential=self.credential(name), **kw)

    def party_mask_client(self, j: int, **kw: Any):
        from ppml_hybrid.he_stage.evaluator.client import PartyMaskClient
        return PartyMaskClient(address=self.evaluator.address, server_trust_pem=self.evaluator.trust_pem,
                               credential=self.credential(party_name(j)), **kw)

    def party_conversion_client(self, j: int):
        from ppml_hybrid.he_stage.evaluator.party import PartyConversionClient
        return PartyConversionClient(key=self.party_key_client(j), evaluator=self.party_mask_client(j))

    def stop(self) -> None:
        if self.evaluator is not None:
            self.evaluator.stop()
        self.key_service.stop()

    def __enter__(self) -> "LocalHEServices":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_local_he_services(*, run: Any, keyservice: KeyServiceConfig, with_evaluator: bool = True,
                            key_wire_log: Optional[str] = None, evaluator_wire_log: Optional[str] = None,
                            pki: Optional[ClientPKI] = None,
                            party_certs: Optional[Sequence[bytes]] = None,
                            accept_development_attestation: bool = True,
                            log_dir: Optional[str] = None) -> LocalHEServices:
    """Start K (and E) for ``run`` (a :class:`~ppml_hybrid.he_stage.runspec.HERunSpec`);
    ``party_certs``: each party's own certificate, rank order (module doc).
    ``log_dir``: K's and E's INFO logs go to ``keyservice.log`` / ``evaluator.log`` there (only
    their warnings reach the console). ``accept_development_attestation``: E accepts the development documents of the K started
    here, on this host (the launcher's own choice; tests turn it off to see E refuse)."""
    from ppml_hybrid.he_stage.evaluator.process import spawn_evaluator
    from ppml_hybrid.he_stage.evaluator.spec import EvaluatorSpec
    from ppml_hybrid.keyservice.process import spawn_key_service
    from ppml_hybrid.keyservice.spec import KeyServiceSpec

    pki = pki or make_local_pki(parties=run.parties, with_parties=party_certs is None)
    trust = client_trust_pem(pki=pki, party_certs=party_certs)
    k_registry = key_service_registry(pki=pki, parties=run.parties, party_certs=party_certs)
    k = spawn_key_service(spec=KeyServiceSpec(run=run, keyservice=keyservice, client_ca_pem=trust,
                                              registry=k_registry, wire_log=key_wire_log),
                          log_file=str(Path(log_dir) / "keyservice.log") if log_dir else None)
    e = None
    if with_evaluator:
        try:
            e = spawn_evaluator(spec=EvaluatorSpec(
                run=run, key_address=k.address, key_trust_pem=k.trust_pem, key_credential=pki.clients[EVALUATOR],
                client_ca_pem=trust, registry=evaluator_registry(pki=pki, parties=run.parties,
                                                                 party_certs=party_certs),
                share_wait_s=keyservice.share_wait_s, max_mask_rounds=keyservice.max_open_rounds,
                wire_log=evaluator_wire_log, keyservice=keyservice,
                development_root_pem=(k.ready.extra.get("development_attestation_root_pem") or "").encode(),
                key_registry=k_registry, accept_development_attestation=accept_development_attestation),
                timeout_s=keyservice.startup_timeout_s,
                log_file=str(Path(log_dir) / "evaluator.log") if log_dir else None)
        except BaseException:
            k.stop()
            raise
    return LocalHEServices(pki=pki, key_service=k, evaluator=e, parties=run.parties, key_registry=k_registry)
