"""The services with the default 128-bit parameters (he=ckks_128, HEStd_128_classic, ring 2^14).

About 20 s here (two process starts, key generation at ring 2^14), so not slow-marked.
"""

from __future__ import annotations

import time

from ks_helpers import keyservice_config, run_spec
from svc_helpers import check_reconstruction, convert, encrypt, expected, prepare_step
from ppml_hybrid.config import BlockConfig, ModelConfig, PolyConfig
from ppml_hybrid.roles.local_services import start_local_he_services

# one MPC dense block, then dense+poly and dense on the HE side; samples in slots (no rotation keys)
MODEL = ModelConfig(name="tiny_dense", in_channels=1, num_classes=2, poly=PolyConfig(a=0.1, b=0.9),
                    blocks=(BlockConfig(type="dense", out=6, activation="relu"),
                            BlockConfig(type="dense", out=4, activation="poly"),
                            BlockConfig(type="dense", out=2, activation="none")))


def test_round_trip_at_128_bit_security():
    run = run_spec(parties=2, he="ckks_128", model=MODEL, split=1, image_size=4, batch=8, max_groups=1)
    t0 = time.perf_counter()
    with start_local_he_services(run=run, keyservice=keyservice_config(share_wait_s=60.0)) as svc:
        published = svc.party_key_client(1).get_public_material()
        assert published.material.params.security_level == "HEStd_128_classic"
        assert not published.material.params.insecure and published.material.layout.slots == 8192
        step = prepare_step(svc, run)
        driver = svc.evaluator_client()
        parties = [svc.party_conversion_client(j) for j in (1, 2)]
        driver.forward(step_id=1, batch=8, weights=step.state, inputs=encrypt(step, step.ref["a"]),
                       n_features=step.head.n_inputs)
        driver.backward(step_id=1, delta_logits=encrypt(step, step.ref["dz"]), n_features=step.head.n_logits)
        for rid, name in enumerate(("logits", "delta_input")):
            n = step.head.n_logits if name == "logits" else step.head.n_inputs
            shares = convert(svc, driver, parties, step_id=1, round_id=rid, name=name, batch=8, n_features=n)
            check_reconstruction(shares, expected(step, name), name)
    print(f"ckks_128 service round trip: {time.perf_counter() - t0:.1f} s")
