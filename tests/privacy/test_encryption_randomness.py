"""Each party process encrypts with randomness of its own (OpenFHE's PRNG seeds itself in the
process at first use; the fork server never touches it): two parties encrypting the same values
under the same public key produce different ciphertexts, and so does one party encrypting twice.
A shared encryption randomness would let a peer strip the encryption of another party's share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ks_helpers import run_spec
from ppml_hybrid.config import SMPCConfig
from ppml_hybrid.keyservice.hazmat import KeyVault
from ppml_hybrid.smpc_stage.launcher import run_parties


@dataclass(frozen=True)
class EncryptTwice:
    material: Any

    def __call__(self, ctx: Any, _inputs: Any) -> list:
        from ppml_hybrid.he_stage.codec import encrypt_batch
        from ppml_hybrid.he_stage.keys import load_public_material, serialize_ciphertext

        keys = load_public_material(material=self.material)
        values = np.full((4, 2), 1.5)
        return [serialize_ciphertext(encrypt_batch(cc=keys.cc, public_key=keys.public_key, layout=keys.layout,
                                                   values=values).cts[0]) for _ in range(2)]


def test_party_processes_encrypt_with_their_own_randomness():
    vault = KeyVault(spec=run_spec(parties=2, batch=4))
    run = run_parties(smpc=SMPCConfig(parties=2, master_port=0, timeout_s=60.0), program=EncryptTwice(vault.public),
                      party_inputs=[None, None])
    cts = [ct for result in run.results for ct in result]
    assert len(set(cts)) == 4
