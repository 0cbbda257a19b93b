"""K in this process: Attest(nonce) returns a development document a party verifies end to end."""

from __future__ import annotations

import dataclasses

import pytest

from ks_helpers import keyservice_config, run_spec, test_pki
from ppml_hybrid.he_stage.keyservice_client import EvaluatorKeyClient, PartyKeyClient
from ppml_hybrid.keyservice.main import start_key_service
from ppml_hybrid.keyservice.spec import KeyServiceSpec
from ppml_hybrid.roles.local_services import key_service_registry, party_name
from ppml_hybrid.rpc.attestation import AttestationError
from ppml_hybrid.rpc.errors import InvalidArgumentError
from ppml_hybrid.rpc.keyservice_verify import check_key_service, policy_from_config
from ppml_hybrid.rpc.tls import EVALUATOR, PARTY, Registry, RegistryError, Role, self_signed_server


@pytest.fixture(scope="module")
def k():
    pki = test_pki(2)
    ks = keyservice_config()
    registry = key_service_registry(pki=pki, parties=2)
    spec = KeyServiceSpec(run=run_spec(parties=2), keyservice=ks, client_ca_pem=pki.ca.cert_pem, registry=registry)
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
    pol = policy_from_config(keyservice=ks, development_root_pem=running.attestation_root_pem, accept_development=True)
    payload = check_key_service(client=client, published=published, keyservice=ks, policy=pol,
                                tls_trust_pem=running.trust_pem, registry=running.registry)
    assert payload.development


def test_refused_without_development_opt_in(k):
    running, ks, clients = k
    published = clients[0].get_public_material()
    with pytest.raises(AttestationError):  # this host did not choose to accept development documents
        check_key_service(client=clients[0], published=published, keyservice=ks,
                          policy=policy_from_config(keyservice=ks, development_root_pem=running.attestation_root_pem),
                          tls_trust_pem=running.trust_pem, registry=running.registry)


def test_refused_for_other_material_policy_or_channel(k):
    running, ks, clients = k
    published = clients[0].get_public_material()
    pol = policy_from_config(keyservice=ks, development_root_pem=running.attestation_root_pem, accept_development=True)
    other_material = dataclasses.replace(published, material=dataclasses.replace(
        published.material, rotation_keys=published.material.rotation_keys + b"\x00"))
    other_policy = dataclasses.replace(ks, round_quota=ks.round_quota + 1)
    other_tls = self_signed_server(common_name="someone else").trust_pem
    reg = running.registry
    for kw in (dict(published=other_material, keyservice=ks, tls_trust_pem=running.trust_pem, registry=reg),
               dict(published=published, keyservice=other_policy, tls_trust_pem=running.trust_pem, registry=reg),
               dict(published=published, keyservice=ks, tls_trust_pem=other_tls, registry=reg)):
        with pytest.raises(AttestationError):
            check_key_service(client=clients[0], policy=pol, **kw)


def test_wrong_expected_pcr_from_config(k):
    running, ks, clients = k
    bad = dataclasses.replace(ks, expected_pcrs=("0:" + "ab" * 48,))
    published = clients[0].get_public_material()
    with pytest.raises(AttestationError):
        check_key_service(client=clients[0], published=published, keyservice=bad,
                          policy=policy_from_config(keyservice=bad, development_root_pem=running.attestation_root_pem,
                                                    accept_development=True),
                          tls_trust_pem=running.trust_pem, registry=running.registry)


def test_empty_nonce_is_invalid(k):
    with pytest.raises(InvalidArgumentError):
        k[2][0].attest(nonce=b"")


def test_refused_when_k_serves_another_role_registry(k):
    """The untrusted host that writes K's spec registers its own certificate as party 1: K's
    attestation binds the registry it really serves, so a client expecting the consortium's
    refuses K."""
    running, ks, clients = k
    published = clients[0].get_public_material()
    pol = policy_from_config(keyservice=ks, development_root_pem=running.attestation_root_pem, accept_development=True)
    roles = dict(running.registry.roles)
    party1 = next(fp for fp, r in roles.items() if r == Role(kind=PARTY, party=1))
    roles["ab" * 32] = roles.pop(party1)  # what the client expects differs from what K serves
    with pytest.raises(AttestationError):
        check_key_service(client=clients[0], published=published, keyservice=ks, policy=pol,
                          tls_trust_pem=running.trust_pem, registry=Registry(roles=roles))


@pytest.mark.parametrize("case", ["twice", "out_of_range", "missing", "two_evaluators"])
def test_k_refuses_to_start_with_an_inconsistent_registry(case):
    pki = test_pki(2)
    roles = dict(key_service_registry(pki=pki, parties=2).roles)
    if case == "twice":
        roles["cd" * 32] = Role(kind=PARTY, party=1)
    elif case == "out_of_range":
        roles["cd" * 32] = Role(kind=PARTY, party=3)
    elif case == "missing":
        roles.pop(next(fp for fp, r in roles.items() if r == Role(kind=PARTY, party=2)))
    else:
        roles["cd" * 32] = Role(kind=EVALUATOR)
    spec = KeyServiceSpec(run=run_spec(parties=2), keyservice=keyservice_config(), client_ca_pem=pki.ca.cert_pem,
                          registry=Registry(roles=roles))
    with pytest.raises(RegistryError):
        start_key_service(spec=spec)
