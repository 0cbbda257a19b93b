"""Fixtures: K served inside the test process (real gRPC + mTLS on loopback), fresh per test."""

from __future__ import annotations

import pytest

from ks_helpers import keyservice_config, run_spec, test_pki
from ppml_hybrid.he_stage.keyservice_client import EvaluatorKeyClient, PartyKeyClient
from ppml_hybrid.keyservice.main import start_key_service
from ppml_hybrid.keyservice.spec import KeyServiceSpec
from ppml_hybrid.roles.local_services import key_service_registry, party_name
from ppml_hybrid.rpc.tls import EVALUATOR


@pytest.fixture(scope="module")
def pki():
    return test_pki(2)


class KHarness:
    def __init__(self, running, pki):
        self.running = running
        self.pki = pki
        self._clients = []

    def _make(self, cls, name):
        c = cls(address=self.running.address, server_trust_pem=self.running.trust_pem,
                credential=self.pki.clients[name], timeout_s=30.0)
        self._clients.append(c)
        return c

    def party(self, j: int, name=None) -> PartyKeyClient:
        return self._make(PartyKeyClient, name or party_name(j))

    def evaluator(self, name=EVALUATOR) -> EvaluatorKeyClient:
        return self._make(EvaluatorKeyClient, name)

    def close(self):
        for c in self._clients:
            c.close()
        self.running.stop()


@pytest.fixture
def k(pki):
    spec = KeyServiceSpec(run=run_spec(parties=2), keyservice=keyservice_config(), client_ca_pem=pki.ca.cert_pem,
                          registry=key_service_registry(pki=pki, parties=2))
    h = KHarness(start_key_service(spec=spec), pki)
    yield h
    h.close()


@pytest.fixture
def published(k):
    return k.party(1).get_public_material()
