"""One-machine deployment of K and E as local processes (what the orchestrator and tests call).

:func:`start_local_he_services` starts K, then E, and returns a :class:`LocalHEServices` that
hands out the launcher's clients and stops both processes. The parties' client certificates
are their own (``party_certs``: each party process made its key pair and published only the
certificate); K and E pin them by fingerprint and accept them as their own trust anchors. The
launcher makes client certificates only for E (as a client of K) and for itself; those keys
stay in this process and in the stdin pipe of the service that needs them. Without
``party_certs`` (tests of the services alone) the launcher also issues party certificates.

:func:`step_factory` builds the per-step party programs of an in-process
:class:`~ppml_hybrid.smpc_stage.launcher.PartySession` (protocol tests and benchmarks), starting
K and E here when the run needs them.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from ppml_hybrid.config import KeyServiceConfig, RunConfig
from ppml_hybrid.rpc.launch import ServiceProcess
from ppml_hybrid.rpc.tls import (
    EVALUATOR, ORCHESTRATOR, PARTY, ClientPKI, Credential, Registry, Role, fingerprint, make_client_pki,
)

if TYPE_CHECKING:  # imported where used: the launcher of K and E alone stays free of torch
    from ppml_hybrid.smpc_stage.launcher import PartySession
    from ppml_hybrid.training.plan import RunPlan


log = logging.getLogger(__name__)


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
        from ppml_hybrid.he_stage.keyservice_client import PartyKeyClient
        return PartyKeyClient(address=self.key_service.address, server_trust_pem=self.key_service.trust_pem,
                              credential=self.credential(party_name(j)), **kw)

    def evaluator_key_client(self, **kw: Any):
        from ppml_hybrid.he_stage.keyservice_client import EvaluatorKeyClient
        return EvaluatorKeyClient(address=self.key_service.address, server_trust_pem=self.key_service.trust_pem,
                                  credential=self.credential(EVALUATOR), **kw)

    def evaluator_client(self, name: str = ORCHESTRATOR, **kw: Any):
        from ppml_hybrid.rpc.evaluator_client import EvaluatorClient
        return EvaluatorClient(address=self.evaluator.address, server_trust_pem=self.evaluator.trust_pem,
                               credential=self.credential(name), **kw)

    def party_mask_client(self, j: int, **kw: Any):
        from ppml_hybrid.rpc.evaluator_client import PartyMaskClient
        return PartyMaskClient(address=self.evaluator.address, server_trust_pem=self.evaluator.trust_pem,
                               credential=self.credential(party_name(j)), **kw)

    def party_conversion_client(self, j: int):
        from ppml_hybrid.protocols.conversion_client import PartyConversionClient
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


def step_factory(cfg: RunConfig, stack: contextlib.ExitStack, session: PartySession, plan: RunPlan) -> Any:
    """The per-step party program of an in-process session (module doc); when blocks run
    under HE, starts K and E on this machine (pinning each party's own certificate) and has every
    party verify K's attestation itself (also all-MPC when K draws the DP noise: K alone)."""
    from ppml_hybrid.training.plan import (
        HybridContext, is_all_mpc, key_service_run_spec, needs_key_service, step_program,
    )

    if not needs_key_service(cfg):
        return lambda step, state: step_program(cfg, plan, step=step, state=state)
    from ppml_hybrid.protocols.hybrid_train_step import ServiceEndpoints
    from ppml_hybrid.protocols.key_access import KeyEndpoint

    run, hybrid_mode = key_service_run_spec(cfg), not is_all_mpc(cfg)
    log.info("starting the key service%s ...", " and the HE evaluator (%s, batch capacity %d, HE->SS masks with %d "
             "bits of hiding per slot)" % (cfg.he.name, run.batch_capacity, run.he.mask_hiding_bits)
             if hybrid_mode else " (it draws the DP noise)")
    svc = stack.enter_context(start_local_he_services(
        run=run, keyservice=cfg.keyservice, party_certs=session.party_certificates(), with_evaluator=hybrid_mode,
        accept_development_attestation=cfg.keyservice.attestation == "development", log_dir=cfg.output_dir))
    endpoints = ServiceEndpoints(key_address=svc.key_service.address, key_trust_pem=svc.key_service.trust_pem,
                                 evaluator_address=svc.evaluator.address if hybrid_mode else "",
                                 evaluator_trust_pem=svc.evaluator.trust_pem if hybrid_mode else b"")
    material = _verified_at_every_party(cfg, svc, session, endpoints)
    key = KeyEndpoint(address=endpoints.key_address, trust_pem=endpoints.key_trust_pem)
    hybrid = HybridContext(endpoints=endpoints, material=material, spec=run) if hybrid_mode else None
    return lambda step, state: step_program(cfg, plan, step=step, state=state, hybrid=hybrid, key_service=key)


def _verified_at_every_party(cfg: RunConfig, svc: Any, session: PartySession, endpoints: Any) -> Any:
    """Every party checks K's attestation in its own process, over its own channel (fresh
    nonce; code identity, the material it received, the decryption policy and the TLS channel)
    before anything is sent; returns the encryption part of the material they all verified."""
    from ppml_hybrid.protocols.errors import KeyServiceNotVerifiedError
    from ppml_hybrid.protocols.hybrid_train_step import VerifyKeyService

    # This launcher started K itself, on this host: it alone may accept that K's development
    # documents (with the root K reported), and says so; no shared config key can.
    root = svc.key_service.ready.extra.get("development_attestation_root_pem") or None
    # (each client's verifier warns when it accepts a development document)
    run = session.run(VerifyKeyService(endpoints=endpoints, keyservice=cfg.keyservice, registry=svc.key_registry,
                                       development_root_pem=root.encode() if root else None,
                                       accept_development=cfg.keyservice.attestation == "development"))
    digests = {digest for digest, _, _ in run.results}
    if len(digests) != 1:
        raise KeyServiceNotVerifiedError("the key service gave the parties different public material: stopped")
    material = run.results[0][2]
    development = any(dev for _, dev, _ in run.results)
    log.info("every party verified the key service's attestation itself%s",
             " (DEVELOPMENT signer, accepted for the launcher's own K)" if development else "")
    return material
