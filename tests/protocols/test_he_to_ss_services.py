"""HE->SS with K and E as real processes (gRPC + mTLS on loopback): the parties' shares go
straight into CrypTen, open to E's logits, and E masks afresh each round."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parents[1]
for sub in ("he_service", "keyservice", "he_stage"):  # the service tests' helpers
    if str(TESTS / sub) not in sys.path:
        sys.path.append(str(TESTS / sub))

from conv_helpers import smpc  # noqa: E402
from ks_helpers import keyservice_config, run_spec  # noqa: E402
from svc_helpers import VALUE_BITS, convert, encrypt, prepare_step  # noqa: E402
from ppml_hybrid.he_stage.shares import conversion_error_bound  # noqa: E402
from ppml_hybrid.protocols.programs import HEToSSProgram  # noqa: E402
from ppml_hybrid.roles.local_services import start_local_he_services  # noqa: E402
from ppml_hybrid.smpc_stage.launcher import run_parties  # noqa: E402

# the conversion's error bound at the mask width the service tests use (2^(V + 32)), one more unit
TOL = conversion_error_bound(mask_bits=VALUE_BITS + 32) + 2.0 ** -16


@pytest.fixture(scope="module")
def rounds():
    run = run_spec(parties=2)
    svc = start_local_he_services(run=run, keyservice=keyservice_config(share_wait_s=30.0))
    try:
        step = prepare_step(svc, run)
        driver = svc.evaluator_client()
        driver.forward(step_id=1, batch=run.batch_capacity, weights=step.state,
                       inputs=encrypt(step, step.ref["a"]), n_features=step.head.n_inputs)
        parties = [svc.party_conversion_client(j) for j in (1, 2)]
        n_logits = step.head.n_logits
        first = convert(svc, driver, parties, step_id=1, round_id=0, name="logits", batch=run.batch_capacity,
                        n_features=n_logits)
        second = convert(svc, driver, parties, step_id=1, round_id=1, name="logits", batch=run.batch_capacity,
                         n_features=n_logits)
        yield step, first, second
    finally:
        svc.stop()


def test_logits_from_e_open_in_crypten(rounds):
    step, first, _ = rounds
    out = run_parties(smpc=smpc(2), program=HEToSSProgram(reveal=True), party_inputs=list(first))
    want = np.asarray(step.ref["logits"], dtype=np.float64)
    for x, _ in out.results:
        assert np.abs(x - want).max() <= TOL


def test_each_round_uses_a_fresh_mask(rounds):
    _, first, second = rounds
    for a, b in zip(first, second):
        assert not np.any(a == b)  # same value, different shares in every slot
