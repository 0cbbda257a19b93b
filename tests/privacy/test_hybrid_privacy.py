"""Privacy of the hybrid training step (design section 3; issue 11), he=insecure_test.

A module fixture serves K and E from this process (real servicers, real gRPC + mTLS, wire logs
of message types and field names only) and keeps one party session; each run is two full hybrid
DP steps (relu_cnn, split 3, 2 parties, 8x8 images, the whole rows as the batch so both steps
have the same public shape): party 0's rows are all zeros in step "A" and all 3.0 in step "B";
party 1's rows and every label are fixed. ``hybrid_harness`` records every role's view.

1. The wire logs of the clean run: E never receives a decryption or a share; K receives only
   announcements, masked submissions and fetches (tests below).
2. The checks of ``privacy_checks`` all pass on the clean run.
3. The planted-leak suite: each plant changes the real protocol code where it runs (E's masking
   and K in this process; the parties' DP step and bounds inside the party processes) and must be
   caught by the check named in ``CAUGHT_BY`` (docs/privacy.md lists them); a plant no check
   catches fails its test.

Not checkable here: K's secret key never leaves K's process; the test reads K's plaintexts from
inside K (a recording wrapper around its fixed-point encoder) as the curious K would see them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from hybrid_harness import (
    PARTY_PLANTS, SERVICE_PLANTS, RecordingHybridSteps, RecordingInputs, ServiceViews, start_services,
)
from privacy_checks import CHECKS, rebuild
from ppml_hybrid.config import parse_run_config
from ppml_hybrid.model import build_model
from ppml_hybrid.protocols.dp_step import DPStepParams
from ppml_hybrid.protocols.step_common import PartyRows

CONF = Path(__file__).resolve().parents[2] / "conf"
IMAGE = 8
ROWS = 4  # per party
HIDING_BITS = 32
CAUGHT_BY = {
    "mask_reused_across_steps": "masks_fresh",
    "mask_on_coarse_grid": "masks_finer_than_the_grid",
    "unnoised_sums_opened": "transcript_independent_of_the_batch",
    "clip_factors_opened": "transcript_independent_of_the_batch",
    "noise_from_seeded_prng": "noise_fresh_and_private",
    "k_gets_values_beyond_the_mask_bound": "k_sees_only_masked_values",
}


def _cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        raw = compose(config_name="train", overrides=["train.progress=false", f"data.image_size={IMAGE}", *overrides])
    return parse_run_config(OmegaConf.to_container(raw, resolve=True))


class _Suite:
    """Services, one party session, and the step program; :meth:`run` does one recorded run."""

    def __init__(self, tmp: Path) -> None:
        from ppml_hybrid.he_stage.runspec import HERunSpec
        from ppml_hybrid.protocols.hybrid_train_step import HybridTrainStep, ServiceEndpoints, VerifyKeyService
        from ppml_hybrid.protocols.params import ConversionParams
        from ppml_hybrid.roles.local_services import party_name
        from ppml_hybrid.smpc_stage.launcher import PartySession

        cfg = _cfg("mode=hybrid", "he=insecure_test", "split_layer=3", "dp.noise_multiplier=1.0",
                   "dp.max_grad_norm=1.0", f"he.mask_hiding_bits={HIDING_BITS}")
        self.e_log, self.k_log = tmp / "evaluator.jsonl", tmp / "key.jsonl"
        n = 2 * ROWS
        capacity = int(n + 6 * math.sqrt(n) + 8)
        run = HERunSpec(he=cfg.he, model=cfg.model, split_layer=cfg.split_layer, image_size=IMAGE,
                        parties=cfg.smpc.parties, batch_capacity=capacity)
        self.svc = start_services(run=run, keyservice=cfg.keyservice, e_log=str(self.e_log), k_log=str(self.k_log))
        state = {k: v.detach().clone() for k, v in build_model(cfg.model, image_size=IMAGE, seed=cfg.seed)
                 .state_dict().items()}
        material = self.svc.party_key_client(1).get_public_material().material
        self.step = HybridTrainStep(
            model=cfg.model, state_dict=state, image_size=IMAGE, split_layer=cfg.split_layer, sample_rate=1.0,
            batch_capacity=capacity, dp=DPStepParams(max_grad_norm=1.0, noise_multiplier=1.0, parties=2),
            material=material, conversion=ConversionParams(parties=2, scale_bits=cfg.he.scale_bits),
            endpoints=ServiceEndpoints(key_address=self.svc.key_service.address,
                                       key_trust_pem=self.svc.key_service.trust_pem,
                                       evaluator_address=self.svc.evaluator.address,
                                       evaluator_trust_pem=self.svc.evaluator.trust_pem),
            step_id=1, first_round=0, hiding_bits=HIDING_BITS, max_mask_bits=cfg.he.max_mask_bits,
            split_norm_bound=cfg.he.split_norm_bound,
            delta_conversion=ConversionParams(parties=2, scale_bits=cfg.he.scale_bits,
                                              integer_bits=cfg.he.delta_clamp_bits))
        g = torch.Generator().manual_seed(7)
        own = PartyRows(images=torch.randn(ROWS, 1, IMAGE, IMAGE, generator=g), labels=torch.tensor([0, 1, 0, 1]))
        labels0 = torch.tensor([1, 0, 1, 0])
        batches0 = (("A", PartyRows(images=torch.zeros(ROWS, 1, IMAGE, IMAGE), labels=labels0)),
                    ("B", PartyRows(images=torch.full((ROWS, 1, IMAGE, IMAGE), 3.0), labels=labels0)))
        inputs = [RecordingInputs(credential=self.svc.credential(party_name(1)), batches=batches0),
                  RecordingInputs(credential=self.svc.credential(party_name(2)),
                                  batches=tuple((label, own) for label, _ in batches0))]
        self.session = PartySession(smpc=cfg.smpc, party_inputs=inputs).__enter__()
        # every party verifies K itself before any step (the steps refuse an unverified key)
        root = self.svc.key_service.attestation_root_pem
        self.session.run(VerifyKeyService(endpoints=self.step.endpoints, keyservice=cfg.keyservice,
                                          registry=self.svc.key_registry, development_root_pem=root or None,
                                          accept_development=True))
        self.runs = 0

    def run(self, plant: str | None = None) -> dict:
        views = ServiceViews()
        # the first run's logs include the services' start (E checking K's attestation)
        log_start = [len(p.read_text().splitlines()) if p.exists() and self.runs else 0
                     for p in (self.e_log, self.k_log)]
        with pytest.MonkeyPatch.context() as mp:
            if plant in SERVICE_PLANTS:
                SERVICE_PLANTS[plant](mp)
            views.install(mp)  # on top of a plant: it records what E really used
            per_run = 2 * self.step.rounds_per_step()
            step = dataclasses.replace(self.step, step_id=1 + 2 * self.runs, first_round=self.runs * per_run)
            out = self.session.run(RecordingHybridSteps(step=step, observer=1,
                                                        plant=plant if plant in PARTY_PLANTS else None))
        self.runs += 1
        read = lambda p, start: [json.loads(x) for x in p.read_text().splitlines()[start:]]  # noqa: E731
        return {"results": out.results, "views": views, "hiding_bits": HIDING_BITS, "noise_std": 1.0,
                "e_log": read(self.e_log, log_start[0]), "k_log": read(self.k_log, log_start[1]),
                "rounds_per_step": self.step.rounds_per_step()}

    def close(self) -> None:
        self.session.close()
        self.svc.stop()


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    s = _Suite(tmp_path_factory.mktemp("wire"))
    yield s
    s.close()


@pytest.fixture(scope="module")
def hybrid_run(suite):
    return suite.run(None)


def test_both_steps_completed_and_opened_only_noised_sums(hybrid_run):
    r0, r1 = hybrid_run["results"]
    for label in ("A", "B"):
        assert r0[label]["batch_size"] == r1[label]["batch_size"] == 2 * ROWS
        assert set(r0[label]["noised_sums"]) == set(r1[label]["noised_sums"])
        for k, v in r0[label]["noised_sums"].items():
            assert torch.equal(v, r1[label]["noised_sums"][k])
        rounds = [r for r, _, _ in r1[label]["k_shares"]]
        assert len(rounds) == hybrid_run["rounds_per_step"] and len(set(rounds)) == len(rounds)


@pytest.mark.parametrize("check", sorted(CHECKS))
def test_clean_run_passes_every_check(hybrid_run, check):
    assert CHECKS[check](hybrid_run) == []


@pytest.mark.parametrize("plant", list(CAUGHT_BY))
def test_planted_leak_is_caught(suite, plant):
    record = suite.run(plant)
    found = {name: check(record) for name, check in CHECKS.items()}
    caught = sorted(name for name, violations in found.items() if violations)
    assert caught, f"plant {plant!r} was caught by no check"
    assert CAUGHT_BY[plant] in caught, (plant, found)


def test_every_plant_has_a_catching_check():
    assert set(CAUGHT_BY) == set(SERVICE_PLANTS) | set(PARTY_PLANTS)
    assert set(CAUGHT_BY.values()) <= set(CHECKS)


# ---------------------------------------------------------------- 1. what E receives

E_ALLOWED_IN = {
    # requests to E's own service: ciphertext/public-weight step chunks, refs, mask requests, fetch requests
    ("server", "ppml_hybrid.rpc.StepChunk"), ("server", "ppml_hybrid.rpc.TensorRef"),
    ("server", "ppml_hybrid.rpc.MaskRequest"), ("server", "ppml_hybrid.rpc.FetchShareRequest"),
    ("server", "ppml_hybrid.rpc.StepRef"),
    # responses E gets from K: public material and submission receipts
    ("client", "ppml_hybrid.rpc.PublicMaterialChunk"), ("client", "ppml_hybrid.rpc.SubmitReceipt"),
    ("client", "ppml_hybrid.rpc.AttestationDocument"),  # K's signed document, checked before E serves
}


def test_e_receives_no_decryption_share_or_plaintext(hybrid_run):
    received = [x for x in hybrid_run["e_log"] if x["direction"] == "in"]
    kinds = {(x["side"], x["type"]) for x in received}
    assert kinds <= E_ALLOWED_IN, kinds - E_ALLOWED_IN
    # the step really went through E: forward, backward, every round masked, every E share fetched
    methods = [x["method"].rsplit("/", 1)[1] for x in received if x["side"] == "server"]
    rounds = 2 * hybrid_run["rounds_per_step"]
    assert methods.count("MaskAndShare") == rounds
    assert methods.count("FetchMaskShare") == 2 * rounds  # each party fetched its own share once per round
    assert methods.count("ReleaseStep") == 2
    for x in received:
        if x["type"].endswith("StepChunk"):
            assert x["oneof"] in (["header"], ["ciphertext"]), x  # public header or ciphertext bytes
        if x["type"].endswith("SubmitReceipt"):
            assert set(x["fields"]) <= {"round_id", "ciphertexts"}, x  # counts, never values
        if x["type"].endswith("PublicMaterialChunk"):
            assert x["oneof"][0] in ("header", "blob"), x
    # nothing E ever receives is a share tensor or a values tensor from another role
    assert not any(t.endswith(("ShareTensor", "Int64Tensor")) for _, t in kinds)
    # and what E sent out as a client (to K): public-material requests, its attestation challenge
    # (a fresh nonce) and masked submissions only
    sent = {x["type"] for x in hybrid_run["e_log"] if x["direction"] == "out" and x["side"] == "client"}
    assert sent <= {"ppml_hybrid.rpc.PublicMaterialRequest", "ppml_hybrid.rpc.AttestRequest",
                    "ppml_hybrid.rpc.SubmitChunk"}, sent
    assert "ppml_hybrid.rpc.AttestRequest" in sent  # E checked K before serving


def test_step_header_fields_carry_only_public_data(hybrid_run):
    from ppml_hybrid.rpc import evaluator_pb2
    fields = {f.name for f in evaluator_pb2.StepHeader.DESCRIPTOR.fields}
    assert fields == {"step_id", "batch", "weights", "n_features"}  # weights are public (design section 3)
    headers = [x for x in hybrid_run["e_log"] if x["direction"] == "in" and x["type"].endswith("StepChunk")
               and x["oneof"] == ["header"]]
    assert len(headers) == 4  # forward and backward of two steps


# ---------------------------------------------------------------- 2. what K receives

K_ALLOWED_IN = {
    "/ppml_hybrid.rpc.KeyService/Attest": {"ppml_hybrid.rpc.AttestRequest"},
    "/ppml_hybrid.rpc.KeyService/GetPublicMaterial": {"ppml_hybrid.rpc.PublicMaterialRequest"},
    "/ppml_hybrid.rpc.KeyService/Announce": {"ppml_hybrid.rpc.RoundRef"},
    "/ppml_hybrid.rpc.KeyService/DecryptAndShare": {"ppml_hybrid.rpc.SubmitChunk"},
    "/ppml_hybrid.rpc.KeyService/FetchShare": {"ppml_hybrid.rpc.FetchShareRequest"},
}


def test_k_receives_only_announcements_masked_submissions_and_fetches(hybrid_run):
    log = hybrid_run["k_log"]
    assert not [x for x in log if x["side"] == "client"], "K called out to another service"
    received = [x for x in log if x["direction"] == "in"]
    for x in received:
        assert x["method"] in K_ALLOWED_IN and x["type"] in K_ALLOWED_IN[x["method"]], x
    rounds = 2 * hybrid_run["rounds_per_step"]
    submissions = [x for x in received if x["method"].endswith("DecryptAndShare")]
    # each submission stream starts with its round ref, then ciphertext bytes
    starts = [x for x in submissions if x["oneof"] == ["round"]]
    assert len(starts) == rounds
    assert all(x["oneof"] in (["round"], ["ciphertext"]) for x in submissions)
    # every ciphertext K decrypted came from E's MaskAndShare (one submission per masked round)
    e_masks = [x for x in hybrid_run["e_log"] if x["direction"] == "in" and x["method"].endswith("MaskAndShare")]
    e_submitted = [x for x in hybrid_run["e_log"]
                   if x["direction"] == "out" and x["side"] == "client" and x["type"].endswith("SubmitChunk")]
    assert len(e_masks) == rounds and len(e_submitted) == len(submissions)
    assert sum(x["method"].endswith("Announce") for x in received) == 2 * rounds  # both parties, every round
    assert sum(x["method"].endswith("FetchShare") for x in received) == 2 * rounds



def test_k_decrypts_only_freshly_masked_values(hybrid_run):
    """Every round's mask -R (rebuilt from E's shares) lies within its width 2^(V+H), K's
    plaintexts spread over that width, and the values themselves are below 2^V."""
    import numpy as np

    for label in ("A", "B"):
        bits = hybrid_run["results"][0][label]["value_bits"]
        for kind, k_plain, neg_r, v in rebuild(hybrid_run, label):
            width = 2.0 ** (bits[kind] + HIDING_BITS)
            kf, rf = k_plain / 2.0 ** 16, neg_r / 2.0 ** 16
            assert np.abs(rf).max() <= width
            assert np.abs(kf).max() <= width + 2.0 ** (bits[kind] + 1)
            if kf.size >= 16:
                assert np.abs(kf).max() > width / 16, kind
