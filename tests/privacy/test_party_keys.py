"""The parties' keys for K and E are their own, and a party encrypts only under the key it verified.

Threat: the coordinator (the launcher on one machine) is not trusted with any party's key. If it
held a party's client key it could call K as that party and collect the party's shares; if it
could hand the parties a public key of its own in the step program, it could decrypt what they
encrypt. Attacks, on the real code path:

1. the launcher issues itself a certificate named ``party-1`` under its own client CA (which K
   trusts for E's and the launcher's certificates) and calls K with it: refused, because K pins
   each party's own certificate by fingerprint;
2. the launcher sends the parties a step whose public key is not the one they verified: every
   party refuses before encrypting anything.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ppml_hybrid.config import parse_run_config
from ppml_hybrid.model import build_model
from ppml_hybrid.protocols.hybrid_train_step import HybridPartyInputs, VerifyKeyService
from ppml_hybrid.protocols.step_common import PartyRows
from ppml_hybrid.roles.local_services import step_factory
from ppml_hybrid.rpc.errors import PermissionDeniedError
from ppml_hybrid.rpc.tls import _issue, fingerprint
from ppml_hybrid.smpc_stage.errors import PartyCrashedError
from ppml_hybrid.smpc_stage.launcher import PartySession
from ppml_hybrid.training.plan import plan_run

CONF = Path(__file__).resolve().parents[2] / "conf"
IMAGE, ROWS = 8, 4


def _cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        raw = compose(config_name="train", overrides=["train.progress=false", f"data.image_size={IMAGE}",
                                                       "mode=hybrid", "he=insecure_test", "split_layer=3", *overrides])
    return parse_run_config(OmegaConf.to_container(raw, resolve=True))


@pytest.fixture
def running():
    """Party session first (each party makes its own key), then K and E pinning those keys
    (one per test: an attack that works stops the session)."""
    import contextlib


    cfg = _cfg("dp.noise_multiplier=1.0", f"train.batch_size={2 * ROWS}", "train.max_steps=2")
    g = torch.Generator().manual_seed(3)
    rows = [PartyRows(images=torch.randn(ROWS, 1, IMAGE, IMAGE, generator=g), labels=torch.tensor([0, 1, 0, 1]))
            for _ in range(2)]
    import ppml_hybrid.roles.local_services as local

    started = []
    start = local.start_local_he_services

    def recording_start(**kw):  # the real launcher; the test keeps a handle on what it holds
        started.append(start(**kw))
        return started[-1]

    with contextlib.ExitStack() as stack, pytest.MonkeyPatch.context() as mp:
        mp.setattr(local, "start_local_he_services", recording_start)
        session = stack.enter_context(PartySession(smpc=cfg.smpc, party_inputs=[HybridPartyInputs(rows=r) for r in rows]))
        make = step_factory(cfg, stack, session, plan_run(cfg, train_rows=(ROWS, ROWS)))
        yield cfg, session, make, started[0]


def test_the_launcher_holds_no_party_key_and_cannot_call_k_as_a_party(running):
    cfg, session, make, svc = running
    program = make(0, {k: v.detach().clone() for k, v in build_model(cfg.model, image_size=IMAGE, seed=0,
                                                                       split_clip=(3, cfg.he.split_norm_bound))
                       .state_dict().items()})
    from ppml_hybrid.he_stage.keyservice_client import PartyKeyClient
    from ppml_hybrid.roles.local_services import party_name

    # what the launcher holds: credentials for E and itself only
    svc_pki = svc.pki
    assert not any(name.startswith("party-") for name in svc_pki.clients)
    pinned = {fingerprint(pem) for pem in session.party_certificates()}
    assert len(pinned) == 2
    # the attack: a certificate named party-1 under the launcher's own client CA, which K trusts
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    ca_key = serialization.load_pem_private_key(svc_pki.ca.key_pem, password=None)
    ca_cert = x509.load_pem_x509_certificate(svc_pki.ca.cert_pem)
    forged = _issue(ca_key, ca_cert, party_name(1))
    assert forged.fingerprint not in pinned
    client = PartyKeyClient(address=program.endpoints.key_address, server_trust_pem=program.endpoints.key_trust_pem,
                            credential=forged)
    with pytest.raises(PermissionDeniedError):
        client.get_public_material()
    client.close()


def test_a_step_under_a_key_the_parties_did_not_verify_is_refused(running):
    cfg, session, make, _ = running
    state = {k: v.detach().clone() for k, v in build_model(cfg.model, image_size=IMAGE, seed=0,
                                                             split_clip=(3, cfg.he.split_norm_bound))
             .state_dict().items()}
    honest = make(0, state)
    pk = honest.material.public_key
    swapped = dataclasses.replace(honest.material, public_key=pk[:-1] + bytes([pk[-1] ^ 1]))
    with pytest.raises(PartyCrashedError, match="has not verified"):
        session.run(dataclasses.replace(honest, material=swapped))



def test_a_key_service_that_registers_someone_else_as_a_party_is_refused_by_the_parties(running):
    """The launcher (or whoever writes K's spec) starts a K that registers a certificate of its
    own as party 2. K attests that registry faithfully, so attestation alone would pass; each
    party compares the registry with the MPC roster it authenticated and refuses K."""
    import contextlib

    from ppml_hybrid.he_stage.runspec import HERunSpec
    from ppml_hybrid.identity import make_link_identity
    from ppml_hybrid.protocols.hybrid_train_step import ServiceEndpoints
    from ppml_hybrid.roles.local_services import start_local_he_services

    cfg, session, make, svc = running
    honest = session.party_certificates()
    mallory = make_link_identity("party-2 (not really)").cert_pem
    run = HERunSpec(he=dataclasses.replace(cfg.he, mask_hiding_bits=38), model=cfg.model,
                    split_layer=cfg.split_layer, image_size=IMAGE, parties=2, batch_capacity=64)
    with contextlib.ExitStack() as stack:
        evil = stack.enter_context(start_local_he_services(run=run, keyservice=cfg.keyservice, with_evaluator=False,
                                                           party_certs=[honest[0], mallory]))
        endpoints = ServiceEndpoints(key_address=evil.key_service.address, key_trust_pem=evil.key_service.trust_pem,
                                     evaluator_address="unused:0", evaluator_trust_pem=b"")
        root = evil.key_service.ready.extra.get("development_attestation_root_pem") or ""
        with pytest.raises(PartyCrashedError, match="RegistryError: party .: K's role registry"):
            session.run(VerifyKeyService(endpoints=endpoints, keyservice=cfg.keyservice, registry=evil.key_registry,
                                         development_root_pem=root.encode() or None, accept_development=True))
