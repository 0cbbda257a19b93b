"""One-machine deployment of K and E as local processes (what the orchestrator and tests call).

:func:`start_local_he_services` makes the client PKI (one certificate per party, for E as a
client of K, and for the orchestrator), starts K, then E, and returns a
:class:`LocalHEServices` that hands out each role's clients and stops both processes.
Client private keys stay in this process and in the stdin pipe of the service that needs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ppml_hybrid.config import KeyServiceConfig
from ppml_hybrid.rpc.launch import ServiceProcess
from ppml_hybrid.rpc.tls import EVALUATOR, ORCHESTRATOR, PARTY, ClientPKI, Credential, Registry, Role, make_client_pki


def party_name(j: int) -> str:
    return f"party-{j}"


def make_local_pki(*, parties: int) -> ClientPKI:
    return make_client_pki(names=tuple(party_name(j) for j in range(1, parties + 1)) + (EVALUATOR, ORCHESTRATOR))


def key_service_registry(*, pki: ClientPKI, parties: int) -> Registry:
    roles = {pki.clients[party_name(j)].fingerprint: Role(kind=PARTY, party=j) for j in range(1, parties + 1)}
    roles[pki.clients[EVALUATOR].fingerprint] = Role(kind=EVALUATOR)
    roles[pki.clients[ORCHESTRATOR].fingerprint] = Role(kind=ORCHESTRATOR)
    return Registry(roles=roles)


def evaluator_registry(*, pki: ClientPKI, parties: int) -> Registry:
    roles = {pki.clients[party_name(j)].fingerprint: Role(kind=PARTY, party=j) for j in range(1, parties + 1)}
    roles[pki.clients[ORCHESTRATOR].fingerprint] = Role(kind=ORCHESTRATOR)
    return Registry(roles=roles)


@dataclass
class LocalHEServices:
    pki: ClientPKI
    key_service: ServiceProcess
    evaluator: Optional[ServiceProcess]
    parties: int

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
                            pki: Optional[ClientPKI] = None) -> LocalHEServices:
    """Start K (and E) for ``run`` (a :class:`~ppml_hybrid.he_stage.runspec.HERunSpec`)."""
    from ppml_hybrid.he_stage.evaluator.process import spawn_evaluator
    from ppml_hybrid.he_stage.evaluator.spec import EvaluatorSpec
    from ppml_hybrid.keyservice.process import spawn_key_service
    from ppml_hybrid.keyservice.spec import KeyServiceSpec

    pki = pki or make_local_pki(parties=run.parties)
    k = spawn_key_service(spec=KeyServiceSpec(run=run, keyservice=keyservice, client_ca_pem=pki.ca.cert_pem,
                                              registry=key_service_registry(pki=pki, parties=run.parties),
                                              wire_log=key_wire_log))
    e = None
    if with_evaluator:
        try:
            e = spawn_evaluator(spec=EvaluatorSpec(
                run=run, key_address=k.address, key_trust_pem=k.trust_pem, key_credential=pki.clients[EVALUATOR],
                client_ca_pem=pki.ca.cert_pem, registry=evaluator_registry(pki=pki, parties=run.parties),
                share_wait_s=keyservice.share_wait_s, max_mask_rounds=keyservice.max_open_rounds,
                wire_log=evaluator_wire_log, keyservice=keyservice,
                development_root_pem=(k.ready.extra.get("development_attestation_root_pem") or "").encode()),
                timeout_s=keyservice.startup_timeout_s)
        except BaseException:
            k.stop()
            raise
    return LocalHEServices(pki=pki, key_service=k, evaluator=e, parties=run.parties)
