"""Three parties: K and E in their own processes, forward and backward rounds reconstruct."""

from __future__ import annotations

import pytest

from ks_helpers import keyservice_config, run_spec
from svc_helpers import check_reconstruction, convert, encrypt, expected, prepare_step
from ppml_hybrid.roles.local_services import start_local_he_services


@pytest.fixture(scope="module")
def three():
    run = run_spec(parties=3)
    svc = start_local_he_services(run=run, keyservice=keyservice_config(share_wait_s=30.0))
    yield svc, run
    svc.stop()


def test_three_party_round_trip(three):
    svc, run = three
    step = prepare_step(svc, run, seed=3)
    driver = svc.evaluator_client(name="party-2")  # any party may drive a step
    parties = [svc.party_conversion_client(j) for j in (1, 2, 3)]
    driver.forward(step_id=7, batch=run.batch_capacity, weights=step.state, inputs=encrypt(step, step.ref["a"]),
                   n_features=step.head.n_inputs)
    logits = convert(svc, driver, parties, step_id=7, round_id=0, name="logits", batch=run.batch_capacity,
                     n_features=step.head.n_logits)
    assert len(logits) == 3
    check_reconstruction(logits, expected(step, "logits"), "logits")
    driver.backward(step_id=7, delta_logits=encrypt(step, step.ref["dz"]), n_features=step.head.n_logits)
    d = convert(svc, driver, parties, step_id=7, round_id=1, name="delta_input", batch=run.batch_capacity,
                n_features=step.head.n_inputs)
    check_reconstruction(d, expected(step, "delta_input"), "delta_input")
