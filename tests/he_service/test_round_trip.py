"""Full HE step through separate K and E processes; parties' shares reconstruct the model's values."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest

from ks_helpers import keyservice_config, run_spec
from svc_helpers import check_reconstruction, convert, encrypt, expected, prepare_step
from ppml_hybrid.he_stage.keyservice_client import PartyKeyClient
from ppml_hybrid.roles.local_services import start_local_he_services
from ppml_hybrid.rpc.errors import PermissionDeniedError
from ppml_hybrid.rpc.evaluator_errors import MaskReplayError, UnknownStepError
from ppml_hybrid.rpc.keyservice_errors import NotRegisteredError, RoundReplayError, UnknownRoundError
from ppml_hybrid.rpc.messages import RoundRef


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    wire = tmp_path_factory.mktemp("wire") / "evaluator.jsonl"
    run = run_spec(parties=2)
    svc = start_local_he_services(run=run, keyservice=keyservice_config(share_wait_s=30.0),
                                  evaluator_wire_log=str(wire))
    yield svc, run, wire
    svc.stop()


@pytest.fixture(scope="module")
def step_done(two):
    """Forward + backward of step 1 and every returned tensor converted to shares (rounds 0..5)."""
    svc, run, _ = two
    step = prepare_step(svc, run)
    driver = svc.evaluator_client()
    parties = [svc.party_conversion_client(j) for j in (1, 2)]
    fwd = driver.forward(step_id=1, batch=run.batch_capacity, weights=step.state, inputs=encrypt(step, step.ref["a"]),
                         n_features=step.head.n_inputs)
    bwd = driver.backward(step_id=1, delta_logits=encrypt(step, step.ref["dz"]), n_features=step.head.n_logits)
    sizes = {t.name: t.n_features for t in bwd.tensors}
    results = {}
    for rid, name in enumerate(sorted(sizes)):
        results[name] = convert(svc, driver, parties, step_id=1, round_id=rid, name=name, batch=run.batch_capacity,
                                n_features=sizes[name])
    return step, fwd, bwd, results, driver


def test_forward_backward_hold_every_output(step_done):
    _, fwd, bwd, _, _ = step_done
    assert set(fwd.names()) == {"logits", "pre.4", "act.4"}
    assert set(bwd.names()) == {"logits", "pre.4", "act.4", "delta_input", "delta_pre.4", "delta_post.4"}


def test_parties_shares_sum_to_the_plaintext_model_output(step_done):
    step, _, _, results, _ = step_done
    for name, shares in results.items():
        assert all(s.dtype == np.int64 for s in shares)
        check_reconstruction(shares, expected(step, name), name)


def test_shares_alone_look_random(step_done):
    step, _, _, results, _ = step_done
    s1, s2 = results["logits"]
    want = np.abs(step.ref["logits"]).max() * 2 ** 16
    assert np.abs(s1.astype(np.float64)).max() > 1e6 * want and np.abs(s2.astype(np.float64)).max() > 1e6 * want


def test_e_never_receives_a_secret_key_or_a_decryption(step_done, two):
    _, _, wire = two
    lines = [json.loads(x) for x in wire.read_text().splitlines()]
    received = [x for x in lines if x["direction"] == "in"]
    types = {x["type"] for x in received}
    allowed = {
        # requests to E's own service
        "ppml_hybrid.rpc.StepChunk", "ppml_hybrid.rpc.TensorRef", "ppml_hybrid.rpc.MaskRequest",
        "ppml_hybrid.rpc.FetchShareRequest", "ppml_hybrid.rpc.StepRef",
        # responses from K: public material, K's signed attestation document (E checks it before
        # serving) and submission receipts only
        "ppml_hybrid.rpc.PublicMaterialChunk", "ppml_hybrid.rpc.AttestationDocument", "ppml_hybrid.rpc.SubmitReceipt",
    }
    assert types <= allowed, types - allowed
    assert "ppml_hybrid.rpc.PublicMaterialChunk" in types and "ppml_hybrid.rpc.SubmitReceipt" in types
    from_k = [x for x in received if x["side"] == "client"]
    assert {x["method"] for x in from_k} == {"/ppml_hybrid.rpc.KeyService/GetPublicMaterial",
                                             "/ppml_hybrid.rpc.KeyService/Attest",
                                             "/ppml_hybrid.rpc.KeyService/DecryptAndShare"}
    for x in from_k:
        if x["type"].endswith("SubmitReceipt"):
            assert set(x["fields"]) <= {"round_id", "ciphertexts"}  # no values, no shares
        elif x["type"].endswith("PublicMaterialChunk"):
            assert x["oneof"][0] in ("header", "blob")
    # the wire format cannot carry a secret key or decryption to E: no such field in any message E may receive
    from ppml_hybrid.rpc import keyservice_pb2
    for name in ("PublicMaterialChunk", "PublicMaterialHeader", "BlobChunk", "SubmitReceipt", "AttestationDocument"):
        for f in keyservice_pb2.DESCRIPTOR.message_types_by_name[name].fields:
            assert not any(w in f.name for w in ("secret", "private", "share", "plaintext", "decrypt")), f.name
    # what E sent to K: masked ciphertexts of announced rounds only
    sent = {x["type"] for x in lines if x["direction"] == "out" and x["side"] == "client"}
    assert sent <= {"ppml_hybrid.rpc.PublicMaterialRequest", "ppml_hybrid.rpc.AttestRequest",
                    "ppml_hybrid.rpc.SubmitChunk"}


def test_each_share_goes_only_over_its_own_partys_channel(two, step_done):
    svc, run, _ = two
    step, _, _, _, driver = step_done
    # the fetch request names no party: K and E pick the share from the caller's certificate
    from ppml_hybrid.rpc import common_pb2
    assert [f.name for f in common_pb2.FetchShareRequest.DESCRIPTOR.fields] == ["round_id"]
    rnd = RoundRef(value_bits=4, round_id=6, kind="logits", shape=(run.batch_capacity, step.head.n_logits))
    p1, p2 = svc.party_key_client(1), svc.party_key_client(2)
    p1.announce(round=rnd)
    p2.announce(round=rnd)
    driver.mask_and_share(step_id=1, name="logits", round=rnd)
    # neither E nor the orchestrator can fetch K's shares; the orchestrator cannot fetch E's
    with pytest.raises(NotRegisteredError):
        PartyKeyClient(address=svc.key_service.address, server_trust_pem=svc.key_service.trust_pem,
                       credential=svc.credential("evaluator")).fetch_share(round_id=6)
    from ppml_hybrid.rpc.evaluator_client import PartyMaskClient
    orch = PartyMaskClient(address=svc.evaluator.address, server_trust_pem=svc.evaluator.trust_pem,
                           credential=svc.credential("orchestrator"))
    with pytest.raises(PermissionDeniedError):
        orch.fetch_mask_share(round_id=6)
    k1 = p1.fetch_share(round_id=6)
    with pytest.raises(RoundReplayError):  # party 1 has its share; no second copy exists for anyone
        p1.fetch_share(round_id=6)
    k2 = p2.fetch_share(round_id=6)
    assert not np.array_equal(k1.share, k2.share)
    e1 = svc.party_mask_client(1).fetch_mask_share(round_id=6)
    e2 = svc.party_mask_client(2).fetch_mask_share(round_id=6)
    check_reconstruction([k1.share, k2.share, e1.share, e2.share], step.ref["logits"], "logits again")


def test_masks_are_fresh_and_of_the_stated_size(two, step_done):
    svc, run, _ = two
    step, _, _, _, driver = step_done
    neg_r = []
    for rid in (7, 8):  # the same tensor in two rounds: two independent masks
        rnd = RoundRef(value_bits=4, round_id=rid, kind="logits", shape=(run.batch_capacity, step.head.n_logits))
        for j in (1, 2):
            svc.party_key_client(j).announce(round=rnd)
        receipt = driver.mask_and_share(step_id=1, name="logits", round=rnd)
        assert receipt.mask_bits == 4 + run.he.mask_hiding_bits == 36  # B = V + H
        e = [svc.party_mask_client(j).fetch_mask_share(round_id=rid).share for j in (1, 2)]
        k = [svc.party_key_client(j).fetch_share(round_id=rid).share for j in (1, 2)]
        check_reconstruction(k + e, step.ref["logits"], f"round {rid}")
        from ppml_hybrid.he_stage.shares import sum_shares
        neg_r.append(sum_shares(*e).astype(np.float64) / 2 ** 16)  # -R, visible here only because we hold all shares
    assert not np.array_equal(neg_r[0], neg_r[1])
    for r in neg_r:
        assert np.abs(r).max() <= 2.0 ** 36 and np.abs(r).max() > 2.0 ** 30  # |R| < 2^(V+H), not small
    with pytest.raises(MaskReplayError):  # E never masks a round twice
        driver.mask_and_share(step_id=1, name="logits", round=RoundRef(value_bits=4, round_id=7, kind="logits",
                                                                       shape=(run.batch_capacity, 2)))


def test_unannounced_conversion_is_refused_by_k_through_e(two, step_done):
    svc, run, _ = two
    _, _, _, _, driver = step_done
    with pytest.raises(UnknownRoundError) as ei:
        driver.mask_and_share(step_id=1, name="logits", round=RoundRef(value_bits=4, round_id=9, kind="logits",
                                                                       shape=(run.batch_capacity, 2)))
    assert type(ei.value).status == grpc.StatusCode.FAILED_PRECONDITION


def test_step_memory_is_bounded(two, step_done):
    svc, run, _ = two
    step, _, _, _, driver = step_done
    x = encrypt(step, step.ref["a"])
    for sid in (2, 3):  # he.max_held_steps = 2: step 1 is dropped
        driver.forward(step_id=sid, batch=run.batch_capacity, weights=step.state, inputs=x,
                       n_features=step.head.n_inputs)
    with pytest.raises(UnknownStepError):
        driver.fetch_ciphertexts(step_id=1, name="logits")
    assert len(driver.fetch_ciphertexts(step_id=3, name="logits")) == 1
    driver.release_step(step_id=3)
    with pytest.raises(UnknownStepError):
        driver.release_step(step_id=3)
