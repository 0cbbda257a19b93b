"""K in this process: Attest(nonce) returns a development document a party verifies end to end."""

from __future__ import annotations

import dataclasses

import pytest

from ks_helpers import keyservice_config, run_spec, test_pki
from ppml_hybrid.keyservice.attestation import AttestationError
from ppml_hybrid.keyservice.client import EvaluatorKeyClient, PartyKeyClient
from ppml_hybrid.keyservice.main import start_key_service
from ppml_hybrid.keyservice.spec import KeyServiceSpec
from ppml_hybrid.keyservice.verify import check_key_service, policy_from_config
from ppml_hybrid.rpc.errors import InvalidArgumentError
from ppml_hybrid.rpc.local import key_service_registry, party_name
from ppml_hybrid.rpc.tls import EVALUATOR, self_signed_server


@pytest.fixture(scope="module")
def k():
    pki = test_pki(2)
    ks = keyservice_config(allow_development_attestation=True)
    spec = KeyServiceSpec(run=run_spec(parties=2), keyservice=ks, client_ca_pem=pki.ca.cert_pem,
                          registry=key_service_registry(pki=pki, parties=2))
    running = start_key_service(spec=spec)
    clients = [PartyKeyClient(address=running.address, server_trust_pem=running.trust_pem,
                              credential=pki.clients[party_name(1)], timeout_s=30.0),
               EvaluatorKeyClient(address=running.address, server_trust_pem=running.trust_pem,
                                  credential=pki.clients[EVALUATOR], timeout_s=30.0)]
    yield running, ks, clients
    for c in clients:
        c.close()
    running.stop()


@pytest.mark.parametrize("who", [0, 1])
def test_party_and_evaluator_verify_k(k, who):
    running, ks, clients = k
    client = clients[who]
    published = client.get_public_material()
    pol = policy_from_config(keyservice=ks, development_root_pem=running.attestation_root_pem)
    payload = check_key_service(client=client, published=published, keyservice=ks, policy=pol,
                                tls_trust_pem=running.trust_pem)
    assert payload.development


def test_refused_without_development_opt_in(k):
    running, ks, clients = k
    strict = dataclasses.replace(ks, allow_development_attestation=False)
    published = clients[0].get_public_material()
    with pytest.raises(AttestationError):
        check_key_service(client=clients[0], published=published, keyservice=strict,
                          policy=policy_from_config(keyservice=strict, development_root_pem=running.attestation_root_pem),
                          tls_trust_pem=running.trust_pem)


def test_refused_for_other_material_policy_or_channel(k):
    running, ks, clients = k
    published = clients[0].get_public_material()
    pol = policy_from_config(keyservice=ks, development_root_pem=running.attestation_root_pem)
    other_material = dataclasses.replace(published, material=dataclasses.replace(
        published.material, rotation_keys=published.material.rotation_keys + b"\x00"))
    other_policy = dataclasses.replace(ks, round_quota=ks.round_quota + 1)
    other_tls = self_signed_server(common_name="someone else").trust_pem
    for kw in (dict(published=other_material, keyservice=ks, tls_trust_pem=running.trust_pem),
               dict(published=published, keyservice=other_policy, tls_trust_pem=running.trust_pem),
               dict(published=published, keyservice=ks, tls_trust_pem=other_tls)):
        with pytest.raises(AttestationError):
            check_key_service(client=clients[0], policy=pol, **kw)


def test_wrong_expected_pcr_from_config(k):
    running, ks, clients = k
    bad = dataclasses.replace(ks, expected_pcrs=("0:" + "ab" * 48,))
    published = clients[0].get_public_material()
    with pytest.raises(AttestationError):
        check_key_service(client=clients[0], published=published, keyservice=bad,
                          policy=policy_from_config(keyservice=bad, development_root_pem=running.attestation_root_pem),
                          tls_trust_pem=running.trust_pem)


def test_empty_nonce_is_invalid(k):
    with pytest.raises(InvalidArgumentError):
        k[2][0].attest(nonce=b"")
