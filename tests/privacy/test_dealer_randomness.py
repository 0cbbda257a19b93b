"""Finding 1 of the privacy review, as regression tests: party 1 recovers party 0's secret from
one Beaver opening by predicting party 0's triple stream (see ``dealer_attacks``).

Each attack runs twice in real party processes (2 parties + dealer): against CrypTen's own TTP
randomness (``hazmat_crypten_ttp=True``, the behaviour before the fix) it must recover the
secret to fixed-point precision, and against the project's dealer (AES-CTR streams keyed by
X25519 agreements from each process's ``os.urandom``) it must fail.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dealer_attacks import SeedPrediction, TwisterRecovery
from ppml_hybrid.config import SMPCConfig
from ppml_hybrid.smpc_stage.launcher import run_parties

SECRET = torch.tensor([3.1415, -2.7182, 0.5772, 1.4142, 42.0, -7.25, 0.001, 123.456])


def _attack(program, *, old: bool) -> np.ndarray:
    smpc = SMPCConfig(parties=2, master_port=0, timeout_s=60.0)
    run = run_parties(smpc=smpc, program=program, party_inputs=[SECRET, None], hazmat_crypten_ttp=old)
    return np.asarray(run.results[1])


@pytest.mark.parametrize("attack", [SeedPrediction(n=len(SECRET)), TwisterRecovery(n=len(SECRET))],
                         ids=["seed-prediction", "twister-state-recovery"])
def test_attack_recovers_the_secret_from_crypten_ttp_randomness(attack):
    recovered = _attack(attack, old=True)
    np.testing.assert_allclose(recovered, SECRET.numpy(), atol=1e-4)


@pytest.mark.parametrize("attack", [SeedPrediction(n=len(SECRET)), TwisterRecovery(n=len(SECRET))],
                         ids=["seed-prediction", "twister-state-recovery"])
def test_attack_fails_against_the_dealer_streams(attack):
    recovered = _attack(attack, old=False)
    # A guess of a_0 that is off by a uniform ring element leaves a uniform ring element: the
    # reconstruction is nowhere near the secret (|error| of order 2^47 per value).
    assert np.all(np.abs(recovered - SECRET.numpy()) > 1.0)
